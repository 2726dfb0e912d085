//! What every stream of one configuration shares, apart from the contexts that use it, so
//! the root and HTTP contexts both depend on it and not on each other.

use std::cell::Cell;
use std::rc::Rc;

use super::mirror::Runtime;
use crate::config::Config;
use crate::metrics::{Handle, PerClass};

pub struct Plugin {
    pub config: Config,
    /// `progressive_delivery_requests_total`, one per class of `config.classification`.
    pub requests_total: PerClass<Handle>,
    /// So a host without `clear_route_cache` is reported once per VM, not per request.
    pub route_cache_warned: Cell<bool>,
    /// `None` without a `mirror` section.
    pub mirror: Option<Runtime>,
}

/// The mirror runtime of the current configuration, if it mirrors.
pub fn mirror_of(plugin: &Option<Rc<Plugin>>) -> Option<&Runtime> {
    plugin.as_deref()?.mirror.as_ref()
}
