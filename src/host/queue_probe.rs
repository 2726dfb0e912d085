//! Test-only (cargo features `queue-probe` and `queue-probe-bounce`): what the shared-queue hop
//! between a stream's copy and the root context's dispatch costs. `queue-probe` counts the
//! wake-ups that dispatch (`progressive_delivery_probe_wakeups`), so wake-ups per mirrored
//! request can be read next to `progressive_delivery_mirror_total` at any load;
//! `queue-probe-bounce` sends each wake-up through the queue [`BOUNCES`] times more before it
//! dispatches, so the difference from `queue-probe` alone, divided by the hops added, is the
//! price of one hop (a single hop is lost in a shared machine's noise). The shipped module
//! is built without either, so none of this is in it.

use std::cell::Cell;

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// Extra trips through the queue per wake-up with `queue-probe-bounce`.
pub const BOUNCES: u32 = 32;

pub struct QueueProbe {
    wakeups: Option<u32>,
    /// Trips the wake-up being handled already made.
    bounced: Cell<u32>,
}

impl QueueProbe {
    pub fn new() -> Self {
        let wakeups =
            hostcalls::define_metric(MetricType::Counter, "progressive_delivery_probe_wakeups")
                .map_err(|status| warn!("queue probe: cannot define its counter: {status:?}"))
                .ok();
        QueueProbe {
            wakeups,
            bounced: Cell::new(0),
        }
    }

    /// Whether this wake-up was sent round again instead of dispatching.
    pub fn bounce(&self, queue_id: u32) -> bool {
        let bounced = self.bounced.get();
        if cfg!(feature = "queue-probe-bounce")
            && bounced < BOUNCES
            && hostcalls::enqueue_shared_queue(queue_id, Some(&[])).is_ok()
        {
            self.bounced.set(bounced.saturating_add(1));
            return true;
        }
        self.bounced.set(0);
        if let Some(id) = self.wakeups {
            if let Err(status) = hostcalls::increment_metric(id, 1) {
                warn!("queue probe: cannot count: {status:?}");
            }
        }
        false
    }
}
