//! The mirror session (`crate::mirror_session`) on proxy-wasm: its host calls, and the
//! buffers it needs read.
//!
//! A callout made from a stream context loses its reply when the primary finishes first
//! (docs/design.md): Envoy ties the callout to that stream. So streams only submit, and the
//! wake-up goes through this VM's shared queue, whose `on_queue_ready` runs in the root
//! context; the root context dispatches, and its `on_http_call_response` sees every reply.

use std::cell::RefCell;
use std::time::{Duration, UNIX_EPOCH};

use log::{debug, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};

use crate::compare::BodyCapture;
use crate::metrics::{Kind, MetricHost};
use crate::mirror_policy::Mirror;
use crate::mirror_session::{Host, Learned, MirrorSession};

/// Metric calls through the host.
pub struct Metrics;

impl MetricHost for Metrics {
    fn define_metric(&self, kind: Kind, name: &str) -> Result<u32, String> {
        let kind = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(kind, name).map_err(|status| format!("{status:?}"))
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), String> {
        hostcalls::increment_metric(id, delta).map_err(|status| format!("{status:?}"))
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), String> {
        hostcalls::record_metric(id, value).map_err(|status| format!("{status:?}"))
    }
}

/// The session's host: one configuration of one worker's VM.
pub struct ProxyHost {
    queue_id: u32,
}

impl MetricHost for ProxyHost {
    fn define_metric(&self, kind: Kind, name: &str) -> Result<u32, String> {
        Metrics.define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), String> {
        Metrics.increment_metric(id, delta)
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), String> {
        Metrics.record_metric(id, value)
    }
}

impl Host for ProxyHost {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String> {
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, Vec::new(), timeout)
            .map_err(|status| format!("{status:?}"))
    }

    /// The wake-up carries nothing: the copies wait in the session, and an empty item costs
    /// the host no allocation in the VM when it is dequeued.
    fn wake(&self) -> Result<(), String> {
        hostcalls::enqueue_shared_queue(self.queue_id, Some(&[]))
            .map_err(|status| format!("{status:?}"))
    }

    fn done(&self) -> Result<(), String> {
        hostcalls::done().map_err(|status| format!("{status:?}"))
    }
}

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The mirror session of one configuration, shared by the root context and the streams.
pub struct Runtime {
    queue_id: u32,
    session: RefCell<MirrorSession<ProxyHost>>,
    #[cfg(feature = "queue-probe")]
    probe: super::queue_probe::QueueProbe,
}

impl Runtime {
    /// `previous`: what this worker learned under the configuration being replaced.
    pub fn new(
        mirror: Mirror,
        class_names: Vec<String>,
        queue_id: u32,
        previous: Option<Learned>,
    ) -> Runtime {
        let host = ProxyHost { queue_id };
        let session = MirrorSession::new(host, mirror, class_names, previous);
        Runtime {
            queue_id,
            session: RefCell::new(session),
            #[cfg(feature = "queue-probe")]
            probe: super::queue_probe::QueueProbe::new(),
        }
    }

    /// Runs `f` on the session. No callback into the plugin happens while it runs, so the
    /// session is never busy here: if it were, that bug costs the mirror, not the request.
    pub fn with<R>(&self, f: impl FnOnce(&mut MirrorSession<ProxyHost>) -> R) -> Option<R> {
        match self.session.try_borrow_mut() {
            Ok(mut s) => Some(f(&mut s)),
            Err(_) => {
                warn!("mirror state busy; mirror dropped");
                None
            }
        }
    }

    /// Root context, woken: dispatches every copy waiting.
    pub fn on_queue_ready(&self, queue_id: u32) {
        if queue_id != self.queue_id {
            return;
        }
        #[cfg(feature = "queue-probe")]
        if self.probe.bounce(queue_id) {
            return;
        }
        self.with(MirrorSession::on_queue_ready);
    }

    /// Root context: the canary's or the baseline's reply (or Envoy's stand-in for it).
    pub fn on_http_call_response(&self, token: u32, body_size: usize) {
        self.with(|s| {
            s.on_reply(
                token,
                || hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders).unwrap_or_default(),
                |capture| capture_buffer(capture, BufferType::HttpCallResponseBody, body_size),
                // A gRPC reply's status; Envoy keeps a callout's trailers for this callback.
                || match hostcalls::get_map_bytes(MapType::HttpCallResponseTrailers) {
                    Ok(trailers) => trailers,
                    Err(status) => {
                        debug!("cannot read the callout's trailers: {status:?}");
                        Vec::new()
                    }
                },
            )
        });
    }
}

/// Feeds `size` bytes of a host buffer to `capture`, copying them out of the host only when
/// the capture keeps them.
pub fn capture_buffer(capture: &mut BodyCapture, buffer: BufferType, size: usize) {
    if capture.wants(size) {
        match hostcalls::get_buffer(buffer, 0, size) {
            Ok(bytes) => return capture.push(bytes.unwrap_or_default()),
            Err(status) => debug!("cannot read {buffer:?}: {status:?}"),
        }
    }
    capture.skip(size);
}
