//! HTTP context: one per request. Classifies on request headers, writes the class and
//! features headers, re-picks the route, counts, and sets assigned cookies on the response.
//! When the request may be mirrored, it copies the body as it streams past (never pausing
//! it), hands the copy to the mirror runtime, and reduces the primary's response to what the
//! comparison needs, again without holding it up.

use std::rc::Rc;

use log::{debug, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::mirror::{capture_buffer, Metrics};
use super::plugin::{mirror_of, Plugin};
use crate::classify::ClassId;
use crate::compare::BodyCapture;
use crate::mirror_policy::Decision;
use crate::mirror_session::{printable_path, Job};
use crate::pending::EntryId;

/// `Set-Cookie` attributes of an assigned id: a year, the whole site, sent on top-level
/// navigations. Not `Secure`, which would drop it on plain-HTTP sites; not `HttpOnly`, so the
/// application's scripts may read the id it was bucketed by.
const ASSIGNED_COOKIE_ATTRIBUTES: &str = "; Path=/; Max-Age=31536000; SameSite=Lax";

/// The primary's response headers, and its body as the comparison keeps it.
type Observed = (Vec<(String, Vec<u8>)>, BodyCapture);

/// Where this request is in mirroring.
enum MirrorStream {
    Off,
    /// Copying the request body while it streams to the primary.
    Copying(Job),
    /// Handed to the runtime; `response` is filled as the primary's response streams by.
    Submitted {
        id: EntryId,
        response: Option<Observed>,
    },
}

pub struct Http {
    plugin: Option<Rc<Plugin>>,
    set_cookies: Vec<String>,
    mirror: MirrorStream,
    response_started: bool,
}

impl Http {
    pub fn new(plugin: Option<Rc<Plugin>>) -> Self {
        Http {
            plugin,
            set_cookies: Vec::new(),
            mirror: MirrorStream::Off,
            response_started: false,
        }
    }

    /// Decides on request headers; starts copying when the request is a candidate.
    fn start_mirror(
        &mut self,
        plugin: &Plugin,
        headers: Vec<(String, Vec<u8>)>,
        class: ClassId,
        assigned: &[(String, String)],
        end_of_stream: bool,
    ) {
        let Some(runtime) = &plugin.mirror else {
            return;
        };
        let mirror = runtime.config();
        if let Err(decision) = mirror.decide(&headers, class, assigned, random_bucket) {
            runtime.with(|s| s.count(class, decision));
            return;
        }
        let classification = &plugin.config.classification;
        let class_value = classification.class(class).map(|c| c.name.as_bytes());
        let features = classification
            .class(class)
            .and_then(|c| c.features.as_deref())
            .map(str::as_bytes);
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
                .unwrap_or_default()
        };
        let method = String::from_utf8_lossy(value(":method")).into_owned();
        let path = printable_path(value(":path"));
        let copy = match mirror.copy_headers(
            headers,
            &[
                (classification.header.as_str(), class_value),
                (classification.features_header.as_str(), features),
            ],
        ) {
            Ok(copy) => copy,
            Err(decision) => {
                runtime.with(|s| s.count(class, decision));
                return;
            }
        };
        let job = Job {
            class,
            method,
            path,
            headers: copy,
            body: Vec::new(),
        };
        self.mirror = MirrorStream::Copying(job);
        if end_of_stream {
            self.submit_mirror();
        }
    }

    fn submit_mirror(&mut self) {
        let MirrorStream::Copying(job) = std::mem::replace(&mut self.mirror, MirrorStream::Off)
        else {
            return;
        };
        let Some(runtime) = mirror_of(&self.plugin) else {
            return;
        };
        if let Some(Some(id)) = runtime.with(|s| s.submit(job)) {
            self.mirror = MirrorStream::Submitted { id, response: None };
            if self.response_started {
                // The primary answered before the request was complete: its response went
                // by unobserved, so there is nothing to compare the canary's with.
                runtime.with(|s| s.primary_answered(id, None));
            }
        }
    }

    fn primary_done(&mut self, complete: bool) {
        let MirrorStream::Submitted { id, response } =
            std::mem::replace(&mut self.mirror, MirrorStream::Off)
        else {
            return;
        };
        let Some(runtime) = mirror_of(&self.plugin) else {
            return;
        };
        let response = match (complete, response) {
            (true, Some((headers, body))) => Some((headers, body.finish())),
            _ => None,
        };
        runtime.with(|s| s.primary_answered(id, response));
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return Action::Continue;
        };
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(status) => {
                warn!("cannot read request headers: {status:?}");
                return Action::Continue;
            }
        };
        #[cfg(feature = "panic-probe")]
        super::panic_probe::on_request_headers(&headers);
        let classification = &plugin.config.classification;
        let outcome = classification.classify(&headers, random_id);
        let Some(class) = classification.class(outcome.class) else {
            return Action::Continue;
        };
        debug!("class {} ({:?})", class.name, outcome.source);

        set_request_header(&classification.header, Some(class.name.as_bytes()));
        let features = class.features.as_deref().map(str::as_bytes);
        // Removing an absent header is a host call for nothing, on most requests.
        if features.is_some()
            || headers
                .iter()
                .any(|(n, _)| *n == classification.features_header)
        {
            set_request_header(&classification.features_header, features);
        }
        // Envoy picked the route before this filter ran, and does not pick it again when a
        // header changes; without this, a route on the class header would not see it
        // (docs/design.md).
        if let Err(status) = hostcalls::call_foreign_function("clear_route_cache", None) {
            if !plugin.route_cache_warned.replace(true) {
                warn!("host cannot clear the route cache ({status:?}); routes on the class header will not see it");
            }
        }
        plugin
            .requests_total
            .get(outcome.class)
            .increment(&Metrics, 1);
        self.start_mirror(
            &plugin,
            headers,
            outcome.class,
            &outcome.assigned,
            end_of_stream,
        );
        self.set_cookies = outcome
            .assigned
            .into_iter()
            .map(|(name, id)| format!("{name}={id}{ASSIGNED_COOKIE_ATTRIBUTES}"))
            .collect();
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let MirrorStream::Copying(job) = &mut self.mirror {
            let limit = mirror_of(&self.plugin).map_or(0, |m| m.config().max_body_bytes);
            if job.body.len().saturating_add(body_size) > limit {
                let class = job.class;
                self.mirror = MirrorStream::Off;
                if let Some(m) = mirror_of(&self.plugin) {
                    m.with(|s| s.count(class, Decision::BodyTooLarge));
                }
                return Action::Continue;
            }
            // With Continue, the host's request body buffer is this chunk alone.
            match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
                Ok(chunk) => job.body.extend_from_slice(&chunk.unwrap_or_default()),
                Err(status) => {
                    debug!("cannot read the request body: {status:?}; not mirrored");
                    let class = job.class;
                    self.mirror = MirrorStream::Off;
                    if let Some(m) = mirror_of(&self.plugin) {
                        m.with(|s| s.count(class, Decision::DispatchFailed));
                    }
                    return Action::Continue;
                }
            }
            if end_of_stream {
                self.submit_mirror();
            }
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the request; the copy is sent without them.
        self.submit_mirror();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.response_started = true;
        for cookie in self.set_cookies.drain(..) {
            if let Err(status) =
                hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie)
            {
                warn!("cannot add set-cookie: {status:?}");
            }
        }
        if let MirrorStream::Submitted { response, .. } = &mut self.mirror {
            let Some(m) = mirror_of(&self.plugin) else {
                return Action::Continue;
            };
            match hostcalls::get_map_bytes(MapType::HttpResponseHeaders) {
                Ok(headers) => *response = Some((headers, BodyCapture::new(&m.config().compare))),
                Err(status) => debug!("cannot read response headers: {status:?}"),
            }
            if end_of_stream {
                self.primary_done(true);
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let MirrorStream::Submitted {
            response: Some((_, capture)),
            ..
        } = &mut self.mirror
        {
            capture_buffer(capture, BufferType::HttpResponseBody, body_size);
            if end_of_stream {
                self.primary_done(true);
            }
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.primary_done(true);
        Action::Continue
    }

    fn on_log(&mut self) {
        // Still waiting here means the response never completed (reset, client gone).
        self.primary_done(false);
    }
}

fn set_request_header(name: &str, value: Option<&[u8]>) {
    if let Err(status) = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value) {
        warn!("cannot set request header {name}: {status:?}");
    }
}

/// A uniform bucket in `0..10000` for sampling requests without a sample key.
fn random_bucket() -> Option<u32> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).ok()?;
    Some(u32::from_le_bytes(bytes) % crate::bucket::BUCKETS)
}

/// 128 random bits as 32 hex digits, from WASI's `random_get` (Envoy serves it from its own
/// random source). `None` if the host has no randomness to give.
fn random_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
