//! A Proxy-Wasm HTTP filter that does nothing: every callback keeps the SDK's default
//! (`Continue`). Built like the real filter, so `make bench` can tell the cost of the Wasm
//! machinery (VM calls per request, context creation) from the cost of our logic.
//!
//! With the `floor` feature it is instead the floor of classification: only the host calls
//! no classifier can do without (see `floor`).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

#[cfg(feature = "floor")]
mod floor;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot::default()) });
}}

#[derive(Default)]
struct NoopRoot {
    #[cfg(feature = "floor")]
    floor: floor::Floor,
}

#[cfg(not(feature = "floor"))]
impl Context for NoopRoot {}

#[cfg(feature = "floor")]
impl Context for NoopRoot {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        self.floor.on_http_call_response();
    }
}

impl RootContext for NoopRoot {
    #[cfg(feature = "floor")]
    fn on_configure(&mut self, _size: usize) -> bool {
        self.floor = floor::Floor::configure();
        true
    }

    #[cfg(feature = "floor")]
    fn on_queue_ready(&mut self, queue_id: u32) {
        self.floor.on_queue_ready(queue_id);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        #[cfg(feature = "floor")]
        return Some(Box::new(self.floor.clone()));
        #[cfg(not(feature = "floor"))]
        Some(Box::new(Noop))
    }
}

#[cfg(not(feature = "floor"))]
struct Noop;

#[cfg(not(feature = "floor"))]
impl Context for Noop {}

#[cfg(not(feature = "floor"))]
impl HttpContext for Noop {}
