//! HTTP context: one per request. Classifies on request headers, writes the class and
//! features headers, re-picks the route, counts, and sets assigned cookies on the response.

use std::rc::Rc;

use log::{debug, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use super::root::Plugin;

/// `Set-Cookie` attributes of an assigned id: a year, the whole site, sent on top-level
/// navigations. Not `Secure`, which would drop it on plain-HTTP sites; not `HttpOnly`, so the
/// application's scripts may read the id it was bucketed by.
const ASSIGNED_COOKIE_ATTRIBUTES: &str = "; Path=/; Max-Age=31536000; SameSite=Lax";

pub struct Http {
    plugin: Option<Rc<Plugin>>,
    set_cookies: Vec<String>,
}

impl Http {
    pub fn new(plugin: Option<Rc<Plugin>>) -> Self {
        Http {
            plugin,
            set_cookies: Vec::new(),
        }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
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
        let classification = &plugin.config.classification;
        let outcome = classification.classify(&headers, random_id);
        let Some(class) = classification.class(outcome.class) else {
            return Action::Continue;
        };
        debug!("class {} ({:?})", class.name, outcome.source);

        set_request_header(&classification.header, Some(class.name.as_bytes()));
        set_request_header(
            &classification.features_header,
            class.features.as_deref().map(str::as_bytes),
        );
        // Envoy picked the route before this filter ran; without this, a route that matches
        // the class header would not be taken (see shared/envoy-host-facts.md).
        if let Err(status) = hostcalls::call_foreign_function("clear_route_cache", None) {
            if !plugin.route_cache_warned.replace(true) {
                warn!("host cannot clear the route cache ({status:?}); routes on the class header will not see it");
            }
        }
        if let Some(Some(id)) = plugin.requests_total.get(outcome.class) {
            if let Err(status) = hostcalls::increment_metric(*id, 1) {
                debug!("increment_metric failed: {status:?}");
            }
        }
        self.set_cookies = outcome
            .assigned
            .into_iter()
            .map(|(name, id)| format!("{name}={id}{ASSIGNED_COOKIE_ATTRIBUTES}"))
            .collect();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for cookie in self.set_cookies.drain(..) {
            if let Err(status) =
                hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie)
            {
                warn!("cannot add set-cookie: {status:?}");
            }
        }
        Action::Continue
    }
}

fn set_request_header(name: &str, value: Option<&[u8]>) {
    if let Err(status) = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value) {
        warn!("cannot set request header {name}: {status:?}");
    }
}

/// 128 random bits as 32 hex digits, from WASI's `random_get` (Envoy serves it from its own
/// random source). `None` if the host has no randomness to give.
fn random_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
