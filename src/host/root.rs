//! Root context: one per plugin per worker. Parses the configuration, defines the metrics,
//! and hands each HTTP stream the compiled plugin.

use std::cell::Cell;
use std::rc::Rc;

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MetricType};

use super::http::Http;
use crate::config::{self, Config};
use crate::metric_names;

/// What every stream of one configuration shares.
pub struct Plugin {
    pub config: Config,
    /// Counter id per class, index-aligned with `config.classification.classes`. `None` when
    /// the host refused to define it: the request still gets classified, just not counted.
    pub requests_total: Vec<Option<u32>>,
    /// So a host without `clear_route_cache` is reported once per VM, not per request.
    pub route_cache_warned: Cell<bool>,
}

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
}

impl Context for Root {}

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
        let config = match config::parse(&bytes) {
            Ok(c) => c,
            Err(errors) => {
                for e in errors.iter() {
                    error!("invalid configuration: {e}");
                }
                return false;
            }
        };
        let requests_total = config
            .classification
            .classes
            .iter()
            .map(|class| {
                let name = metric_names::requests_total(&class.name);
                hostcalls::define_metric(MetricType::Counter, &name)
                    .map_err(|status| warn!("cannot define metric {name}: {status:?}"))
                    .ok()
            })
            .collect();
        info!(
            "configured: {} rules, classes [{}]",
            config.classification.rules.len(),
            config
                .classification
                .classes
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.plugin = Some(Rc::new(Plugin {
            config,
            requests_total,
            route_cache_warned: Cell::new(false),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(self.plugin.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
