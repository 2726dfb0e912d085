//! The mirror runtime of one worker's VM: the pending store, the callouts to the canary, the
//! comparison when both answers are in, and the mirror metrics.
//!
//! A callout made from a stream context loses its reply when the primary finishes first
//! (shared/envoy-host-facts.md). So a stream only prepares the copy and puts its id on this
//! VM's shared queue; the root context dispatches it from `on_queue_ready`, and its
//! `on_http_call_response` sees every reply, whenever it comes.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, UNIX_EPOCH};

use log::{debug, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};

use crate::classify::{Class, ClassId};
use crate::compare::{self, Answer, BodyCapture, Outcome, Verdict};
use crate::metric_names;
use crate::mirror_policy::{Decision, Mirror};
use crate::pending::{EntryId, Pending};
use crate::rate_limit::LogLimiter;

/// Mismatch lines per worker: a burst of 10, then one a second.
const LOG_BURST: u32 = 10;
const LOG_PER_SECOND: u32 = 1;
/// Longest path quoted in a log line.
const LOG_PATH_MAX: usize = 200;

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The primary's side of a pending mirror.
enum Primary {
    Waiting,
    Done {
        answer: Answer,
        duration_ms: u64,
    },
    /// The response did not complete (client gone, stream reset) or came too early to observe.
    Incomplete,
}

/// Headers and body of the copy.
type Copy = (Vec<(String, String)>, Vec<u8>);

struct Entry {
    class: ClassId,
    method: String,
    path: String,
    /// The copy, until it is dispatched.
    copy: Option<Copy>,
    /// When the request was complete: the primary's duration runs from here.
    started_ms: u64,
    /// When the copy was dispatched: the canary's duration runs from here.
    dispatched_ms: u64,
    primary: Primary,
    canary: Option<Result<Answer, Verdict>>,
}

/// What a stream hands over when its request is complete and may be mirrored.
pub struct Job {
    pub class: ClassId,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

struct State {
    pending: Pending<Entry>,
    /// What the pending gauge was last moved to, from this VM.
    reported_pending: i64,
    /// This configuration was replaced: its mirrors no longer move the gauge.
    gauge_retired: bool,
    /// Callout token to entry.
    tokens: HashMap<u32, EntryId>,
    /// Copies waiting for the root context to dispatch them, oldest first.
    undispatched: VecDeque<EntryId>,
    /// A wake-up is on the shared queue and the root context has not drained it yet: further
    /// copies only join `undispatched`. Under load one queue hop then carries many copies
    /// instead of one each, and the hop (a post to the worker's event loop and a call into
    /// the VM) was the largest cost of a mirror.
    wake_queued: bool,
    log_limiter: LogLimiter,
}

struct Metrics {
    /// `[class][decision]`, flattened.
    decisions: Vec<Option<u32>>,
    /// `[class][outcome]`, flattened.
    results: Vec<Option<u32>>,
    primary_ms: Vec<Option<u32>>,
    mirror_ms: Vec<Option<u32>>,
    /// Gauge of pending mirrors; every worker's VM moves it by its own changes, so it shows
    /// the sum over workers.
    pending: Option<u32>,
}

pub struct Runtime {
    mirror: Mirror,
    class_names: Vec<String>,
    queue_id: u32,
    /// Tells this configuration's queue items from an older one's after a reload.
    generation: u32,
    metrics: Metrics,
    state: RefCell<State>,
}

fn define(kind: MetricType, name: String) -> Option<u32> {
    hostcalls::define_metric(kind, &name)
        .map_err(|status| warn!("cannot define metric {name}: {status:?}"))
        .ok()
}

fn increment(id: Option<&Option<u32>>) {
    if let Some(Some(id)) = id {
        if let Err(status) = hostcalls::increment_metric(*id, 1) {
            debug!("increment_metric failed: {status:?}");
        }
    }
}

fn record(id: Option<&Option<u32>>, value: u64) {
    if let Some(Some(id)) = id {
        if let Err(status) = hostcalls::record_metric(*id, value) {
            debug!("record_metric failed: {status:?}");
        }
    }
}

impl Runtime {
    pub fn new(mirror: Mirror, classes: &[Class], queue_id: u32, generation: u32) -> Runtime {
        let class_names: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
        let cluster = mirror.cluster.as_str();
        let mut metrics = Metrics {
            decisions: Vec::new(),
            results: Vec::new(),
            primary_ms: Vec::new(),
            mirror_ms: Vec::new(),
            pending: define(MetricType::Gauge, metric_names::mirrors_pending(cluster)),
        };
        // Every series exists from the start at 0, so rate() and ratios work from the
        // first scrape instead of from the first event.
        for class in &class_names {
            for d in Decision::ALL {
                let name = metric_names::mirror_total(cluster, class, d.as_str());
                metrics.decisions.push(define(MetricType::Counter, name));
            }
            for o in Outcome::ALL {
                let name = metric_names::comparisons_total(cluster, class, o.as_str());
                metrics.results.push(define(MetricType::Counter, name));
            }
            let name =
                metric_names::mirror_histogram(metric_names::PRIMARY_DURATION_MS, cluster, class);
            metrics.primary_ms.push(define(MetricType::Histogram, name));
            let name =
                metric_names::mirror_histogram(metric_names::MIRROR_DURATION_MS, cluster, class);
            metrics.mirror_ms.push(define(MetricType::Histogram, name));
        }
        let state = State {
            pending: Pending::new(mirror.max_in_flight),
            reported_pending: 0,
            gauge_retired: false,
            tokens: HashMap::new(),
            undispatched: VecDeque::new(),
            wake_queued: false,
            log_limiter: LogLimiter::new(LOG_BURST, LOG_PER_SECOND),
        };
        Runtime {
            mirror,
            class_names,
            queue_id,
            generation,
            metrics,
            state: RefCell::new(state),
        }
    }

