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

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType, MetricType};

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
        for _ in 0..self.times {
            read = self.read();
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
}
