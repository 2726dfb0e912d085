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
use crate::mirror_session::{Request as MirrorRequest, StreamMirror};
use crate::request::Request;

/// `Set-Cookie` attributes of an assigned id: a year, the whole site, sent on top-level
/// navigations. Not `Secure`, which would drop it on plain-HTTP sites; not `HttpOnly`, so the
/// application's scripts may read the id it was bucketed by.
const ASSIGNED_COOKIE_ATTRIBUTES: &str = "; Path=/; Max-Age=31536000; SameSite=Lax";

pub struct Http {
    plugin: Option<Rc<Plugin>>,
    set_cookies: Vec<String>,
    mirror: StreamMirror,
}

impl Http {
    pub fn new(plugin: Option<Rc<Plugin>>) -> Self {
        Http {
            plugin,
            set_cookies: Vec::new(),
            mirror: StreamMirror::default(),
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
        let class_headers = plugin.config.classification.class_headers(class);
        let request = MirrorRequest {
            headers,
            class,
            assigned,
            class_headers: &class_headers,
        };
        runtime.with(|s| self.mirror.start(s, request, random_bucket, end_of_stream));
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

        // Writing what the request already carries (the class a gateway in front of a trusting
        // sidecar wrote, or no features header) is a host call for nothing; and when neither
        // header changes, the route Envoy picked still holds.
        let sent = Request::new(&headers);
        let mut changed = false;
        for (name, value) in classification.class_headers(outcome.class) {
            if !sent.has_exactly(name, value) {
                set_request_header(name, value);
                changed = true;
            }
        }
        // The host may have picked the route before this filter ran and keep it when a header
        // changes (Envoy's Wasm host picks again by itself on a write, not every host does);
        // without this, a route on the class header would not see it there (docs/design.md).
        if changed && classification.reroute {
            if let Err(status) = hostcalls::call_foreign_function("clear_route_cache", None) {
                if !plugin.route_cache_warned.replace(true) {
                    warn!("host cannot clear the route cache ({status:?}); routes on the class header will not see it");
                }
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
        if let Some(m) = mirror_of(&self.plugin) {
            // With Continue, the host's request body buffer is this chunk alone.
            let read = || {
                hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                    .map(Option::unwrap_or_default)
                    .map_err(|status| format!("{status:?}"))
            };
            m.with(|s| self.mirror.request_body(s, body_size, read, end_of_stream));
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if let Some(m) = mirror_of(&self.plugin) {
            m.with(|s| self.mirror.request_trailers(s));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        for cookie in self.set_cookies.drain(..) {
            if let Err(status) =
                hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie)
            {
                warn!("cannot add set-cookie: {status:?}");
            }
        }
        if let Some(m) = mirror_of(&self.plugin) {
            let read = || {
                hostcalls::get_map_bytes(MapType::HttpResponseHeaders)
                    .map_err(|status| format!("{status:?}"))
            };
            m.with(|s| self.mirror.response_headers(s, read, end_of_stream));
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(m) = mirror_of(&self.plugin) {
            let feed = |capture: &mut _| {
                capture_buffer(capture, BufferType::HttpResponseBody, body_size);
            };
            m.with(|s| self.mirror.response_body(s, feed, end_of_stream));
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if let Some(m) = mirror_of(&self.plugin) {
            let read = || {
                hostcalls::get_map_bytes(MapType::HttpResponseTrailers)
                    .map_err(|status| format!("{status:?}"))
            };
            m.with(|s| self.mirror.response_trailers(s, read));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(m) = mirror_of(&self.plugin) {
            m.with(|s| self.mirror.log(s));
        }
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