    pub fn config(&self) -> &Mirror {
        &self.mirror
    }

    /// Mirrors not concluded yet.
    pub fn pending(&self) -> usize {
        self.with_state(|s| s.pending.len()).unwrap_or_default()
    }

    /// A quarter of the timeout, within 50 ms to 1 s.
    pub fn tick_period(&self) -> Duration {
        Duration::from_millis(u64::from((self.mirror.timeout_ms >> 2).clamp(50, 1000)))
    }

    pub fn count(&self, class: ClassId, decision: Decision) {
        let i = class
            .saturating_mul(Decision::ALL.len())
            .saturating_add(decision.index());
        increment(self.metrics.decisions.get(i));
    }

    fn count_result(&self, class: ClassId, outcome: Outcome) {
        let i = class
            .saturating_mul(Outcome::ALL.len())
            .saturating_add(outcome.index());
        increment(self.metrics.results.get(i));
    }

    /// Every borrow is short and none spans a callback into the plugin, so a failure here
    /// is a bug: it costs the mirror, not the request.
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        match self.state.try_borrow_mut() {
            Ok(mut s) => Some(f(&mut s)),
            Err(_) => {
                warn!("mirror state busy; mirror dropped");
                None
            }
        }
    }

    /// Moves the pending gauge by what this VM's store changed since the last report.
    fn report_pending(&self) {
        let delta = self
            .with_state(|s| {
                if s.gauge_retired {
                    return 0;
                }
                let now = i64::try_from(s.pending.len()).unwrap_or(i64::MAX);
                let delta = now.saturating_sub(s.reported_pending);
                s.reported_pending = now;
                delta
            })
            .unwrap_or_default();
        self.move_gauge(delta);
    }

    /// Takes this configuration's share out of the pending gauge for good, when Envoy is done
    /// with it. Its mirrors may still be concluded later, but if Envoy replaced the VM too
    /// (a new module or `vm_config`), the VM goes away without running `Drop`, and a share
    /// left in the gauge would stay there for the life of the proxy.
    pub fn retire_gauge(&self) {
        let delta = self
            .with_state(|s| {
                s.gauge_retired = true;
                std::mem::take(&mut s.reported_pending).saturating_neg()
            })
            .unwrap_or_default();
        self.move_gauge(delta);
    }

    fn move_gauge(&self, delta: i64) {
        if let (Some(id), true) = (self.metrics.pending, delta != 0) {
            if let Err(status) = hostcalls::increment_metric(id, delta) {
                debug!("increment_metric failed: {status:?}");
            }
        }
    }

    /// Takes a slot for a complete request and queues its copy for the root context.
    /// Counts the decision itself when the request cannot be mirrored (`None`).
    pub fn submit(&self, job: Job) -> Option<EntryId> {
        let class = job.class;
        let submitted = self.try_submit(job);
        if let Err(decision) = submitted {
            self.count(class, decision);
            if decision == Decision::DispatchFailed {
                self.count_result(class, Outcome::MirrorError);
            }
        }
        submitted.ok()
    }

