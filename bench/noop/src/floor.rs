//! The floor of classification for `make bench`: per request, the host calls any classifier
//! makes and nothing else: read the request headers it needs, write one header, have Envoy
//! pick the route again, count the request. No rule is evaluated; the class is fixed. What
//! progressive-delivery costs over this is its own work, not the host's.
//!
//! The plugin configuration picks what is measured, as space-separated words: `map` reads the
//! whole header map in one call (as the filter does), `names` only the headers `make bench`'s
//! rules name, one call each; `noreroute` leaves the route cache alone, `noread`, `nowrite` and
//! `nocount` leave out the read, the write and the counter. `xN` makes every call N times per
//! request, so the cost of one call stands out of a shared machine's noise (the CPU per request
//! of two probes at `xN` that differ in one word, over N).
//!
//! `mirror` adds the floor of a mirror that compares answers, as the filter does: the request
//! headers copied out of the host, one wake-up through the worker's shared queue per burst,
//! the callout dispatched from the root context (a stream's own callout loses its reply when
//! the primary answers first), the canary's reply headers read in the root context and the
//! primary's response headers read in the stream. No comparison, no body.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType, MetricType};

/// Copies waiting for the root context, at most this many; more are dropped and counted.
const MAX_PENDING: usize = 10_000;

thread_local! {
    static PENDING: RefCell<Vec<Vec<(String, String)>>> = const { RefCell::new(Vec::new()) };
    static WAKE_QUEUED: Cell<bool> = const { Cell::new(false) };
}

/// What the rules of `make bench`'s `classify` scenario read, with the class header (spoof
/// handling) and the features header.
const NAMES: [&str; 6] = [
    "x-employee",
    "cookie",
    "user-agent",
    ":path",
    "x-user-class",
    "x-features",
];

#[derive(Clone, Default)]
pub struct Floor {
    whole_map: bool,
    read: bool,
    write: bool,
    count: bool,
    reroute: bool,
    counter: u32,
    times: usize,
    /// The mirror queue, when `mirror` is configured.
    queue: Option<u32>,
    answered: u32,
    dropped: u32,
}

impl Floor {
    pub fn configure() -> Floor {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let words: Vec<&str> = config.split_whitespace().collect();
        Floor {
            whole_map: !words.contains(&"names"),
            read: !words.contains(&"noread"),
            write: !words.contains(&"nowrite"),
            count: !words.contains(&"nocount"),
            reroute: !words.contains(&"noreroute"),
            counter: hostcalls::define_metric(MetricType::Counter, "floor_requests_total")
                .unwrap_or_default(),
            times: words
                .iter()
                .find_map(|w| w.strip_prefix('x')?.parse().ok())
                .unwrap_or(1),
            queue: words
                .contains(&"mirror")
                // One name for every worker's VM: `make bench` runs Envoy with one worker.
                .then(|| hostcalls::register_shared_queue("floor_mirror").ok())
                .flatten(),
            answered: hostcalls::define_metric(MetricType::Counter, "floor_mirrors_answered_total")
                .unwrap_or_default(),
            dropped: hostcalls::define_metric(MetricType::Counter, "floor_mirrors_dropped_total")
                .unwrap_or_default(),
        }
    }

    /// Root context: the one wake-up queued for a burst, then every copy waiting, dispatched.
    pub fn on_queue_ready(&self, queue_id: u32) {
        let _ = hostcalls::dequeue_shared_queue(queue_id);
        WAKE_QUEUED.with(|w| w.set(false));
        for headers in PENDING.with(|p| std::mem::take(&mut *p.borrow_mut())) {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let _ = hostcalls::dispatch_http_call(
                "canary",
                headers,
                None,
                Vec::new(),
                Duration::from_secs(5),
            );
        }
    }

    /// Root context: the canary's reply, its headers read as a comparison would.
    pub fn on_http_call_response(&self) {
        if hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders).is_ok_and(|h| !h.is_empty()) {
            let _ = hostcalls::increment_metric(self.answered, 1);
        }
    }

    /// Stream context: hands the request's headers to the root context.
    fn submit(&self, queue: u32, headers: Vec<(String, String)>) {
        let kept = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            (p.len() < MAX_PENDING).then(|| p.push(headers)).is_some()
        });
        if !kept {
            let _ = hostcalls::increment_metric(self.dropped, 1);
            return;
        }
        if !WAKE_QUEUED.with(|w| w.replace(true))
            && hostcalls::enqueue_shared_queue(queue, None).is_err()
        {
            WAKE_QUEUED.with(|w| w.set(false));
        }
    }

    /// Reads what the configuration says; how many headers came back.
    fn read(&self) -> usize {
        if !self.read {
            1
        } else if self.whole_map {
            hostcalls::get_map_bytes(MapType::HttpRequestHeaders).map_or(0, |h| h.len())
        } else {
            let get = |n: &&str| hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, n);
            NAMES.iter().filter_map(|n| get(n).ok().flatten()).count()
        }
    }
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let mut read = 0;
        if let Some(queue) = self.queue {
            // The copy needs every header, so this is the one read (as in the filter).
            let headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
            read = headers.len();
            self.submit(queue, headers);
        } else {
            for _ in 0..self.times {
                read = self.read();
            }
        }
        // Uses what was read, so the reads are not optimised away; `make bench`'s route needs
        // "stable".
        let class: &[u8] = if read > 0 { b"stable" } else { b"unread" };
        for _ in 0..self.times {
            if self.write {
                let header = Some(class);
                let _ = hostcalls::set_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    "x-user-class",
                    header,
                );
            }
            if self.reroute {
                let _ = hostcalls::call_foreign_function("clear_route_cache", None);
            }
            if self.count {
                let _ = hostcalls::increment_metric(self.counter, 1);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.queue.is_some() {
            // The primary's answer, read as a comparison would.
            let _ = hostcalls::get_map_bytes(MapType::HttpResponseHeaders);
        }
        Action::Continue
    }
}
