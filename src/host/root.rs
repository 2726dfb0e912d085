//! Root context: one per plugin per worker. Parses the configuration, defines the metrics,
//! and hands each HTTP stream the compiled plugin.

use std::cell::Cell;
use std::rc::Rc;

use log::{debug, error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::http::Http;
use super::mirror::{Metrics, Runtime};
use super::plugin::{mirror_of, Plugin};
use crate::config;
use crate::metrics::{Handle, PerClass, REQUESTS_TOTAL};

/// Filters log lines in the plugin at the level Envoy logs the `wasm` component, so a `debug!`
/// on the request path costs no formatting and no host call when Envoy would drop it anyway.
/// Read on each (re)configuration: the ABI has no callback for later level changes.
fn follow_host_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

#[derive(Default)]
pub struct Root {
    plugin: Option<Rc<Plugin>>,
    /// This VM's mirror queue, registered on the first configuration that mirrors.
    queue_id: Option<u32>,
}

/// Queue names are per VM id, and every worker's VM has the same one: a random part keeps
/// each worker's root context on its own queue.
fn register_queue() -> Option<u32> {
    let mut bytes = [0u8; 8];
    if let Err(e) = getrandom::fill(&mut bytes) {
        error!("no randomness for the mirror queue name: {e}");
        return None;
    }
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("progressive-delivery.mirror.{suffix}");
    hostcalls::register_shared_queue(&name)
        .map_err(|status| error!("cannot register the mirror queue {name}: {status:?}"))
        .ok()
}

impl Context for Root {
    /// Envoy asks when it drops this configuration: after an ECDS push (Istio: a WasmPlugin
    /// change), once the last stream of the old configuration has ended. Answering `true`
    /// would delete this context and cancel its callouts, losing the results of the mirrors
    /// still pending, and those are the canary's slowest answers, the ones a rollout most
    /// needs counted. So it waits until they are concluded, `timeout_ms` at the latest. Only
    /// the VM's lifetime bounds that: a push that changes the module or `vm_config` makes
    /// Envoy drop the old VM, pending mirrors and all (e2e/test_reload.py).
    fn on_done(&mut self) -> bool {
        mirror_of(&self.plugin)
            .and_then(|m| m.with(|s| s.on_done()))
            .unwrap_or(true)
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(m) = mirror_of(&self.plugin) {
            m.on_http_call_response(token_id, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        follow_host_log_level();
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(b) => b.unwrap_or_default(),
            Err(status) => {
                error!("cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let mut config = match config::parse(&bytes) {
            Ok(c) => c,
            Err(errors) => {
                for e in errors.iter() {
                    error!("invalid configuration: {e}");
                }
                return false;
            }
        };
        let requests_total = PerClass::define(
            config
                .classification
                .classes
                .iter()
                .map(|c| c.name.as_str()),
            |class| Handle::define(&Metrics, &REQUESTS_TOTAL, [class]),
        );
        // The runtime owns the mirror settings from here on.
        let mirror_config = config.mirror.take();
        let summary = mirror_config.as_ref().map_or(String::new(), |m| {
            let baseline = m.baseline.as_ref().map_or(String::new(), |b| {
                format!(
                    ", baseline cluster {:?} ({}% of mirrored requests)",
                    b.cluster,
                    f64::from(b.basis_points) / 100.0
                )
            });
            format!(
                ", mirroring to cluster {:?} ({}% of eligible requests){baseline}",
                m.cluster,
                f64::from(m.basis_points) / 100.0
            )
        });
        let mirror = match mirror_config {
            None => None,
            Some(m) => {
                if self.queue_id.is_none() {
                    self.queue_id = register_queue();
                }
                let Some(queue_id) = self.queue_id else {
                    error!("invalid configuration: mirror: cannot work without a shared queue");
                    return false;
                };
                let class_names = config
                    .classification
                    .classes
                    .iter()
                    .map(|c| c.name.clone())
                    .collect();
                // The noise this worker learned is kept if the new configuration compares alike.
                let previous = mirror_of(&self.plugin)
                    .and_then(|old| old.with(|s| s.learned()))
                    .flatten();
                let runtime = Runtime::new(m, class_names, queue_id, previous);
                let tick_period = runtime.with(|s| s.tick_period()).unwrap_or_default();
                if let Err(status) = hostcalls::set_tick_period(tick_period) {
                    warn!("cannot set the tick period ({status:?}); late mirrors wait for Envoy's timeout");
                }
                Some(runtime)
            }
        };
        info!(
            "configured: {} rules, classes [{}]{}",
            config.classification.rules.len(),
            config
                .classification
                .classes
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            summary
        );
        self.plugin = Some(Rc::new(Plugin {
            config,
            requests_total,
            route_cache_warned: Cell::new(false),
            mirror,
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(self.plugin.clone())))
    }

    /// Envoy calls this once per item enqueued, so one dequeue per call keeps the queue
    /// empty, whatever configuration (one that mirrors or not) is current by then; a loop
    /// until empty would cost a host call more per wake-up.
    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Err(status) = hostcalls::dequeue_shared_queue(queue_id) {
            debug!("dequeue failed: {status:?}");
        }
        if let Some(m) = mirror_of(&self.plugin) {
            m.on_queue_ready(queue_id);
        }
    }

    fn on_tick(&mut self) {
        if let Some(m) = mirror_of(&self.plugin) {
            m.with(|s| s.on_tick());
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