    fn try_submit(&self, job: Job) -> Result<EntryId, Decision> {
        let now = now_ms();
        let class = job.class;
        let entry = Entry {
            class,
            method: job.method,
            path: job.path,
            copy: Some((job.headers, job.body)),
            started_ms: now,
            dispatched_ms: now,
            primary: Primary::Waiting,
            canary: None,
        };
        let deadline = now.saturating_add(u64::from(self.mirror.timeout_ms));
        let (id, wake) = self
            .with_state(|s| {
                let id = s.pending.insert(entry, deadline).ok()?;
                s.undispatched.push_back(id);
                let wake = !s.wake_queued;
                s.wake_queued = true;
                Some((id, wake))
            })
            .flatten()
            .ok_or(Decision::Overloaded)?;
        if !wake {
            return Ok(id);
        }
        if let Err(status) =
            hostcalls::enqueue_shared_queue(self.queue_id, Some(&self.generation.to_le_bytes()))
        {
            warn!("cannot queue a mirror: {status:?}");
            self.with_state(|s| {
                s.wake_queued = false;
                s.undispatched.retain(|queued| *queued != id);
                s.pending.remove(id);
            });
            return Err(Decision::DispatchFailed);
        }
        Ok(id)
    }

    /// Root context: dispatches every copy waiting, whatever the wake-ups on the queue say
    /// (they only bring the root context here; one from a replaced configuration is harmless).
    pub fn on_queue_ready(&self, queue_id: u32) {
        if queue_id != self.queue_id {
            return;
        }
        loop {
            match hostcalls::dequeue_shared_queue(queue_id) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(status) => {
                    debug!("dequeue failed: {status:?}");
                    break;
                }
            }
        }
        let ready = self
            .with_state(|s| {
                s.wake_queued = false;
                std::mem::take(&mut s.undispatched)
            })
            .unwrap_or_default();
        for id in ready {
            self.dispatch(id);
        }
    }

    fn dispatch(&self, id: EntryId) {
        let Some(Some((class, (headers, body)))) = self.with_state(|s| {
            let e = s.pending.get_mut(id)?;
            Some((e.class, e.copy.take()?))
        }) else {
            return;
        };
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let result = hostcalls::dispatch_http_call(
            &self.mirror.cluster,
            header_refs,
            (!body.is_empty()).then_some(body.as_slice()),
            Vec::new(),
            Duration::from_millis(u64::from(self.mirror.timeout_ms)),
        );
        match result {
            Ok(token) => {
                self.count(class, Decision::Mirrored);
                self.with_state(|s| {
                    s.tokens.insert(token, id);
                    if let Some(e) = s.pending.get_mut(id) {
                        e.dispatched_ms = now_ms();
                    }
                });
            }
            Err(status) => {
                self.count(class, Decision::DispatchFailed);
                let detail = format!(
                    "Envoy refused the callout to cluster {:?} ({status:?}); is the cluster defined?",
                    self.mirror.cluster
                );
                self.canary_answered(id, Err(Verdict::new(Outcome::MirrorError, detail)));
            }
        }
    }

    /// Root context: the canary's reply (or Envoy's stand-in for it).
    pub fn on_http_call_response(&self, token: u32, body_size: usize) {
        let Some(Some((id, class, started))) = self.with_state(|s| {
            let id = s.tokens.remove(&token)?;
            let e = s.pending.get_mut(id)?;
            Some((id, e.class, e.dispatched_ms))
        }) else {
            return;
        };
        let headers =
            hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let elapsed_ms = now_ms().saturating_sub(started);
        let reply = match compare::canary_failure(&headers, elapsed_ms, self.mirror.timeout_ms) {
            Some(mut failure) => {
                if failure.outcome == Outcome::MirrorTimeout && !headers.is_empty() {
                    failure.detail = format!(
                        "no answer from cluster {:?} within {} ms",
                        self.mirror.cluster, self.mirror.timeout_ms
                    );
                }
                Err(failure)
            }
            None => {
                record(self.metrics.mirror_ms.get(class), elapsed_ms);
                let mut capture = BodyCapture::new(&self.mirror.compare);
                capture_buffer(&mut capture, BufferType::HttpCallResponseBody, body_size);
                Ok(Answer::from_headers(
                    &self.mirror.compare,
                    &headers,
                    capture.finish(),
                ))
            }
        };
        self.canary_answered(id, reply);
    }

    fn canary_answered(&self, id: EntryId, reply: Result<Answer, Verdict>) {
        let done = self
            .with_state(|s| {
                let e = s.pending.get_mut(id)?;
                e.canary = Some(reply);
                match e.primary {
                    Primary::Waiting => None,
                    _ => s.pending.remove(id),
                }
            })
            .flatten();
        if let Some(entry) = done {
            self.conclude(entry);
        }
    }

    /// Stream context: the primary's response is complete (`Some`) or will not be (`None`).
    pub fn primary_answered(&self, id: EntryId, answer: Option<Answer>) {
        let now = now_ms();
        let done = self
            .with_state(|s| {
                let e = s.pending.get_mut(id)?;
                if !matches!(e.primary, Primary::Waiting) {
                    return None;
                }
                e.primary = match answer {
                    Some(answer) => Primary::Done {
                        answer,
                        duration_ms: now.saturating_sub(e.started_ms),
                    },
                    None => Primary::Incomplete,
                };
                e.canary.as_ref()?;
                s.pending.remove(id)
            })
            .flatten();
        if let Some(entry) = done {
            self.conclude(entry);
        }
    }

    /// Root context, on each tick: what is still pending at its deadline is decided now.
    pub fn on_tick(&self) {
        let expired = self
            .with_state(|s| {
                let due = s.pending.expire(now_ms());
                if !due.is_empty() {
                    let gone: Vec<EntryId> = due.iter().map(|(id, _)| *id).collect();
                    s.tokens.retain(|_, id| !gone.contains(id));
                }
                due
            })
            .unwrap_or_default();
        // The gauge moves here only, once a tick, not by two metric updates per mirror: a
        // pending count is read at scrape intervals, far longer than the tick.
        self.report_pending();
        for (_, mut entry) in expired {
            if entry.canary.is_none() {
                entry.canary = Some(Err(Verdict::new(
                    Outcome::MirrorTimeout,
                    format!(
                        "no answer from cluster {:?} within {} ms",
                        self.mirror.cluster, self.mirror.timeout_ms
                    ),
                )));
            } else if matches!(entry.primary, Primary::Waiting) {
                entry.primary = Primary::Incomplete;
            }
            self.conclude(entry);
        }
    }

    fn conclude(&self, entry: Entry) {
        let verdict = match (&entry.primary, &entry.canary) {
            (_, Some(Err(failure))) => failure.clone(),
            (Primary::Done { answer, .. }, Some(Ok(canary))) => {
                compare::compare(&self.mirror.compare, answer, canary)
            }
            _ => Verdict::new(
                Outcome::Skipped,
                "the primary's response did not complete in time to compare",
            ),
        };
        if let Primary::Done { duration_ms, .. } = entry.primary {
            record(self.metrics.primary_ms.get(entry.class), duration_ms);
        }
        self.count_result(entry.class, verdict.outcome);
        let what = match verdict.outcome {
            Outcome::Match => return,
            Outcome::Skipped => {
                debug!(
                    "mirror skipped: {} {} class={}: {}",
                    entry.method,
                    entry.path,
                    self.class_name(entry.class),
                    verdict.detail
                );
                return;
            }
            Outcome::MirrorError | Outcome::MirrorTimeout => "mirror failed",
            _ => "mirror mismatch",
        };
        let Some(suppressed) = self.with_state(|s| s.log_limiter.allow(now_ms())).flatten() else {
            return;
        };
        let suppressed = if suppressed > 0 {
            format!(" ({suppressed} earlier lines suppressed)")
        } else {
            String::new()
        };
        info!(
            "{what}: {} {} class={} result={}: {}{suppressed}",
            entry.method,
            entry.path,
            self.class_name(entry.class),
            verdict.outcome.as_str(),
            verdict.detail
        );
    }

    fn class_name(&self, class: ClassId) -> &str {
        self.class_names.get(class).map_or("?", String::as_str)
    }
}

impl Drop for Runtime {
    /// A configuration dropped with its share still in the gauge (its context deleted
    /// without `on_done`) takes that share with it.
    fn drop(&mut self) {
        let reported = std::mem::take(&mut self.state.get_mut().reported_pending);
        self.move_gauge(reported.saturating_neg());
    }
}

/// Feeds `size` bytes of a host buffer to `capture`, copying them out of the host only when
/// the capture keeps them.
pub fn capture_buffer(capture: &mut BodyCapture, buffer: BufferType, size: usize) {
    if capture.wants(size) {
        match hostcalls::get_buffer(buffer, 0, size) {
            Ok(bytes) => return capture.push(&bytes.unwrap_or_default()),
            Err(status) => debug!("cannot read {buffer:?}: {status:?}"),
        }
    }
    capture.skip(size);
}

/// A path for a log line: without its query (which may carry tokens that do not belong in
/// logs), lossy UTF-8, control characters escaped, cut at 200 characters.
pub fn printable_path(path: &[u8]) -> String {
    let end = path
        .iter()
        .position(|b| matches!(b, b'?' | b'#'))
        .unwrap_or(path.len());
    let text = String::from_utf8_lossy(path.get(..end).unwrap_or_default());
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i >= LOG_PATH_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
