//! One worker's mirror session: the pending store, the callouts to the canary (and to the
//! baseline), the comparison when every answer is in, and the mirror metrics.
//!
//! A callout made from a stream context loses its reply when the primary finishes first, so
//! a stream only hands its copy over ([`MirrorSession::submit`]); the host wakes the root
//! context, which dispatches every waiting copy ([`MirrorSession::on_queue_ready`]) and sees
//! every reply, whenever it comes. Any answer may come first, or never: each mirror is
//! concluded by whichever of its answers, the tick past its deadline, or a failed dispatch
//! settles it last, and counted exactly once.
//!
//! With `mirror.baseline`, a sampled mirror's copy also goes to the baseline (another
//! deployment of the primary's version), dispatched with the canary's, in the same pending
//! entry and under the same deadline. Where primary and baseline differ is noise
//! (src/noise.rs, learned per endpoint); the canary is judged on how it differs from the
//! baseline, that noise set aside.
//!
//! A gRPC call is mirrored like any request once its method is declared, with two more
//! things to watch: the request must be one message (a unary or server-streaming call; the
//! stream follows its framing and counts a client stream `not_idempotent`), and each answer's
//! status is in its trailers, which the host reads for both sides.
//!
//! Everything the host does goes through [`Host`], so every ordering is tested here with a
//! fake host; the host adapter reads the host's buffers and passes plain values in.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use log::{debug, info, warn};

use crate::classify::ClassId;
use crate::compare::{self, Answer, Body, BodyCapture, Differences, Outcome, Verdict};
use crate::endpoint::{self, EndpointTable};
use crate::grpc::{RequestFraming, RequestShape};
use crate::label::label_enum;
use crate::metrics::{
    Handle, MetricHost, PerClass, PerValue, BASELINE_DURATION_MS, BASELINE_TOTAL,
    COMPARISONS_TOTAL, DIFFERENCES_TOTAL, MIRRORS_PENDING, MIRROR_DURATION_MS, MIRROR_TOTAL,
    PRIMARY_DURATION_MS,
};
use crate::mirror_policy::{Decision, Mirror};
use crate::noise::{Change, Judgement, NoiseLearner};
use crate::pending::{EntryId, Pending};
use crate::rate_limit::{LogLimiter, TokenBucket};

/// Mismatch lines per worker: a burst of 10, then one a second.
const LOG_BURST: u32 = 10;
const LOG_PER_SECOND: u32 = 1;
/// Longest path quoted in a log line.
const LOG_PATH_MAX: usize = 200;
/// Endpoints with a label of their own per worker (configured templates come on top).
pub const MAX_ENDPOINTS: usize = 100;
/// `progressive_delivery_differences_total` series per worker; past it, differences count
/// under `endpoint="other", element="other"`. Each series is an Envoy stat for the life of
/// the proxy, so a body with ever-new keys must not mint one per key.
pub const MAX_DIFFERENCE_SERIES: usize = 200;

/// What the session needs from the host besides its metrics. Errors are the host's status,
/// for the log.
pub trait Host: MetricHost {
    /// Wall-clock milliseconds.
    fn now_ms(&self) -> u64;
    /// Sends a copy to `cluster`; the token names its reply.
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String>;
    /// Has the root context called back ([`MirrorSession::on_queue_ready`]).
    fn wake(&self) -> Result<(), String>;
    /// Tells the host that a configuration it retired is finished with (`proxy_done`).
    fn done(&self) -> Result<(), String>;
}

label_enum! {
    /// The `result` label of `progressive_delivery_baseline_total`: what became of a mirrored
    /// request's copy to the baseline.
    pub enum BaselineResult {
        Answered = "answered",
        /// Not among the `baseline.percent` of mirrored requests.
        NotSampled = "not_sampled",
        DispatchFailed = "dispatch_failed",
        MirrorError = "mirror_error",
        MirrorTimeout = "mirror_timeout",
    }
}

label_enum! {
    /// The `kind` label of `progressive_delivery_differences_total`.
    pub enum DiffKind {
        Mismatch = "mismatch",
        /// The element differs between primary and baseline too.
        Noise = "noise",
    }
}

/// Response headers or trailers as the host gives them.
pub type Headers = Vec<(String, Vec<u8>)>;

/// The primary's response headers, trailers (read for gRPC only), and its body as the
/// comparison keeps it.
pub type PrimaryResponse = (Headers, Headers, Body);

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

/// The baseline's side of a pending mirror.
enum BaselineSide {
    /// No baseline, or this mirror was not sampled for it.
    Off,
    /// Sampled: its copy goes (or went) out with the canary's.
    Waiting,
    Answered(Answer),
    Failed(Verdict),
}

/// Whose reply a callout token brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Canary,
    Baseline,
}

/// Headers and body of the copy.
type Copy = (Vec<(String, String)>, Vec<u8>);

struct Entry {
    class: ClassId,
    method: String,
    path: String,
    /// A gRPC call: answers are compared on their `grpc-status` too.
    grpc: bool,
    /// Its label in `differences_total` and the key of its noise.
    endpoint: String,
    /// The copy, until it is dispatched.
    copy: Option<Copy>,
    /// When the request was complete: the primary's duration runs from here.
    started_ms: u64,
    /// When the copies were dispatched: the canary's and baseline's durations run from here.
    dispatched_ms: u64,
    primary: Primary,
    canary: Option<Result<Answer, Verdict>>,
    baseline: BaselineSide,
}

impl Entry {
    fn complete(&self) -> bool {
        !matches!(self.primary, Primary::Waiting)
            && self.canary.is_some()
            && !matches!(self.baseline, BaselineSide::Waiting)
    }
}

/// What a stream hands over when its request is complete and may be mirrored.
#[derive(Debug, Clone)]
pub struct Job {
    pub class: ClassId,
    pub method: String,
    /// As [`printable_path`] made it.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A gRPC call.
    pub grpc: bool,
}

struct Metrics {
    decisions: PerClass<PerValue<Decision>>,
    results: PerClass<PerValue<Outcome>>,
    primary_ms: PerClass<Handle>,
    mirror_ms: PerClass<Handle>,
    pending: Handle,
    /// Empty without a baseline.
    baseline: PerClass<PerValue<BaselineResult>>,
    baseline_ms: PerClass<Handle>,
    /// By stat name, defined as differences come: up to [`MAX_DIFFERENCE_SERIES`] and the
    /// two `other` series. Looked up linearly: a few hundred names, searched only for the
    /// elements of a comparison that differed, cost less than a map's code in the module.
    differences: Vec<(String, Handle)>,
    /// Series in `differences` other than the `other` ones.
    difference_series: usize,
}

/// A cap overflows: each is reported once per worker.
#[derive(Default)]
struct Warned {
    endpoints: bool,
    series: bool,
    noise: bool,
}

/// What a worker learns that outlives one configuration: handed from the session of the
/// configuration replaced to the next one ([`MirrorSession::learned`]).
#[derive(Debug, Clone)]
pub struct Learned {
    pub noise: NoiseLearner,
}

pub struct MirrorSession<H: Host> {
    host: H,
    mirror: Mirror,
    class_names: Vec<String>,
    metrics: Metrics,
    pending: Pending<Entry>,
    /// What the pending gauge was last moved to, from this VM.
    reported_pending: i64,
    /// This configuration was replaced: its mirrors no longer move the gauge.
    gauge_retired: bool,
    /// The host is done with this configuration but mirrors were still pending: it waits
    /// until they are concluded.
    draining: bool,
    /// Callout token to entry and whose reply it brings.
    tokens: HashMap<u32, (EntryId, Target)>,
    /// Copies waiting for the root context to dispatch them, oldest first.
    undispatched: VecDeque<EntryId>,
    /// A wake-up is on its way and the root context has not been called yet: further copies
    /// only join `undispatched`. Under load one wake-up then carries many copies instead of
    /// one each, and the hop (a post to the worker's event loop and a call into the VM) was
    /// the largest cost of a mirror.
    wake_queued: bool,
    log_limiter: LogLimiter,
    /// `mirror.max_per_second`; `None` without a limit.
    rate: Option<TokenBucket>,
    endpoints: EndpointTable,
    /// With a baseline only.
    noise: Option<NoiseLearner>,
    /// `baseline.percent` as a running credit in basis points: every mirror adds the
    /// percentage, and one whole request's worth (10000) sends a copy to the baseline. The
    /// share is exact over any run of requests and needs no randomness.
    baseline_credit: u32,
    warned: Warned,
}

impl<H: Host> MirrorSession<H> {
    /// Defines every mirror metric at 0 for every class, so rate() and ratios work from the
    /// first scrape instead of from the first event. `previous` is what the worker learned
    /// under the configuration this one replaces: its noise is kept if the comparison and
    /// noise settings are unchanged.
    pub fn new(
        host: H,
        mirror: Mirror,
        class_names: Vec<String>,
        previous: Option<Learned>,
    ) -> Self {
        let cluster = mirror.cluster.as_str();
        let names = || class_names.iter().map(String::as_str);
        // The baseline's series exist only with a baseline.
        let with_baseline = || names().filter(|_| mirror.baseline.is_some());
        let metrics = Metrics {
            decisions: PerClass::define(names(), |class| {
                PerValue::define(&host, &MIRROR_TOTAL, |d: Decision| {
                    [cluster, class, d.as_str()]
                })
            }),
            results: PerClass::define(names(), |class| {
                PerValue::define(&host, &COMPARISONS_TOTAL, |o: Outcome| {
                    [cluster, class, o.as_str()]
                })
            }),
            primary_ms: PerClass::define(names(), |class| {
                Handle::define(&host, &PRIMARY_DURATION_MS, [cluster, class])
            }),
            mirror_ms: PerClass::define(names(), |class| {
                Handle::define(&host, &MIRROR_DURATION_MS, [cluster, class])
            }),
            pending: Handle::define(&host, &MIRRORS_PENDING, [cluster]),
            baseline: PerClass::define(with_baseline(), |class| {
                PerValue::define(&host, &BASELINE_TOTAL, |r: BaselineResult| {
                    [cluster, class, r.as_str()]
                })
            }),
            baseline_ms: PerClass::define(with_baseline(), |class| {
                Handle::define(&host, &BASELINE_DURATION_MS, [cluster, class])
            }),
            differences: Vec::new(),
            difference_series: 0,
        };
        let noise = mirror.baseline.as_ref().map(|b| {
            let fingerprint = mirror.compare.fingerprint();
            match previous {
                Some(Learned { noise }) => {
                    let (learner, kept) = noise.reconfigured(b.noise.clone(), fingerprint);
                    if kept {
                        info!("noise learned so far kept: the comparison settings are unchanged");
                    } else {
                        info!("noise learned so far dropped: the comparison or noise settings changed");
                    }
                    learner
                }
                None => NoiseLearner::new(b.noise.clone(), fingerprint),
            }
        });
        MirrorSession {
            host,
            pending: Pending::new(mirror.max_in_flight),
            rate: (mirror.max_per_second > 0)
                .then(|| TokenBucket::new(mirror.max_per_second, mirror.max_per_second)),
            endpoints: EndpointTable::new(mirror.compare.endpoints.clone(), MAX_ENDPOINTS),
            noise,
            mirror,
            class_names,
            metrics,
            reported_pending: 0,
            gauge_retired: false,
            draining: false,
            tokens: HashMap::new(),
            undispatched: VecDeque::new(),
            wake_queued: false,
            log_limiter: LogLimiter::new(LOG_BURST, LOG_PER_SECOND),
            baseline_credit: 0,
            warned: Warned::default(),
        }
    }

    pub fn config(&self) -> &Mirror {
        &self.mirror
    }

    /// What this worker learned, for the session of the next configuration.
    pub fn learned(&self) -> Option<Learned> {
        self.noise.clone().map(|noise| Learned { noise })
    }

    /// Mirrors not concluded yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A quarter of the timeout, within 50 ms to 1 s.
    pub fn tick_period(&self) -> Duration {
        Duration::from_millis(u64::from((self.mirror.timeout_ms >> 2).clamp(50, 1000)))
    }

    pub fn count(&self, class: ClassId, decision: Decision) {
        self.metrics
            .decisions
            .get(class, decision)
            .increment(&self.host, 1);
    }

    fn count_result(&self, class: ClassId, outcome: Outcome) {
        self.metrics
            .results
            .get(class, outcome)
            .increment(&self.host, 1);
    }

    fn count_baseline(&self, class: ClassId, result: BaselineResult) {
        self.metrics
            .baseline
            .get(class, result)
            .increment(&self.host, 1);
    }

    /// A request that would be mirrored takes a token of `mirror.max_per_second`; `false`:
    /// none left this second.
    pub fn admit(&mut self) -> bool {
        let now = self.host.now_ms();
        self.rate.as_mut().is_none_or(|bucket| bucket.take(now))
    }

    /// Moves the pending gauge by what this VM's store changed since the last report.
    fn report_pending(&mut self) {
        if self.gauge_retired {
            return;
        }
        let now = i64::try_from(self.pending.len()).unwrap_or(i64::MAX);
        let delta = now.saturating_sub(self.reported_pending);
        self.reported_pending = now;
        self.move_gauge(delta);
    }

    /// Takes this configuration's share out of the pending gauge for good, when the host is
    /// done with it. Its mirrors may still be concluded later, but if Envoy replaced the VM
    /// too (a new module or `vm_config`), the VM goes away without running `Drop`, and a
    /// share left in the gauge would stay there for the life of the proxy.
    fn retire_gauge(&mut self) {
        self.gauge_retired = true;
        let delta = std::mem::take(&mut self.reported_pending).saturating_neg();
        self.move_gauge(delta);
    }

    fn move_gauge(&self, delta: i64) {
        if delta != 0 {
            self.metrics.pending.increment(&self.host, delta);
        }
    }

    /// The host is done with this configuration (a new one was pushed, or it is stopping).
    /// `true`: finished now. `false`: mirrors are pending; the tick that concludes the last
    /// of them tells the host ([`Host::done`]).
    pub fn on_done(&mut self) -> bool {
        self.retire_gauge();
        let pending = self.pending.len();
        if pending == 0 {
            return true;
        }
        info!("configuration retired (replaced, or Envoy stopping) with {pending} mirrors pending; kept until they are concluded");
        self.draining = true;
        false
    }

    /// Takes a slot for a complete request and queues its copy for the root context.
    /// Counts the decision itself when the request cannot be mirrored (`None`).
    pub fn submit(&mut self, job: Job) -> Option<EntryId> {
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

    fn try_submit(&mut self, job: Job) -> Result<EntryId, Decision> {
        // Before the endpoint is attributed and the baseline sampled: a request shed here
        // must not take a place in the endpoint table or the baseline's share.
        if self.pending.len() >= self.mirror.max_in_flight {
            return Err(Decision::Overloaded);
        }
        let now = self.host.now_ms();
        let endpoint = self.endpoint_of(&job.headers, job.grpc);
        let baseline = if self.baseline_sampled() {
            BaselineSide::Waiting
        } else {
            BaselineSide::Off
        };
        let entry = Entry {
            class: job.class,
            method: job.method,
            path: job.path,
            grpc: job.grpc,
            endpoint,
            copy: Some((job.headers, job.body)),
            started_ms: now,
            dispatched_ms: now,
            primary: Primary::Waiting,
            canary: None,
            baseline,
        };
        let deadline = now.saturating_add(u64::from(self.mirror.timeout_ms));
        let id = self
            .pending
            .insert(entry, deadline)
            .map_err(|_| Decision::Overloaded)?;
        self.undispatched.push_back(id);
        if self.wake_queued {
            return Ok(id);
        }
        self.wake_queued = true;
        if let Err(e) = self.host.wake() {
            warn!("cannot queue a mirror: {e}");
            self.wake_queued = false;
            self.undispatched.retain(|queued| *queued != id);
            self.pending.remove(id);
            return Err(Decision::DispatchFailed);
        }
        Ok(id)
    }

    /// The endpoint label of a copy, from its `:method` and `:path`; a gRPC call's is its
    /// method's full name.
    fn endpoint_of(&mut self, headers: &[(String, String)], grpc: bool) -> String {
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map_or(&[][..], |(_, v)| v.as_bytes())
        };
        let got = if grpc {
            self.endpoints.attribute_grpc(value(":path"))
        } else {
            self.endpoints.attribute(value(":method"), value(":path"))
        };
        let label = got.label.to_string();
        if got.first_overflow && !self.warned.endpoints {
            self.warned.endpoints = true;
            warn!("more than {MAX_ENDPOINTS} endpoints on this worker: further ones are counted as endpoint=\"other\" (name them in mirror.compare.endpoints)");
        }
        label
    }

    /// Whether this mirror's copy also goes to the baseline.
    fn baseline_sampled(&mut self) -> bool {
        let Some(baseline) = &self.mirror.baseline else {
            return false;
        };
        let credit = self.baseline_credit.saturating_add(baseline.basis_points);
        if credit >= crate::bucket::BUCKETS {
            self.baseline_credit = credit.saturating_sub(crate::bucket::BUCKETS);
            true
        } else {
            self.baseline_credit = credit;
            false
        }
    }

    /// Root context, woken: dispatches every copy waiting.
    pub fn on_queue_ready(&mut self) {
        self.wake_queued = false;
        for id in std::mem::take(&mut self.undispatched) {
            self.dispatch(id);
        }
    }

    fn dispatch(&mut self, id: EntryId) {
        let Some(entry) = self.pending.get_mut(id) else {
            return;
        };
        let class = entry.class;
        let sampled = matches!(entry.baseline, BaselineSide::Waiting);
        let Some((headers, body)) = entry.copy.take() else {
            return;
        };
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let body = (!body.is_empty()).then_some(body.as_slice());
        let timeout = Duration::from_millis(u64::from(self.mirror.timeout_ms));
        match self
            .host
            .dispatch(&self.mirror.cluster, &header_refs, body, timeout)
        {
            Ok(token) => {
                self.count(class, Decision::Mirrored);
                self.tokens.insert(token, (id, Target::Canary));
            }
            Err(e) => {
                self.count(class, Decision::DispatchFailed);
                let detail = format!(
                    "Envoy refused the callout to cluster {:?} ({e}); is the cluster defined?",
                    self.mirror.cluster
                );
                // No canary answer to judge: the baseline's copy is not sent.
                if let Some(entry) = self.pending.get_mut(id) {
                    entry.baseline = BaselineSide::Off;
                }
                self.canary_answered(id, Err(Verdict::new(Outcome::MirrorError, detail)));
                return;
            }
        }
        if let Some(baseline) = &self.mirror.baseline {
            if !sampled {
                self.count_baseline(class, BaselineResult::NotSampled);
            } else {
                match self
                    .host
                    .dispatch(&baseline.cluster, &header_refs, body, timeout)
                {
                    Ok(token) => {
                        self.tokens.insert(token, (id, Target::Baseline));
                    }
                    Err(e) => {
                        self.count_baseline(class, BaselineResult::DispatchFailed);
                        let detail = format!(
                            "Envoy refused the callout to cluster {:?} ({e}); is the cluster defined?",
                            baseline.cluster
                        );
                        self.baseline_answered(id, Err(Verdict::new(Outcome::MirrorError, detail)));
                    }
                }
            }
        }
        let now = self.host.now_ms();
        if let Some(e) = self.pending.get_mut(id) {
            e.dispatched_ms = now;
        }
    }

    /// Root context: the reply to callout `token` (the canary's or the baseline's), or the
    /// host's stand-in for it. `headers`, `body` and `trailers` read them from the host, and
    /// are called only when the reply is still awaited and, for the body and trailers, the
    /// upstream did answer; the trailers only for a gRPC call.
    pub fn on_reply(
        &mut self,
        token: u32,
        headers: impl FnOnce() -> Headers,
        body: impl FnOnce(&mut BodyCapture),
        trailers: impl FnOnce() -> Headers,
    ) {
        let Some((id, target)) = self.tokens.remove(&token) else {
            return;
        };
        let Some(entry) = self.pending.get_mut(id) else {
            return;
        };
        let (class, started, grpc) = (entry.class, entry.dispatched_ms, entry.grpc);
        let headers = headers();
        let elapsed_ms = self.host.now_ms().saturating_sub(started);
        let side = match target {
            Target::Canary => "canary",
            Target::Baseline => "baseline",
        };
        let failure = compare::callout_failure(side, &headers, elapsed_ms, self.mirror.timeout_ms);
        let reply = match failure {
            Some(mut failure) => {
                if failure.outcome == Outcome::MirrorTimeout && !headers.is_empty() {
                    failure.detail = self.timeout_detail(target);
                }
                Err(failure)
            }
            None => {
                let durations = match target {
                    Target::Canary => &self.metrics.mirror_ms,
                    Target::Baseline => &self.metrics.baseline_ms,
                };
                durations.get(class).record(&self.host, elapsed_ms);
                let spec = &self.mirror.compare;
                let mut capture = BodyCapture::for_headers(spec, &headers);
                body(&mut capture);
                Ok(if grpc {
                    Answer::from_grpc(spec, &headers, &trailers(), capture.finish())
                } else {
                    Answer::from_headers(spec, &headers, capture.finish())
                })
            }
        };
        match target {
            Target::Canary => self.canary_answered(id, reply),
            Target::Baseline => {
                let result = match &reply {
                    Ok(_) => BaselineResult::Answered,
                    Err(v) if v.outcome == Outcome::MirrorTimeout => BaselineResult::MirrorTimeout,
                    Err(_) => BaselineResult::MirrorError,
                };
                self.count_baseline(class, result);
                self.baseline_answered(id, reply);
            }
        }
    }

    fn timeout_detail(&self, target: Target) -> String {
        let cluster = match (target, &self.mirror.baseline) {
            (Target::Baseline, Some(b)) => b.cluster.as_str(),
            _ => self.mirror.cluster.as_str(),
        };
        format!(
            "no answer from cluster {cluster:?} within {} ms",
            self.mirror.timeout_ms
        )
    }

    fn canary_answered(&mut self, id: EntryId, reply: Result<Answer, Verdict>) {
        if let Some(entry) = self.pending.get_mut(id) {
            entry.canary = Some(reply);
        }
        self.conclude_if_complete(id);
    }

    fn baseline_answered(&mut self, id: EntryId, reply: Result<Answer, Verdict>) {
        if let Some(entry) = self.pending.get_mut(id) {
            entry.baseline = match reply {
                Ok(answer) => BaselineSide::Answered(answer),
                Err(failure) => BaselineSide::Failed(failure),
            };
        }
        self.conclude_if_complete(id);
    }

    fn conclude_if_complete(&mut self, id: EntryId) {
        if !self.pending.get_mut(id).is_some_and(|e| e.complete()) {
            return;
        }
        if let Some(entry) = self.pending.remove(id) {
            self.conclude(entry);
        }
    }

    /// Stream context: the primary's response is complete (`Some`) or will not be (`None`).
    pub fn primary_answered(&mut self, id: EntryId, response: Option<PrimaryResponse>) {
        let now = self.host.now_ms();
        let spec = &self.mirror.compare;
        let Some(entry) = self.pending.get_mut(id) else {
            return;
        };
        if !matches!(entry.primary, Primary::Waiting) {
            return;
        }
        entry.primary = match response {
            Some((headers, trailers, body)) => Primary::Done {
                answer: if entry.grpc {
                    Answer::from_grpc(spec, &headers, &trailers, body)
                } else {
                    Answer::from_headers(spec, &headers, body)
                },
                duration_ms: now.saturating_sub(entry.started_ms),
            },
            None => Primary::Incomplete,
        };
        self.conclude_if_complete(id);
    }

    /// Root context, on each tick: what is still pending at its deadline is decided now, and
    /// a retired configuration whose last mirror is concluded is finished.
    pub fn on_tick(&mut self) {
        let due = self.pending.expire(self.host.now_ms());
        if !due.is_empty() {
            let gone: Vec<EntryId> = due.iter().map(|(id, _)| *id).collect();
            self.tokens.retain(|_, (id, _)| !gone.contains(id));
        }
        // The gauge moves here only, once a tick, not by two metric updates per mirror: a
        // pending count is read at scrape intervals, far longer than the tick.
        self.report_pending();
        for (_, mut entry) in due {
            let dispatched = entry.copy.is_none();
            if entry.canary.is_none() {
                entry.canary = Some(Err(Verdict::new(
                    Outcome::MirrorTimeout,
                    self.timeout_detail(Target::Canary),
                )));
            }
            if matches!(entry.primary, Primary::Waiting) {
                entry.primary = Primary::Incomplete;
            }
            if matches!(entry.baseline, BaselineSide::Waiting) {
                if dispatched {
                    self.count_baseline(entry.class, BaselineResult::MirrorTimeout);
                }
                entry.baseline = BaselineSide::Failed(Verdict::new(
                    Outcome::MirrorTimeout,
                    self.timeout_detail(Target::Baseline),
                ));
            }
            self.conclude(entry);
        }
        // Only from the tick: Envoy accepts `done` only from a context whose `on_done` said
        // to wait (and the SDK panics on its refusal), and a tick runs with no other context
        // made current.
        if self.draining && self.pending.is_empty() {
            self.draining = false;
            match self.host.done() {
                Ok(()) => debug!("replaced configuration done: its mirrors are concluded"),
                Err(e) => warn!("cannot finish the replaced configuration: {e}"),
            }
        }
    }

    fn conclude(&mut self, entry: Entry) {
        if let Primary::Done { duration_ms, .. } = entry.primary {
            self.metrics
                .primary_ms
                .get(entry.class)
                .record(&self.host, duration_ms);
        }
        let (verdict, element) = self.verdict(&entry);
        self.count_result(entry.class, verdict.outcome);
        let what = match verdict.outcome {
            Outcome::Match | Outcome::Noise => return,
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
        let Some(suppressed) = self.log_limiter.allow(self.host.now_ms()) else {
            return;
        };
        let suppressed = if suppressed > 0 {
            format!(" ({suppressed} earlier lines suppressed)")
        } else {
            String::new()
        };
        let attribution = match element {
            Some(element) => format!(" endpoint={} element={element}", entry.endpoint),
            None => String::new(),
        };
        info!(
            "{what}: {} {} class={}{attribution} result={}: {}{suppressed}",
            entry.method,
            entry.path,
            self.class_name(entry.class),
            verdict.outcome.as_str(),
            verdict.detail
        );
    }

    /// The verdict on a complete entry, and the element it names when it is a mismatch.
    fn verdict(&mut self, entry: &Entry) -> (Verdict, Option<String>) {
        let canary = match &entry.canary {
            Some(Ok(canary)) => canary,
            Some(Err(failure)) => return (failure.clone(), None),
            None => {
                return (
                    Verdict::new(Outcome::MirrorTimeout, self.timeout_detail(Target::Canary)),
                    None,
                )
            }
        };
        let Primary::Done {
            answer: primary, ..
        } = &entry.primary
        else {
            return (
                Verdict::new(
                    Outcome::Skipped,
                    "the primary's response did not complete in time to compare",
                ),
                None,
            );
        };
        let spec = &self.mirror.compare;
        let baseline = match &entry.baseline {
            BaselineSide::Off => {
                let found = compare::differences(spec, primary, canary);
                for d in &found.list {
                    self.count_difference(&entry.endpoint, &d.element, DiffKind::Mismatch);
                }
                let element = found.list.first().map(|d| d.element.clone());
                return (found.verdict(), element);
            }
            BaselineSide::Failed(failure) => {
                return (
                    Verdict::new(Outcome::Skipped, format!("baseline: {}", failure.detail)),
                    None,
                )
            }
            BaselineSide::Waiting => {
                return (
                    Verdict::new(Outcome::Skipped, "baseline: no answer yet"),
                    None,
                )
            }
            BaselineSide::Answered(baseline) => baseline,
        };
        let observed = compare::differences(spec, primary, baseline);
        let judged = compare::differences(spec, baseline, canary);
        self.three_way(&entry.endpoint, &observed, &judged)
    }

    /// Learns from how primary and baseline differ, then judges how the canary differs from
    /// the baseline.
    fn three_way(
        &mut self,
        endpoint: &str,
        observed: &Differences,
        judged: &Differences,
    ) -> (Verdict, Option<String>) {
        let Some(learner) = self.noise.as_mut() else {
            return (judged.verdict(), None);
        };
        let shed_before = learner.shed();
        for t in learner.observe(endpoint, &observed.elements()) {
            let change = match t.change {
                Change::Learned => "learned",
                Change::Forgotten => "forgotten",
            };
            info!("noise {change}: endpoint={endpoint} element={}", t.element);
        }
        let shed = learner.shed();
        if shed != shed_before && !self.warned.noise {
            self.warned.noise = true;
            let s = learner.settings();
            warn!(
                "noise learning is full on this worker (at most {} endpoints, {} elements each, {} per comparison): what does not fit is never treated as noise",
                s.max_endpoints, s.max_elements, s.max_elements_per_observation
            );
        }
        let elements = judged.elements();
        let judgement = learner.judge(endpoint, &elements);
        let kinds: Vec<DiffKind> = elements
            .iter()
            .map(|e| {
                if learner.judge(endpoint, std::slice::from_ref(e)) == Judgement::Noise {
                    DiffKind::Noise
                } else {
                    DiffKind::Mismatch
                }
            })
            .collect();
        for (d, kind) in judged.list.iter().zip(kinds) {
            self.count_difference(endpoint, &d.element, kind);
        }
        compare::judged_verdict(judged, judgement)
    }

    /// +1 on `differences_total` for one element, defining its series the first time, or
    /// the `other` series once [`MAX_DIFFERENCE_SERIES`] are defined.
    fn count_difference(&mut self, endpoint: &str, element: &str, kind: DiffKind) {
        let element = endpoint::label_value(element);
        let cluster = self.mirror.cluster.as_str();
        let mut values = [cluster, endpoint, element.as_str(), kind.as_str()];
        let mut name = DIFFERENCES_TOTAL.stat_name(values);
        let known = |differences: &[(String, Handle)], name: &str| {
            differences.iter().find(|(n, _)| n == name).map(|(_, h)| *h)
        };
        let mut handle = known(&self.metrics.differences, &name);
        if handle.is_none() && self.metrics.difference_series >= MAX_DIFFERENCE_SERIES {
            if !self.warned.series {
                self.warned.series = true;
                warn!("more than {MAX_DIFFERENCE_SERIES} difference series on this worker: further ones are counted as endpoint=\"other\" element=\"other\"");
            }
            values = [cluster, endpoint::OTHER, endpoint::OTHER, kind.as_str()];
            name = DIFFERENCES_TOTAL.stat_name(values);
            handle = known(&self.metrics.differences, &name);
        } else if handle.is_none() {
            self.metrics.difference_series = self.metrics.difference_series.saturating_add(1);
        }
        let handle = handle.unwrap_or_else(|| {
            let handle = Handle::define(&self.host, &DIFFERENCES_TOTAL, values);
            self.metrics.differences.push((name, handle));
            handle
        });
        handle.increment(&self.host, 1);
    }

    fn class_name(&self, class: ClassId) -> &str {
        self.class_names.get(class).map_or("?", String::as_str)
    }
}

impl<H: Host> Drop for MirrorSession<H> {
    /// A configuration dropped with its share still in the gauge (its context deleted
    /// without `on_done`) takes that share with it.
    fn drop(&mut self) {
        let reported = std::mem::take(&mut self.reported_pending);
        self.move_gauge(reported.saturating_neg());
    }
}

/// A request as its headers arrive.
pub struct Request<'a> {
    pub headers: Vec<(String, Vec<u8>)>,
    pub class: ClassId,
    /// The ids the classifier just gave a first-time visitor.
    pub assigned: &'a [(String, String)],
    /// The class and features headers the copy gets (`None`: removed), as the primary's
    /// request got them.
    pub class_headers: &'a [(&'a str, Option<&'a [u8]>)],
}

/// Where one request is in mirroring. The stream context holds it and passes the session in
/// on each callback; what it reads from the host comes in through the closures, called only
/// when the state needs it.
#[derive(Default)]
pub struct StreamMirror {
    state: StreamState,
    /// The primary's response has begun, whatever the state.
    response_started: bool,
}

/// The primary's response headers, and its body as the comparison keeps it so far.
type Observed = (Headers, BodyCapture);

#[derive(Default)]
enum StreamState {
    #[default]
    Off,
    /// Copying the request body while it streams to the primary; a gRPC call's framing
    /// followed to tell one message from a stream.
    Copying(Job, Option<RequestFraming>),
    /// Handed to the session; `response` is filled as the primary's response streams by.
    Submitted {
        id: EntryId,
        response: Option<Observed>,
        grpc: bool,
    },
}

impl StreamMirror {
    /// Decides on the request headers and, for a candidate, starts copying it (and submits
    /// it at once when it has no body, `end`). `draw` is the sample draw
    /// ([`Mirror::decide`]).
    pub fn start<H: Host>(
        &mut self,
        session: &mut MirrorSession<H>,
        request: Request,
        draw: impl FnOnce() -> Option<u32>,
        end: bool,
    ) {
        let Request {
            headers,
            class,
            assigned,
            class_headers,
        } = request;
        let mirror = session.config();
        if let Err(decision) = mirror.decide(&headers, class, assigned, draw) {
            session.count(class, decision);
            return;
        }
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
                .unwrap_or_default()
        };
        let method = String::from_utf8_lossy(value(":method")).into_owned();
        let path = printable_path(value(":path"));
        let grpc = Mirror::is_grpc(&headers);
        let copy = match mirror.copy_headers(headers, class_headers) {
            Ok(copy) => copy,
            Err(decision) => {
                session.count(class, decision);
                return;
            }
        };
        if !session.admit() {
            session.count(class, Decision::RateLimited);
            return;
        }
        let job = Job {
            class,
            method,
            path,
            headers: copy,
            body: Vec::new(),
            grpc,
        };
        self.state = StreamState::Copying(job, grpc.then(RequestFraming::new));
        if end {
            self.submit(session);
        }
    }

    /// A request body chunk of `len` bytes; `read` copies it out of the host.
    pub fn request_body<H: Host>(
        &mut self,
        session: &mut MirrorSession<H>,
        len: usize,
        read: impl FnOnce() -> Result<Vec<u8>, String>,
        end: bool,
    ) {
        let StreamState::Copying(job, framing) = &mut self.state else {
            return;
        };
        let over = job.body.len().saturating_add(len) > session.config().max_body_bytes;
        let mut read = Some(read);
        let mut chunk = None;
        if let Some(framing) = framing {
            // A client stream is told by its framing whatever its size: only the first
            // message's prefix is needed, so a chunk past it is not read for this.
            if !over || job.body.len() < crate::grpc::PREFIX_LEN {
                let bytes = read.take().map_or_else(|| Ok(Vec::new()), |r| r());
                match bytes {
                    Ok(bytes) => {
                        framing.push(&bytes);
                        chunk = Some(bytes);
                    }
                    Err(e) => {
                        debug!("cannot read the request body: {e}; not mirrored");
                        session.count(job.class, Decision::DispatchFailed);
                        self.state = StreamState::Off;
                        return;
                    }
                }
            } else {
                framing.skip(len);
            }
            if framing.shape(end) == RequestShape::Stream {
                session.count(job.class, Decision::NotIdempotent);
                self.state = StreamState::Off;
                return;
            }
        }
        if over {
            session.count(job.class, Decision::BodyTooLarge);
            self.state = StreamState::Off;
            return;
        }
        let bytes = match (chunk, read) {
            (Some(bytes), _) => Ok(bytes),
            (None, Some(read)) => read(),
            (None, None) => Ok(Vec::new()),
        };
        match bytes {
            Ok(chunk) => job.body.extend_from_slice(&chunk),
            Err(e) => {
                debug!("cannot read the request body: {e}; not mirrored");
                session.count(job.class, Decision::DispatchFailed);
                self.state = StreamState::Off;
                return;
            }
        }
        if end {
            self.submit(session);
        }
    }

    /// Trailers end the request; the copy is sent without them.
    pub fn request_trailers<H: Host>(&mut self, session: &mut MirrorSession<H>) {
        self.submit(session);
    }

    fn submit<H: Host>(&mut self, session: &mut MirrorSession<H>) {
        let StreamState::Copying(job, framing) = std::mem::take(&mut self.state) else {
            return;
        };
        // A gRPC request that ended as anything but one message (a client stream that sent
        // none, or a cut message) is not one request the canary could answer alike.
        if framing.is_some_and(|f| f.shape(true) != RequestShape::Single) {
            session.count(job.class, Decision::NotIdempotent);
            return;
        }
        let grpc = job.grpc;
        if let Some(id) = session.submit(job) {
            self.state = StreamState::Submitted {
                id,
                response: None,
                grpc,
            };
            if self.response_started {
                // The primary answered before the request was complete: its response went
                // by unobserved, so there is nothing to compare the canary's with.
                session.primary_answered(id, None);
            }
        }
    }

    /// The primary's response headers; `read` copies them out of the host.
    pub fn response_headers<H: Host>(
        &mut self,
        session: &mut MirrorSession<H>,
        read: impl FnOnce() -> Result<Vec<(String, Vec<u8>)>, String>,
        end: bool,
    ) {
        self.response_started = true;
        if let StreamState::Copying(job, Some(_)) = &self.state {
            // A gRPC call whose answer begins before the client has sent its one message
            // and ended its side is a stream from the client (bidirectional, mostly).
            session.count(job.class, Decision::NotIdempotent);
            self.state = StreamState::Off;
            return;
        }
        let StreamState::Submitted { response, .. } = &mut self.state else {
            return;
        };
        match read() {
            Ok(headers) => {
                let capture = BodyCapture::for_headers(&session.config().compare, &headers);
                *response = Some((headers, capture));
            }
            Err(e) => debug!("cannot read response headers: {e}"),
        }
        if end {
            self.primary_done(session, true, Vec::new());
        }
    }

    /// A chunk of the primary's response body; `feed` gives it to the capture.
    pub fn response_body<H: Host>(
        &mut self,
        session: &mut MirrorSession<H>,
        feed: impl FnOnce(&mut BodyCapture),
        end: bool,
    ) {
        let StreamState::Submitted {
            response: Some((_, capture)),
            ..
        } = &mut self.state
        else {
            return;
        };
        feed(capture);
        if end {
            self.primary_done(session, true, Vec::new());
        }
    }

    /// The primary's response trailers end it; `read` copies them out of the host, called
    /// only for a gRPC call, whose status they hold.
    pub fn response_trailers<H: Host>(
        &mut self,
        session: &mut MirrorSession<H>,
        read: impl FnOnce() -> Result<Headers, String>,
    ) {
        let trailers = match &self.state {
            StreamState::Submitted { grpc: true, .. } => match read() {
                Ok(trailers) => trailers,
                Err(e) => {
                    debug!("cannot read response trailers: {e}");
                    // Without them the status is unknown: nothing to compare with.
                    self.primary_done(session, false, Vec::new());
                    return;
                }
            },
            _ => Vec::new(),
        };
        self.primary_done(session, true, trailers);
    }

    /// The stream is over: still waiting here means the response never completed (reset,
    /// client gone).
    pub fn log<H: Host>(&mut self, session: &mut MirrorSession<H>) {
        self.primary_done(session, false, Vec::new());
    }

    fn primary_done<H: Host>(
        &mut self,
        session: &mut MirrorSession<H>,
        complete: bool,
        trailers: Headers,
    ) {
        let StreamState::Submitted { id, response, .. } = std::mem::take(&mut self.state) else {
            return;
        };
        let response = match (complete, response) {
            (true, Some((headers, body))) => Some((headers, trailers, body.finish())),
            _ => None,
        };
        session.primary_answered(id, response);
    }
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

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use super::*;
    use crate::metrics::tests::FakeMetrics;
    use crate::metrics::Kind;

    /// Test log lines go to the thread that wrote them, so parallel tests each see their own.
    mod capture_log {
        use std::cell::RefCell;
        use std::sync::Once;

        thread_local!(static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) });

        struct Capture;

        impl log::Log for Capture {
            fn enabled(&self, _: &log::Metadata) -> bool {
                true
            }
            fn log(&self, record: &log::Record) {
                let line = format!("{} {}", record.level(), record.args());
                LINES.with(|l| l.borrow_mut().push(line));
            }
            fn flush(&self) {}
        }

        static CAPTURE: Capture = Capture;
        static INSTALL: Once = Once::new();

        /// Starts capturing on this thread; returns nothing captured before.
        pub fn start() {
            INSTALL.call_once(|| {
                log::set_logger(&CAPTURE).unwrap();
                log::set_max_level(log::LevelFilter::Trace);
            });
            LINES.with(|l| l.borrow_mut().clear());
        }

        /// The lines at `level` captured on this thread since `start`.
        pub fn lines(level: log::Level) -> Vec<String> {
            let prefix = format!("{level} ");
            LINES.with(|l| {
                l.borrow()
                    .iter()
                    .filter_map(|line| line.strip_prefix(&prefix).map(str::to_string))
                    .collect()
            })
        }
    }

    type Dispatched = (String, Vec<(String, String)>, Option<Vec<u8>>, Duration);

    #[derive(Default)]
    struct Fake {
        metrics: FakeMetrics,
        now: Cell<u64>,
        dispatched: RefCell<Vec<Dispatched>>,
        refuse_dispatch: Cell<bool>,
        /// Refuses callouts to this cluster only.
        refuse_cluster: RefCell<Option<String>>,
        wakes: Cell<u32>,
        refuse_wake: Cell<bool>,
        dones: Cell<u32>,
    }

    /// Callout tokens start here, so a test cannot pass by confusing tokens and indexes.
    const FIRST_TOKEN: u32 = 100;

    impl MetricHost for Rc<Fake> {
        fn define_metric(&self, kind: Kind, name: &str) -> Result<u32, String> {
            self.metrics.define_metric(kind, name)
        }
        fn increment_metric(&self, id: u32, delta: i64) -> Result<(), String> {
            self.metrics.increment_metric(id, delta)
        }
        fn record_metric(&self, id: u32, value: u64) -> Result<(), String> {
            self.metrics.record_metric(id, value)
        }
    }

    impl Host for Rc<Fake> {
        fn now_ms(&self) -> u64 {
            self.now.get()
        }
        fn dispatch(
            &self,
            cluster: &str,
            headers: &[(&str, &str)],
            body: Option<&[u8]>,
            timeout: Duration,
        ) -> Result<u32, String> {
            if self.refuse_dispatch.get()
                || self.refuse_cluster.borrow().as_deref() == Some(cluster)
            {
                return Err("BadArgument".into());
            }
            let mut d = self.dispatched.borrow_mut();
            d.push((
                cluster.to_string(),
                headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body.map(<[u8]>::to_vec),
                timeout,
            ));
            Ok(FIRST_TOKEN + d.len() as u32 - 1)
        }
        fn wake(&self) -> Result<(), String> {
            if self.refuse_wake.get() {
                return Err("NotFound".into());
            }
            self.wakes.set(self.wakes.get() + 1);
            Ok(())
        }
        fn done(&self) -> Result<(), String> {
            self.dones.set(self.dones.get() + 1);
            Ok(())
        }
    }

    const TIMEOUT_MS: u64 = 1000;
    const MAX_IN_FLIGHT: usize = 3;
    /// `mirror.max_body_bytes`: the largest request body copied.
    const MAX_BODY: usize = 8;
    /// `compare.max_body_bytes`.
    const COMPARE_LIMIT: usize = 16;
    const CLASSES: [&str; 2] = ["stable", "beta"];
    const BETA: ClassId = 1;

    fn session() -> (Rc<Fake>, MirrorSession<Rc<Fake>>) {
        session_with("", &format!(r#""max_body_bytes": {COMPARE_LIMIT}"#))
    }

    /// `extra`: more fields of the mirror section, each with a trailing comma; `compare`:
    /// fields of its compare section besides `"body": "json"`.
    fn mirror_config(extra: &str, compare: &str) -> Mirror {
        let in_flight = if extra.contains("max_in_flight") {
            String::new()
        } else {
            format!(r#""max_in_flight": {MAX_IN_FLIGHT},"#)
        };
        let compare = if compare.is_empty() {
            String::new()
        } else {
            format!(", {compare}")
        };
        let config = format!(
            r#"{{"classification": {{"rules": [{{"class": "beta", "header": {{"name": "x-beta", "exact": "true"}}}}]}},
                "mirror": {{"cluster": "canary", "timeout_ms": {TIMEOUT_MS}, {in_flight} "max_body_bytes": {MAX_BODY}, {extra}
                            "compare": {{"body": "json"{compare}}}}}}}"#
        );
        crate::config::parse(config.as_bytes())
            .unwrap()
            .mirror
            .unwrap()
    }

    fn session_with(extra: &str, compare: &str) -> (Rc<Fake>, MirrorSession<Rc<Fake>>) {
        let fake = Rc::new(Fake {
            now: Cell::new(1_000_000),
            ..Fake::default()
        });
        let s = session_on(&fake, mirror_config(extra, compare), None);
        (fake, s)
    }

    fn session_on(
        fake: &Rc<Fake>,
        mirror: Mirror,
        previous: Option<Learned>,
    ) -> MirrorSession<Rc<Fake>> {
        let names = CLASSES.iter().map(|c| c.to_string()).collect();
        MirrorSession::new(Rc::clone(fake), mirror, names, previous)
    }

    /// A baseline for every mirror, noise once 2 of the last 4 observations differ.
    const BASELINE: &str = r#""baseline": {"cluster": "baseline"}, "noise": {"min_samples": 2, "threshold": 0.5, "window": 4},"#;

    fn job(body: &[u8]) -> Job {
        Job {
            class: BETA,
            method: "GET".into(),
            path: printable_path(b"/items?token=secret"),
            headers: vec![
                (":method".into(), "GET".into()),
                (":path".into(), "/items?token=secret".into()),
            ],
            body: body.to_vec(),
            grpc: false,
        }
    }

    /// A reply as the host holds it.
    #[derive(Debug, Clone, Copy)]
    struct Reply {
        /// `None`: no headers at all (a reset).
        status: Option<&'static str>,
        /// The header Envoy's router puts on every answer that came from an upstream.
        upstream: bool,
        body: &'static [u8],
    }

    impl Reply {
        fn headers(self) -> Vec<(String, Vec<u8>)> {
            let mut h = Vec::new();
            if let Some(status) = self.status {
                h.push((":status".into(), status.as_bytes().to_vec()));
            }
            if self.upstream {
                h.push(("x-envoy-upstream-service-time".into(), b"3".to_vec()));
            }
            h
        }
    }

    const fn answer(status: &'static str, body: &'static [u8]) -> Reply {
        Reply {
            status: Some(status),
            upstream: true,
            body,
        }
    }
    const OK: Reply = answer("200", br#"{"a": 1}"#);
    const RESET: Reply = Reply {
        status: None,
        upstream: false,
        body: b"",
    };
    const fn stand_in(status: &'static str) -> Reply {
        Reply {
            status: Some(status),
            upstream: false,
            body: b"upstream connect error",
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// Submits a copy of a complete request of class `beta`; `false`: expected refused.
        Submit(bool),
        /// The root context is woken.
        Ready,
        /// The reply to the nth callout dispatched (a mirror's canary callout comes before its
        /// baseline callout).
        Canary(usize, Reply),
        /// As `Canary`, for a callout to the baseline.
        Baseline(usize, Reply),
        /// Callouts to the baseline's cluster are refused.
        RefuseBaseline,
        /// The nth submitted mirror's primary answered completely.
        Primary(usize, Reply),
        /// The nth submitted mirror's primary will not complete.
        PrimaryIncomplete(usize),
        Later(u64),
        Tick,
        /// The host is done with the configuration; whether the session is finished at once.
        Retire(bool),
        RefuseWake(bool),
        RefuseDispatch(bool),
        Wakes(u32),
        Dispatches(usize),
        Pending(usize),
        Dones(u32),
        /// The pending gauge.
        Gauge(i64),
    }
    use Step::*;

    /// A counter of class `beta` at the end of a case.
    #[derive(Debug, Clone, Copy)]
    enum Count {
        D(Decision),
        R(Outcome),
        B(BaselineResult),
        /// `differences_total` of endpoint `GET /items`: element and kind.
        X(&'static str, DiffKind),
    }
    use Count::{B, D, R, X};

    fn stat(c: Count) -> String {
        match c {
            D(d) => MIRROR_TOTAL.stat_name(["canary", "beta", d.as_str()]),
            R(o) => COMPARISONS_TOTAL.stat_name(["canary", "beta", o.as_str()]),
            B(r) => BASELINE_TOTAL.stat_name(["canary", "beta", r.as_str()]),
            X(element, kind) => {
                DIFFERENCES_TOTAL.stat_name(["canary", "GET /items", element, kind.as_str()])
            }
        }
    }

    fn run(fake: &Rc<Fake>, s: &mut MirrorSession<Rc<Fake>>, steps: &[Step], case: &str) {
        let mut ids = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let at = format!("{case}, step {i} {step:?}");
            match *step {
                Submit(accepted) => {
                    let id = s.submit(job(b"q"));
                    assert_eq!(id.is_some(), accepted, "{at}");
                    ids.extend(id);
                }
                Ready => s.on_queue_ready(),
                Canary(n, reply) | Baseline(n, reply) => s.on_reply(
                    FIRST_TOKEN + n as u32,
                    || reply.headers(),
                    |c| c.push(reply.body),
                    Vec::new,
                ),
                RefuseBaseline => *fake.refuse_cluster.borrow_mut() = Some("baseline".into()),
                Primary(n, reply) => {
                    let mut capture = BodyCapture::new(&s.config().compare);
                    capture.push(reply.body);
                    s.primary_answered(
                        ids[n],
                        Some((reply.headers(), Vec::new(), capture.finish())),
                    );
                }
                PrimaryIncomplete(n) => s.primary_answered(ids[n], None),
                Later(ms) => fake.now.set(fake.now.get() + ms),
                Tick => s.on_tick(),
                Retire(finished) => assert_eq!(s.on_done(), finished, "{at}"),
                RefuseWake(r) => fake.refuse_wake.set(r),
                RefuseDispatch(r) => fake.refuse_dispatch.set(r),
                Wakes(n) => assert_eq!(fake.wakes.get(), n, "{at}"),
                Dispatches(n) => assert_eq!(fake.dispatched.borrow().len(), n, "{at}"),
                Pending(n) => assert_eq!(s.pending(), n, "{at}"),
                Dones(n) => assert_eq!(fake.dones.get(), n, "{at}"),
                Gauge(v) => assert_eq!(
                    fake.metrics.value(&MIRRORS_PENDING.stat_name(["canary"])),
                    Some(v),
                    "{at}"
                ),
            }
        }
    }

    /// Name, steps, and the counters of class `beta` that are not 0 at the end.
    type Case<T> = (&'static str, Vec<T>, Vec<(Count, i64)>);

    #[test]
    fn every_ordering_is_counted_once() {
        use Decision::*;
        use Outcome::*;
        let t = TIMEOUT_MS;
        #[rustfmt::skip]
        let cases: Vec<Case<Step>> = vec![
            ("primary first", vec![Submit(true), Ready, Primary(0, OK), Pending(1), Canary(0, OK), Pending(0)],
                vec![(D(Mirrored), 1), (R(Match), 1)]),
            ("canary first", vec![Submit(true), Ready, Canary(0, OK), Pending(1), Primary(0, OK), Pending(0)],
                vec![(D(Mirrored), 1), (R(Match), 1)]),
            ("status differs", vec![Submit(true), Ready, Primary(0, OK), Canary(0, answer("500", b"{}"))],
                vec![(D(Mirrored), 1), (R(StatusMismatch), 1)]),
            ("body differs", vec![Submit(true), Ready, Canary(0, answer("200", br#"{"a": 2}"#)), Primary(0, OK)],
                vec![(D(Mirrored), 1), (R(BodyMismatch), 1)]),
            ("body over compare.max_body_bytes", vec![Submit(true), Ready, Primary(0, answer("200", &[b' '; COMPARE_LIMIT + 1])), Canary(0, OK)],
                vec![(D(Mirrored), 1), (R(Skipped), 1)]),
            ("canary times out: the tick decides", vec![Submit(true), Ready, Primary(0, OK), Later(t - 1), Tick, Pending(1), Later(1), Tick, Pending(0),
                    // Envoy's own timeout reply, after the tick: nothing left to count.
                    Canary(0, stand_in("504"))],
                vec![(D(Mirrored), 1), (R(MirrorTimeout), 1)]),
            ("canary times out before dispatch", vec![Submit(true), Later(t), Tick, Ready, Dispatches(0)],
                vec![(R(MirrorTimeout), 1)]),
            ("primary never completes: the tick decides", vec![Submit(true), Ready, Canary(0, OK), Later(t), Tick, Pending(0),
                    Primary(0, OK)],
                vec![(D(Mirrored), 1), (R(Skipped), 1)]),
            ("primary incomplete, then the canary", vec![Submit(true), Ready, PrimaryIncomplete(0), Pending(1), Canary(0, OK)],
                vec![(D(Mirrored), 1), (R(Skipped), 1)]),
            ("canary, then primary incomplete", vec![Submit(true), Ready, Canary(0, OK), PrimaryIncomplete(0), Pending(0)],
                vec![(D(Mirrored), 1), (R(Skipped), 1)]),
            ("primary answers once", vec![Submit(true), Ready, Primary(0, OK), PrimaryIncomplete(0), Canary(0, OK)],
                vec![(D(Mirrored), 1), (R(Match), 1)]),
            ("canary reset", vec![Submit(true), Ready, Later(10), Canary(0, RESET), Primary(0, OK)],
                vec![(D(Mirrored), 1), (R(MirrorError), 1)]),
            ("canary reset at the timeout: Envoy's timeout after the headers", vec![Submit(true), Ready, Later(t), Canary(0, RESET), Primary(0, OK)],
                vec![(D(Mirrored), 1), (R(MirrorTimeout), 1)]),
            ("Envoy's 503 stand-in", vec![Submit(true), Ready, Primary(0, OK), Canary(0, stand_in("503"))],
                vec![(D(Mirrored), 1), (R(MirrorError), 1)]),
            ("Envoy's 504 stand-in", vec![Submit(true), Ready, Primary(0, OK), Canary(0, stand_in("504"))],
                vec![(D(Mirrored), 1), (R(MirrorTimeout), 1)]),
            ("the canary's own 503 is an answer", vec![Submit(true), Ready, Primary(0, answer("503", b"")), Canary(0, answer("503", b""))],
                vec![(D(Mirrored), 1), (R(Match), 1)]),
            ("a reply to no callout", vec![Submit(true), Ready, Canary(5, OK), Pending(1)],
                vec![(D(Mirrored), 1)]),
            ("overloaded, then a freed slot", vec![Submit(true), Submit(true), Submit(true), Submit(false), Pending(MAX_IN_FLIGHT), Ready, Dispatches(3),
                    Canary(1, OK), Primary(1, OK), Pending(2), Submit(true), Ready, Dispatches(4)],
                vec![(D(Mirrored), 4), (D(Overloaded), 1), (R(Match), 1)]),
            ("dispatch refused", vec![RefuseDispatch(true), Submit(true), Ready, Pending(1), Primary(0, OK), Pending(0)],
                vec![(D(DispatchFailed), 1), (R(MirrorError), 1)]),
            ("wake batching: one wake per burst", vec![Submit(true), Submit(true), Submit(true), Wakes(1), Dispatches(0), Ready, Dispatches(3),
                    Ready, Dispatches(3), Canary(0, OK), Primary(0, OK), Submit(true), Wakes(2), Ready, Dispatches(4)],
                vec![(D(Mirrored), 4), (R(Match), 1)]),
            ("wake refused", vec![RefuseWake(true), Submit(false), Pending(0), RefuseWake(false), Submit(true), Wakes(1), Ready, Dispatches(1)],
                vec![(D(DispatchFailed), 1), (R(MirrorError), 1), (D(Mirrored), 1)]),
            ("gauge moves once a tick", vec![Submit(true), Submit(true), Gauge(0), Tick, Gauge(2), Ready, Canary(0, OK), Primary(0, OK), Gauge(2), Tick, Gauge(1)],
                vec![(D(Mirrored), 2), (R(Match), 1)]),
            ("retired with nothing pending", vec![Submit(true), Ready, Canary(0, OK), Primary(0, OK), Tick, Retire(true), Tick, Dones(0)],
                vec![(D(Mirrored), 1), (R(Match), 1)]),
            ("retired with mirrors pending: drained", vec![Submit(true), Submit(true), Ready, Tick, Gauge(2), Retire(false), Gauge(0),
                    Canary(0, OK), Primary(0, OK), Tick, Dones(0), Gauge(0),
                    Primary(1, OK), Later(t), Tick, Dones(1), Tick, Dones(1)],
                vec![(D(Mirrored), 2), (R(Match), 1), (R(MirrorTimeout), 1)]),
        ];
        for (case, steps, want) in cases {
            let (fake, mut s) = session();
            run(&fake, &mut s, &steps, case);
            let want: BTreeMap<String, i64> = want.into_iter().map(|(c, v)| (stat(c), v)).collect();
            let mut got = fake.metrics.nonzero();
            got.remove(&MIRRORS_PENDING.stat_name(["canary"]));
            // Differences are counted in their own tests.
            got.retain(|name, _| !name.starts_with(DIFFERENCES_TOTAL.name));
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn dispatch_sends_the_copy_to_the_cluster() {
        let (fake, mut s) = session();
        assert!(s.submit(job(b"")).is_some());
        assert!(s.submit(job(b"{}")).is_some());
        s.on_queue_ready();
        let headers = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), "/items?token=secret".to_string()),
        ];
        let timeout = Duration::from_millis(TIMEOUT_MS);
        assert_eq!(
            *fake.dispatched.borrow(),
            [
                ("canary".to_string(), headers.clone(), None, timeout),
                ("canary".to_string(), headers, Some(b"{}".to_vec()), timeout),
            ]
        );
        assert_eq!(s.tick_period(), Duration::from_millis(250));
    }

    #[test]
    fn durations_are_recorded() {
        let (fake, mut s) = session();
        run(
            &fake,
            &mut s,
            &[
                Submit(true),
                Later(5),
                Ready,
                Later(20),
                Canary(0, OK),
                Later(10),
                Primary(0, OK),
                // A second mirror whose canary fails: no canary duration for it.
                Submit(true),
                Ready,
                Later(7),
                Primary(1, OK),
                Canary(1, RESET),
            ],
            "durations",
        );
        let beta = ["canary", "beta"];
        assert_eq!(
            fake.metrics.records(&PRIMARY_DURATION_MS.stat_name(beta)),
            [35, 7]
        );
        assert_eq!(
            fake.metrics.records(&MIRROR_DURATION_MS.stat_name(beta)),
            [20]
        );
    }

    #[test]
    fn every_series_is_defined_at_the_start() {
        let (fake, s) = session();
        let per_class = Decision::ALL.len() + Outcome::ALL.len() + 2;
        let defined = fake.metrics.defined();
        assert_eq!(defined.len(), CLASSES.len() * per_class + 1);
        assert!(defined.contains(&(
            Kind::Counter,
            MIRROR_TOTAL.stat_name(["canary", "stable", "header_not_utf8"])
        )));
        assert!(defined.contains(&(Kind::Gauge, MIRRORS_PENDING.stat_name(["canary"]))));
        // A class the session does not know counts nowhere, and does not fail.
        s.count(7, Decision::Mirrored);
        assert!(fake.metrics.nonzero().is_empty());
    }

    #[test]
    fn drop_takes_the_share_back_from_the_gauge() {
        let gauge = MIRRORS_PENDING.stat_name(["canary"]);
        // Dropped with its share in the gauge; and dropped after `on_done` took it already.
        for retire in [false, true] {
            let (fake, mut s) = session();
            run(
                &fake,
                &mut s,
                &[Submit(true), Submit(true), Tick, Gauge(2)],
                "drop",
            );
            if retire {
                assert!(!s.on_done());
            }
            drop(s);
            assert_eq!(
                fake.metrics.value(&gauge),
                Some(0),
                "retired first: {retire}"
            );
        }
    }

    #[test]
    fn mismatch_lines_are_rate_limited() {
        capture_log::start();
        let (fake, mut s) = session();
        let mismatch = [
            Submit(true),
            Ready,
            Primary(0, OK),
            Canary(0, answer("500", b"")),
        ];
        let line = "mirror mismatch: GET /items class=beta endpoint=GET /items element=status result=status_mismatch: status 200 vs 500";
        for _ in 0..LOG_BURST + 2 {
            fake.dispatched.borrow_mut().clear();
            run(&fake, &mut s, &mismatch, "mismatch");
        }
        fake.now.set(fake.now.get() + 1000);
        fake.dispatched.borrow_mut().clear();
        run(&fake, &mut s, &mismatch, "after a second");
        let mut want = vec![line.to_string(); LOG_BURST as usize];
        want.push(format!("{line} (2 earlier lines suppressed)"));
        assert_eq!(capture_log::lines(log::Level::Info), want);
        assert_eq!(
            fake.metrics.value(&stat(R(Outcome::StatusMismatch))),
            Some(i64::from(LOG_BURST) + 3)
        );
    }

    #[test]
    fn failures_are_logged_and_skips_at_debug() {
        capture_log::start();
        let (fake, mut s) = session();
        fake.refuse_dispatch.set(true);
        run(
            &fake,
            &mut s,
            &[Submit(true), Ready, Primary(0, OK)],
            "refused",
        );
        fake.refuse_dispatch.set(false);
        run(
            &fake,
            &mut s,
            &[Submit(true), Ready, Canary(0, OK), PrimaryIncomplete(0)],
            "incomplete",
        );
        fake.refuse_wake.set(true);
        run(&fake, &mut s, &[Submit(false)], "no wake");
        assert_eq!(
            capture_log::lines(log::Level::Info),
            ["mirror failed: GET /items class=beta result=mirror_error: Envoy refused the callout to cluster \"canary\" (BadArgument); is the cluster defined?"]
        );
        assert_eq!(
            capture_log::lines(log::Level::Warn),
            ["cannot queue a mirror: NotFound"]
        );
        assert_eq!(
            capture_log::lines(log::Level::Debug),
            ["mirror skipped: GET /items class=beta: the primary's response did not complete in time to compare"]
        );
    }

    #[test]
    fn printable_paths() {
        let long = "a".repeat(LOG_PATH_MAX + 1);
        #[rustfmt::skip]
        let cases: [(&[u8], String); 5] = [
            (b"/items?token=secret", "/items".into()),
            (b"/a#frag", "/a".into()),
            (b"/a\nb\x7f", "/a\\nb\\u{7f}".into()),
            (b"/\xff", "/\u{fffd}".into()),
            (long.as_bytes(), format!("{}…", "a".repeat(LOG_PATH_MAX))),
        ];
        for (path, want) in cases {
            assert_eq!(printable_path(path), want, "{path:?}");
        }
    }

    /// The same answers as [`OK`] with another body.
    const fn json(body: &'static [u8]) -> Reply {
        answer("200", body)
    }

    /// With a baseline: every ordering of primary, canary and baseline, and each way the
    /// baseline can fail, concluded once. Mirror n's canary callout is 2n, its baseline's 2n+1.
    #[test]
    fn every_ordering_with_a_baseline() {
        use BaselineResult as Br;
        use Decision::*;
        use DiffKind::Mismatch as M;
        use Outcome::*;
        let t = TIMEOUT_MS;
        let all_in = vec![(D(Mirrored), 1), (R(Match), 1), (B(Br::Answered), 1)];
        #[rustfmt::skip]
        let cases: Vec<Case<Step>> = vec![
            ("primary, canary, baseline", vec![Submit(true), Ready, Dispatches(2), Primary(0, OK), Canary(0, OK), Pending(1), Baseline(1, OK), Pending(0)],
                all_in.clone()),
            ("primary, baseline, canary", vec![Submit(true), Ready, Primary(0, OK), Baseline(1, OK), Pending(1), Canary(0, OK), Pending(0)],
                all_in.clone()),
            ("canary, baseline, primary", vec![Submit(true), Ready, Canary(0, OK), Baseline(1, OK), Pending(1), Primary(0, OK), Pending(0)],
                all_in.clone()),
            ("baseline, canary, primary", vec![Submit(true), Ready, Baseline(1, OK), Canary(0, OK), Pending(1), Primary(0, OK), Pending(0)],
                all_in.clone()),
            ("the canary differs from the baseline", vec![Submit(true), Ready, Primary(0, OK), Baseline(1, OK), Canary(0, answer("500", br#"{"a": 1}"#))],
                vec![(D(Mirrored), 1), (R(StatusMismatch), 1), (B(Br::Answered), 1), (X("status", M), 1)]),
            ("the primary differs, the canary agrees with the baseline", vec![Submit(true), Ready, Primary(0, json(br#"{"a": 2}"#)), Baseline(1, OK), Canary(0, OK)],
                all_in.clone()),
            ("baseline times out: skipped", vec![Submit(true), Ready, Primary(0, OK), Canary(0, OK), Pending(1), Later(t), Tick, Pending(0),
                    Baseline(1, stand_in("504"))],
                vec![(D(Mirrored), 1), (R(Skipped), 1), (B(Br::MirrorTimeout), 1)]),
            ("baseline reset: skipped", vec![Submit(true), Ready, Primary(0, OK), Canary(0, OK), Baseline(1, RESET)],
                vec![(D(Mirrored), 1), (R(Skipped), 1), (B(Br::MirrorError), 1)]),
            ("baseline's 503 stand-in: skipped", vec![Submit(true), Ready, Baseline(1, stand_in("503")), Primary(0, OK), Canary(0, OK)],
                vec![(D(Mirrored), 1), (R(Skipped), 1), (B(Br::MirrorError), 1)]),
            ("baseline refused: skipped, the canary's copy still sent", vec![RefuseBaseline, Submit(true), Ready, Dispatches(1), Primary(0, OK), Pending(1), Canary(0, OK), Pending(0)],
                vec![(D(Mirrored), 1), (R(Skipped), 1), (B(Br::DispatchFailed), 1)]),
            ("the canary fails: as without a baseline", vec![Submit(true), Ready, Later(10), Canary(0, RESET), Baseline(1, OK), Primary(0, OK)],
                vec![(D(Mirrored), 1), (R(MirrorError), 1), (B(Br::Answered), 1)]),
            ("the canary times out, the baseline answered", vec![Submit(true), Ready, Primary(0, OK), Baseline(1, OK), Later(t), Tick, Pending(0)],
                vec![(D(Mirrored), 1), (R(MirrorTimeout), 1), (B(Br::Answered), 1)]),
            ("canary refused: no copy to the baseline", vec![RefuseDispatch(true), Submit(true), Ready, Dispatches(0), Primary(0, OK), Pending(0)],
                vec![(D(DispatchFailed), 1), (R(MirrorError), 1)]),
            ("primary incomplete: skipped", vec![Submit(true), Ready, Canary(0, OK), Baseline(1, OK), Pending(1), PrimaryIncomplete(0), Pending(0)],
                vec![(D(Mirrored), 1), (R(Skipped), 1), (B(Br::Answered), 1)]),
            ("nothing dispatched before the deadline", vec![Submit(true), Later(t), Tick, Ready, Dispatches(0)],
                vec![(R(MirrorTimeout), 1)]),
            ("one slot holds all three sides", vec![Submit(true), Submit(true), Submit(true), Submit(false), Ready, Dispatches(6), Pending(MAX_IN_FLIGHT)],
                vec![(D(Mirrored), 3), (D(Overloaded), 1)]),
            // /a differs between primary and baseline every time: noise from the 2nd observation.
            ("noise converges", vec![
                    Submit(true), Ready, Primary(0, json(br#"{"a": 1}"#)), Baseline(1, json(br#"{"a": 2}"#)), Canary(0, json(br#"{"a": 3}"#)),
                    Submit(true), Ready, Primary(1, json(br#"{"a": 1}"#)), Baseline(3, json(br#"{"a": 2}"#)), Canary(2, json(br#"{"a": 3}"#)),
                    Submit(true), Ready, Primary(2, json(br#"{"a": 4}"#)), Baseline(5, json(br#"{"a": 5}"#)), Canary(4, json(br#"{"b": 5}"#))],
                vec![(D(Mirrored), 3), (B(Br::Answered), 3), (R(BodyMismatch), 2), (R(Noise), 1),
                     (X("/a", M), 1), (X("/a", DiffKind::Noise), 2), (X("/b", M), 1)]),
        ];
        for (case, steps, want) in cases {
            let (fake, mut s) = session_with(BASELINE, "");
            run(&fake, &mut s, &steps, case);
            let want: BTreeMap<String, i64> = want.into_iter().map(|(c, v)| (stat(c), v)).collect();
            let mut got = fake.metrics.nonzero();
            got.remove(&MIRRORS_PENDING.stat_name(["canary"]));
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn the_baseline_gets_the_identical_copy() {
        let (fake, mut s) = session_with(BASELINE, "");
        assert!(s.submit(job(b"{}")).is_some());
        s.on_queue_ready();
        let d = fake.dispatched.borrow();
        let clusters: Vec<&str> = d.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(clusters, ["canary", "baseline"]);
        assert_eq!((&d[0].1, &d[0].2, d[0].3), (&d[1].1, &d[1].2, d[1].3));
        // Durations: the baseline's over the same requests as the canary's.
        drop(d);
        run(
            &fake,
            &mut s,
            &[Later(30), Canary(0, OK), Later(12), Baseline(1, OK)],
            "durations",
        );
        let beta = ["canary", "beta"];
        assert_eq!(
            fake.metrics.records(&MIRROR_DURATION_MS.stat_name(beta)),
            [30]
        );
        assert_eq!(
            fake.metrics.records(&BASELINE_DURATION_MS.stat_name(beta)),
            [42]
        );
    }

    #[test]
    fn baseline_percent_samples_mirrors() {
        // (percent, mirrors, copies to the baseline)
        for (percent, mirrors, sampled) in
            [(50.0, 6, 3), (25.0, 8, 2), (0.0, 3, 0), (33.33, 300, 99)]
        {
            let extra = format!(
                r#""baseline": {{"cluster": "baseline", "percent": {percent}}}, "max_in_flight": 1000,"#
            );
            let (fake, mut s) = session_with(&extra, "");
            for _ in 0..mirrors {
                assert!(s.submit(job(b"")).is_some());
            }
            s.on_queue_ready();
            let to_baseline = fake
                .dispatched
                .borrow()
                .iter()
                .filter(|d| d.0 == "baseline")
                .count();
            assert_eq!(to_baseline, sampled, "{percent}%");
            let count = |r: BaselineResult| fake.metrics.value(&stat(B(r)));
            assert_eq!(
                count(BaselineResult::NotSampled),
                Some((mirrors - sampled) as i64),
                "{percent}%"
            );
        }
    }

    #[test]
    fn baseline_series_only_with_a_baseline() {
        let (fake, _s) = session_with(BASELINE, "");
        let defined = fake.metrics.defined();
        let per_class =
            Decision::ALL.len() + Outcome::ALL.len() + 2 + BaselineResult::ALL.len() + 1;
        assert_eq!(defined.len(), CLASSES.len() * per_class + 1);
        let (fake, _s) = session();
        assert!(!fake
            .metrics
            .defined()
            .iter()
            .any(|(_, n)| n.starts_with(BASELINE_TOTAL.name)
                || n.starts_with(BASELINE_DURATION_MS.name)));
    }

    #[test]
    fn noise_is_logged_when_learned_and_forgotten() {
        capture_log::start();
        let (fake, mut s) = session_with(BASELINE, "");
        // Each mirror concluded before the next, with its callouts numbered from 0 again.
        let differ = [
            Submit(true),
            Ready,
            Primary(0, json(br#"{"a": 1}"#)),
            Baseline(1, json(br#"{"a": 2}"#)),
            Canary(0, OK),
        ];
        let agree = [
            Submit(true),
            Ready,
            Primary(0, OK),
            Baseline(1, OK),
            Canary(0, OK),
        ];
        // Learned at the 2nd observation; the window of 4 forgets it once 3 of 4 agree.
        for steps in [&differ, &differ, &agree, &agree, &agree] {
            fake.dispatched.borrow_mut().clear();
            run(&fake, &mut s, steps, "noise");
        }
        assert_eq!(
            capture_log::lines(log::Level::Info),
            [
                // Before anything is learned, the canary's /a (the primary's) is a mismatch.
                "mirror mismatch: GET /items class=beta endpoint=GET /items element=/a result=body_mismatch: body /a: 2 vs 1",
                "noise learned: endpoint=GET /items element=/a",
                "noise forgotten: endpoint=GET /items element=/a"
            ]
        );
    }

    #[test]
    fn noise_survives_a_config_push_only_if_the_comparison_is_the_same() {
        capture_log::start();
        let learn = [
            Submit(true),
            Ready,
            Primary(0, json(br#"{"a": 1}"#)),
            Baseline(1, json(br#"{"a": 2}"#)),
            Canary(0, OK),
        ];
        // After the push: primary and baseline agree; the canary differs on /a.
        let after = [
            Submit(true),
            Ready,
            Primary(0, OK),
            Baseline(1, OK),
            Canary(0, json(br#"{"a": 3}"#)),
        ];
        // (second config's compare section, what the canary's /a is judged after the push)
        let cases = [
            (
                "",
                Outcome::Noise,
                "noise learned so far kept: the comparison settings are unchanged",
            ),
            (
                r#""ignore": ["/b"]"#,
                Outcome::BodyMismatch,
                "noise learned so far dropped: the comparison or noise settings changed",
            ),
            (
                r#""endpoints": [{"name": "items", "path": "/items"}]"#,
                Outcome::BodyMismatch,
                "noise learned so far dropped: the comparison or noise settings changed",
            ),
        ];
        for (compare, want, line) in cases {
            let (fake, mut s) = session_with(BASELINE, "");
            for _ in 0..2 {
                fake.dispatched.borrow_mut().clear();
                run(&fake, &mut s, &learn, "learn");
            }
            let learned = s.learned();
            assert!(learned.is_some());
            drop(s);
            capture_log::start();
            let mut s = session_on(&fake, mirror_config(BASELINE, compare), learned);
            let before = fake.metrics.nonzero();
            fake.dispatched.borrow_mut().clear();
            run(&fake, &mut s, &after, compare);
            let mut got = fake.metrics.nonzero();
            got.retain(|k, v| before.get(k) != Some(v) && k.starts_with(COMPARISONS_TOTAL.name));
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                [&stat(R(want))],
                "{compare}"
            );
            assert_eq!(
                capture_log::lines(log::Level::Info)
                    .first()
                    .map(String::as_str),
                Some(line)
            );
        }
        // Without a baseline there is nothing to hand over.
        assert!(session().1.learned().is_none());
    }

    #[test]
    fn max_per_second_limits_copies() {
        let (fake, mut s) = session_with(r#""max_per_second": 2,"#, "");
        let start = |s: &mut MirrorSession<Rc<Fake>>| {
            let request = Request {
                headers: vec![
                    (":method".to_string(), b"GET".to_vec()),
                    (":path".to_string(), b"/items".to_vec()),
                ],
                class: BETA,
                assigned: &[],
                class_headers: &[],
            };
            StreamMirror::default().start(s, request, || Some(0), true);
        };
        for _ in 0..3 {
            start(&mut s);
        }
        fake.now.set(fake.now.get() + 499);
        start(&mut s);
        fake.now.set(fake.now.get() + 1);
        start(&mut s);
        s.on_queue_ready();
        assert_eq!(fake.metrics.value(&stat(D(Decision::RateLimited))), Some(2));
        assert_eq!(fake.metrics.value(&stat(D(Decision::Mirrored))), Some(3));
    }

    /// Submits one mirror of `path` and concludes it with these bodies (primary, canary).
    fn mirror_once(
        fake: &Rc<Fake>,
        s: &mut MirrorSession<Rc<Fake>>,
        path: &str,
        primary: &[u8],
        canary: &[u8],
    ) {
        fake.dispatched.borrow_mut().clear();
        let mut j = job(b"");
        j.headers[1].1 = path.to_string();
        let id = s.submit(j).unwrap();
        s.on_queue_ready();
        let h = OK.headers();
        s.on_reply(FIRST_TOKEN, || h.clone(), |c| c.push(canary), Vec::new);
        let mut capture = BodyCapture::new(&s.config().compare);
        capture.push(primary);
        s.primary_answered(id, Some((OK.headers(), Vec::new(), capture.finish())));
    }

    #[test]
    fn caps_overflow_to_other_and_warn_once() {
        capture_log::start();
        let (fake, mut s) = session_with("", r#""max_body_bytes": 100000"#);
        let differences = |fake: &Rc<Fake>| -> BTreeMap<String, i64> {
            let mut d = fake.metrics.nonzero();
            d.retain(|k, _| k.starts_with(DIFFERENCES_TOTAL.name));
            d
        };
        // Endpoints past the cap are `other`.
        for i in 0..=MAX_ENDPOINTS {
            mirror_once(
                &fake,
                &mut s,
                &format!("/w{i}x"),
                br#"{"a":1}"#,
                br#"{"a":2}"#,
            );
        }
        let got = differences(&fake);
        assert_eq!(got.len(), MAX_ENDPOINTS + 1);
        assert_eq!(
            got.get(&DIFFERENCES_TOTAL.stat_name(["canary", "other", "/a", "mismatch"])),
            Some(&1)
        );
        // Series past the cap are `other`/`other`: 32 new elements a comparison.
        for round in 0..4 {
            let keys = |v: u8| {
                let fields: Vec<String> =
                    (0..32).map(|k| format!(r#""r{round}k{k}":{v}"#)).collect();
                format!("{{{}}}", fields.join(","))
            };
            mirror_once(
                &fake,
                &mut s,
                "/w0x",
                keys(1).as_bytes(),
                keys(2).as_bytes(),
            );
        }
        let got = differences(&fake);
        assert_eq!(got.len(), MAX_DIFFERENCE_SERIES + 1);
        let other = DIFFERENCES_TOTAL.stat_name(["canary", "other", "other", "mismatch"]);
        assert_eq!(
            got.get(&other),
            Some(&(MAX_ENDPOINTS as i64 + 1 + 4 * 32 - MAX_DIFFERENCE_SERIES as i64))
        );
        assert_eq!(
            capture_log::lines(log::Level::Warn),
            [
                format!("more than {MAX_ENDPOINTS} endpoints on this worker: further ones are counted as endpoint=\"other\" (name them in mirror.compare.endpoints)"),
                format!("more than {MAX_DIFFERENCE_SERIES} difference series on this worker: further ones are counted as endpoint=\"other\" element=\"other\""),
            ]
        );
    }

    #[test]
    fn noise_caps_warn_once() {
        capture_log::start();
        let (fake, mut s) = session_with(BASELINE, r#""max_body_bytes": 100000"#);
        // 32 new elements an observation (all a comparison lists) on one endpoint: the third
        // is over the 64 elements an endpoint tracks.
        for round in 0..4 {
            let fields = |v: u8| {
                let f: Vec<String> = (0..32).map(|k| format!(r#""r{round}k{k}":{v}"#)).collect();
                format!("{{{}}}", f.join(","))
            };
            let (one, two) = (fields(1), fields(2));
            fake.dispatched.borrow_mut().clear();
            let id = s.submit(job(b"")).unwrap();
            s.on_queue_ready();
            let h = OK.headers();
            s.on_reply(
                FIRST_TOKEN + 1,
                || h.clone(),
                |c| c.push(two.as_bytes()),
                Vec::new,
            );
            s.on_reply(
                FIRST_TOKEN,
                || h.clone(),
                |c| c.push(one.as_bytes()),
                Vec::new,
            );
            let mut capture = BodyCapture::new(&s.config().compare);
            capture.push(one.as_bytes());
            s.primary_answered(id, Some((OK.headers(), Vec::new(), capture.finish())));
        }
        assert_eq!(
            capture_log::lines(log::Level::Warn),
            ["noise learning is full on this worker (at most 100 endpoints, 64 elements each, 32 per comparison): what does not fit is never treated as noise"]
        );
    }

    #[derive(Debug, Clone, Copy)]
    enum On {
        /// Request headers of a request with this method (`x-mirror: 1` too when `marked`);
        /// `end`: it has no body.
        Start {
            method: &'static str,
            marked: bool,
            end: bool,
        },
        Body(&'static [u8], bool),
        BodyUnreadable,
        RequestTrailers,
        ResponseHeaders(Reply, bool),
        ResponseHeadersUnreadable,
        ResponseBody(&'static [u8], bool),
        ResponseTrailers,
        Log,
        /// The session's side, as in [`Step`].
        S(Step),
        /// The body of the last copy dispatched.
        Sent(Option<&'static [u8]>),
    }

    const fn get(end: bool) -> On {
        On::Start {
            method: "GET",
            marked: false,
            end,
        }
    }
    const fn put() -> On {
        On::Start {
            method: "PUT",
            marked: false,
            end: false,
        }
    }

    #[test]
    fn a_stream_from_request_headers_to_log() {
        use Decision::*;
        use On::*;
        use Outcome::*;
        let canary = S(Step::Canary(0, OK));
        let ready = S(Step::Ready);
        #[rustfmt::skip]
        let cases: Vec<Case<On>> = vec![
            ("GET, primary first", vec![get(true), ready, ResponseHeaders(OK, false), ResponseBody(OK.body, true), S(Step::Pending(1)), canary],
                vec![(D(Mirrored), 1), (R(Match), 1)]),
            ("the response ends with trailers", vec![get(true), ready, canary, ResponseHeaders(OK, false), ResponseBody(OK.body, false), S(Step::Pending(1)), ResponseTrailers, Log],
                vec![(D(Mirrored), 1), (R(Match), 1)]),
            ("a response without a body", vec![get(true), ready, canary, ResponseHeaders(answer("200", b""), true), S(Step::Pending(0))],
                vec![(D(Mirrored), 1), (R(BodyMismatch), 1)]),
            ("not idempotent", vec![Start { method: "POST", marked: false, end: true }, ready, S(Step::Dispatches(0))],
                vec![(D(NotIdempotent), 1)]),
            ("a mirror is not mirrored again", vec![Start { method: "GET", marked: true, end: true }, S(Step::Wakes(0))],
                vec![(D(IsMirror), 1)]),
            ("the body is copied", vec![put(), Body(b"abc", false), S(Step::Wakes(0)), Body(b"defgh", true), ready, Sent(Some(b"abcdefgh"))],
                vec![(D(Mirrored), 1)]),
            ("trailers end the request", vec![put(), Body(b"ab", false), RequestTrailers, ready, Sent(Some(b"ab"))],
                vec![(D(Mirrored), 1)]),
            ("body over mirror.max_body_bytes", vec![put(), Body(b"abc", false), Body(b"defghi", false), Body(b"j", true), ready, S(Step::Dispatches(0))],
                vec![(D(BodyTooLarge), 1)]),
            ("body unreadable", vec![put(), BodyUnreadable, Body(b"j", true), ready, S(Step::Dispatches(0))],
                vec![(D(DispatchFailed), 1)]),
            ("the primary answers before the request is complete", vec![put(), ResponseHeaders(OK, false), Body(b"x", true), ready,
                    S(Step::Pending(1)), ResponseBody(OK.body, true), canary, S(Step::Pending(0))],
                vec![(D(Mirrored), 1), (R(Skipped), 1)]),
            ("response headers unreadable", vec![get(true), ready, ResponseHeadersUnreadable, ResponseBody(OK.body, true), canary, S(Step::Pending(1)), Log],
                vec![(D(Mirrored), 1), (R(Skipped), 1)]),
            ("client gone", vec![get(true), ready, ResponseHeaders(OK, false), Log, ResponseBody(OK.body, true), canary],
                vec![(D(Mirrored), 1), (R(Skipped), 1)]),
            ("request never complete: nothing submitted", vec![put(), Body(b"x", false), ResponseHeaders(OK, true), Log, S(Step::Wakes(0))],
                vec![]),
        ];
        for (case, steps, want) in cases {
            let (fake, mut s) = session();
            let mut stream = StreamMirror::default();
            for (i, step) in steps.iter().enumerate() {
                let at = format!("{case}, step {i} {step:?}");
                match *step {
                    Start {
                        method,
                        marked,
                        end,
                    } => {
                        let mut headers = vec![
                            (":method".to_string(), method.as_bytes().to_vec()),
                            (":path".to_string(), b"/items".to_vec()),
                        ];
                        if marked {
                            headers.push(("x-mirror".to_string(), b"1".to_vec()));
                        }
                        let request = Request {
                            headers,
                            class: BETA,
                            assigned: &[],
                            class_headers: &[("x-user-class", Some(b"beta"))],
                        };
                        stream.start(&mut s, request, || Some(0), end);
                    }
                    Body(chunk, end) => {
                        stream.request_body(&mut s, chunk.len(), || Ok(chunk.to_vec()), end)
                    }
                    BodyUnreadable => {
                        stream.request_body(&mut s, 1, || Err("NotFound".into()), false)
                    }
                    RequestTrailers => stream.request_trailers(&mut s),
                    ResponseHeaders(reply, end) => {
                        stream.response_headers(&mut s, || Ok(reply.headers()), end)
                    }
                    ResponseHeadersUnreadable => {
                        stream.response_headers(&mut s, || Err("NotFound".into()), false)
                    }
                    ResponseBody(chunk, end) => {
                        stream.response_body(&mut s, |c| c.push(chunk), end)
                    }
                    ResponseTrailers => stream.response_trailers(&mut s, || Ok(Vec::new())),
                    Log => stream.log(&mut s),
                    S(step) => run(&fake, &mut s, &[step], &at),
                    Sent(body) => {
                        let d = fake.dispatched.borrow();
                        assert_eq!(d.last().map(|d| d.2.as_deref()), Some(body), "{at}");
                        assert!(
                            d.last()
                                .unwrap()
                                .1
                                .contains(&("x-user-class".into(), "beta".into())),
                            "{at}"
                        );
                    }
                }
            }
            let want: BTreeMap<String, i64> = want.into_iter().map(|(c, v)| (stat(c), v)).collect();
            let mut got = fake.metrics.nonzero();
            got.remove(&MIRRORS_PENDING.stat_name(["canary"]));
            // Differences are counted in their own tests.
            got.retain(|name, _| !name.starts_with(DIFFERENCES_TOTAL.name));
            assert_eq!(got, want, "{case}");
        }
    }

    /// A gRPC call as a stream sees it, on a session that declares `GetProduct` and the
    /// `Watch*` methods and compares protobuf bodies.
    #[derive(Debug, Clone, Copy)]
    enum G {
        /// Request headers of a gRPC call to this method; `end`: no body.
        Call(&'static str, bool),
        Body(&'static [u8], bool),
        /// The canary's reply: its headers besides `:status`, body and trailers; `upstream`:
        /// it came from the canary's server, not Envoy.
        Canary(
            &'static [(&'static str, &'static str)],
            &'static [u8],
            &'static [(&'static str, &'static str)],
            bool,
        ),
        ResponseHeaders(&'static [(&'static str, &'static str)], bool),
        ResponseBody(&'static [u8], bool),
        ResponseTrailers(&'static [(&'static str, &'static str)]),
        ResponseTrailersUnreadable,
        Log,
        S(Step),
        /// The copy dispatched carries these headers.
        CopyHas(&'static [(&'static str, &'static str)]),
    }

    /// `{1: 7}` and `{1: 9}`, length-prefixed.
    const SEVEN: &[u8] = &[0, 0, 0, 0, 2, 0x08, 7];
    const NINE: &[u8] = &[0, 0, 0, 0, 2, 0x08, 9];
    const TWO_MESSAGES: &[u8] = &[0, 0, 0, 0, 2, 0x08, 7, 0, 0, 0, 0, 2, 0x08, 7];
    const GRPC: &[(&str, &str)] = &[("content-type", "application/grpc")];
    const STATUS_OK: &[(&str, &str)] = &[("grpc-status", "0")];
    const TRAILERS_ONLY: &[(&str, &str)] = &[
        ("content-type", "application/grpc"),
        ("grpc-status", "14"),
        ("grpc-message", "catalog%20down"),
    ];
    const GET: &str = "/shop.v1.Catalog/GetProduct";

    #[test]
    fn a_grpc_call_from_request_headers_to_log() {
        use Decision::*;
        use Outcome::*;
        use G::*;
        let ready = S(Step::Ready);
        let canary_ok = Canary(GRPC, SEVEN, STATUS_OK, true);
        let primary_ok = [
            ResponseHeaders(GRPC, false),
            ResponseBody(SEVEN, false),
            ResponseTrailers(STATUS_OK),
        ];
        let unary = |tail: &[G]| -> Vec<G> {
            let mut steps = vec![Call(GET, false), Body(SEVEN, true), ready];
            steps.extend_from_slice(tail);
            steps
        };
        let answered = |canary: G| -> Vec<G> {
            let mut tail = vec![canary];
            tail.extend_from_slice(&primary_ok);
            unary(&tail)
        };
        #[rustfmt::skip]
        let cases: Vec<Case<G>> = vec![
            ("unary, same answer", answered(canary_ok), vec![(D(Mirrored), 1), (R(Match), 1)]),
            ("the copy keeps te and caps grpc-timeout", unary(&[CopyHas(&[("te", "trailers"), ("grpc-timeout", "1000m"), ("content-type", "application/grpc")])]),
                vec![(D(Mirrored), 1)]),
            ("a field differs", answered(Canary(GRPC, NINE, STATUS_OK, true)), vec![(D(Mirrored), 1), (R(BodyMismatch), 1)]),
            ("the canary's server answers UNAVAILABLE", answered(Canary(TRAILERS_ONLY, b"", &[], true)),
                vec![(D(Mirrored), 1), (R(StatusMismatch), 1)]),
            ("Envoy's stand-in: HTTP 200 with grpc-status 14", answered(Canary(TRAILERS_ONLY, b"", &[], false)),
                vec![(D(Mirrored), 1), (R(MirrorError), 1)]),
            ("both answer trailers-only", unary(&[Canary(TRAILERS_ONLY, b"", &[], true), ResponseHeaders(TRAILERS_ONLY, true), S(Step::Pending(0))]),
                vec![(D(Mirrored), 1), (R(Match), 1)]),
            ("the primary's trailers cannot be read", unary(&[canary_ok, ResponseHeaders(GRPC, false), ResponseBody(SEVEN, false), ResponseTrailersUnreadable]),
                vec![(D(Mirrored), 1), (R(Skipped), 1)]),
            ("the client is gone before the trailers", unary(&[canary_ok, ResponseHeaders(GRPC, false), ResponseBody(SEVEN, false), Log]),
                vec![(D(Mirrored), 1), (R(Skipped), 1)]),
            ("a server stream is one request", vec![Call("/shop.v1.Catalog/WatchPrices", false), Body(SEVEN, true), ready,
                    Canary(GRPC, TWO_MESSAGES, STATUS_OK, true), ResponseHeaders(GRPC, false), ResponseBody(TWO_MESSAGES, false), ResponseTrailers(STATUS_OK)],
                vec![(D(Mirrored), 1), (R(Match), 1)]),
            ("a client stream in one chunk", vec![Call(GET, false), Body(TWO_MESSAGES, true), ready, S(Step::Dispatches(0))],
                vec![(D(NotIdempotent), 1)]),
            ("a client stream, message by message", vec![Call(GET, false), Body(SEVEN, false), Body(SEVEN, false), Body(SEVEN, true), ready, S(Step::Dispatches(0))],
                vec![(D(NotIdempotent), 1)]),
            ("a client stream past max_body_bytes", vec![Call(GET, false), Body(SEVEN, false), Body(NINE, false), ready, S(Step::Dispatches(0))],
                vec![(D(NotIdempotent), 1)]),
            ("one message past max_body_bytes", vec![Call(GET, false), Body(&[0, 0, 0, 0, 9, 8, 1], false), Body(&[8, 2, 8, 3], false), S(Step::Dispatches(0))],
                vec![(D(BodyTooLarge), 1)]),
            ("the answer begins before the request ends (bidi)", vec![Call(GET, false), Body(SEVEN, false), ResponseHeaders(GRPC, false), Body(SEVEN, true), ready,
                    S(Step::Dispatches(0))],
                vec![(D(NotIdempotent), 1)]),
            ("no message at all", vec![Call(GET, true), ready, S(Step::Dispatches(0))], vec![(D(NotIdempotent), 1)]),
            ("a cut message", vec![Call(GET, false), Body(&SEVEN[..6], true), ready, S(Step::Dispatches(0))], vec![(D(NotIdempotent), 1)]),
            ("an undeclared method", vec![Call("/shop.v1.Catalog/PlaceOrder", false), Body(SEVEN, true), ready, S(Step::Dispatches(0))],
                vec![(D(GrpcNotDeclared), 1)]),
        ];
        let config = format!(
            r#"{{"classification": {{"rules": [{{"class": "beta", "header": {{"name": "x-beta", "exact": "true"}}}}]}},
                "mirror": {{"cluster": "canary", "timeout_ms": {TIMEOUT_MS}, "max_body_bytes": {MAX_BODY},
                            "grpc": {{"methods": ["{GET}", "/shop.v1.Catalog/Watch*"]}},
                            "compare": {{"body": "protobuf"}}}}}}"#
        );
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
            list.iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        for (case, steps, want) in cases {
            let fake = Rc::new(Fake {
                now: Cell::new(1_000_000),
                ..Fake::default()
            });
            let mirror = crate::config::parse(config.as_bytes())
                .unwrap()
                .mirror
                .unwrap();
            let mut s = session_on(&fake, mirror, None);
            let mut stream = StreamMirror::default();
            for (i, step) in steps.iter().enumerate() {
                let at = format!("{case}, step {i} {step:?}");
                match *step {
                    Call(path, end) => {
                        let headers = pairs(&[
                            (":method", "POST"),
                            (":path", path),
                            ("content-type", "application/grpc"),
                            ("te", "trailers"),
                        ]);
                        let request = Request {
                            headers,
                            class: BETA,
                            assigned: &[],
                            class_headers: &[],
                        };
                        stream.start(&mut s, request, || Some(0), end);
                    }
                    Body(chunk, end) => {
                        stream.request_body(&mut s, chunk.len(), || Ok(chunk.to_vec()), end)
                    }
                    Canary(headers, body, trailers, upstream) => {
                        let mut h = pairs(&[(":status", "200")]);
                        h.extend(pairs(headers));
                        if upstream {
                            h.extend(pairs(&[("x-envoy-upstream-service-time", "3")]));
                        }
                        s.on_reply(FIRST_TOKEN, || h, |c| c.push(body), || pairs(trailers));
                    }
                    ResponseHeaders(headers, end) => {
                        let mut h = pairs(&[(":status", "200")]);
                        h.extend(pairs(headers));
                        stream.response_headers(&mut s, || Ok(h), end)
                    }
                    ResponseBody(chunk, end) => {
                        stream.response_body(&mut s, |c| c.push(chunk), end)
                    }
                    ResponseTrailers(trailers) => {
                        stream.response_trailers(&mut s, || Ok(pairs(trailers)))
                    }
                    ResponseTrailersUnreadable => {
                        stream.response_trailers(&mut s, || Err("NotFound".into()))
                    }
                    Log => stream.log(&mut s),
                    S(step) => run(&fake, &mut s, &[step], &at),
                    CopyHas(want) => {
                        let d = fake.dispatched.borrow();
                        let copy = &d.last().unwrap().1;
                        for (n, v) in want {
                            assert!(
                                copy.contains(&(n.to_string(), v.to_string())),
                                "{at}: {copy:?}"
                            );
                        }
                    }
                }
            }
            stream.log(&mut s);
            let want: BTreeMap<String, i64> = want.into_iter().map(|(c, v)| (stat(c), v)).collect();
            let mut got = fake.metrics.nonzero();
            got.remove(&MIRRORS_PENDING.stat_name(["canary"]));
            got.retain(|name, _| !name.starts_with(DIFFERENCES_TOTAL.name));
            assert_eq!(got, want, "{case}");
        }
    }

    /// The endpoint of a gRPC call is its method, and the element a field-number pointer.
    #[test]
    fn grpc_differences_are_counted_per_method() {
        capture_log::start();
        let config = format!(
            r#"{{"mirror": {{"cluster": "canary", "timeout_ms": {TIMEOUT_MS},
                            "grpc": {{"methods": ["{GET}"]}}, "compare": {{"body": "protobuf"}}}}}}"#
        );
        let fake = Rc::new(Fake::default());
        let mirror = crate::config::parse(config.as_bytes())
            .unwrap()
            .mirror
            .unwrap();
        let mut s = session_on(&fake, mirror, None);
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
            list.iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let mut stream = StreamMirror::default();
        let request = Request {
            headers: pairs(&[
                (":method", "POST"),
                (":path", GET),
                ("content-type", "application/grpc"),
            ]),
            class: 0,
            assigned: &[],
            class_headers: &[],
        };
        stream.start(&mut s, request, || Some(0), false);
        stream.request_body(&mut s, SEVEN.len(), || Ok(SEVEN.to_vec()), true);
        s.on_queue_ready();
        let mut h = pairs(&[(":status", "200"), ("content-type", "application/grpc")]);
        stream.response_headers(&mut s, || Ok(h.clone()), false);
        stream.response_body(&mut s, |c| c.push(SEVEN), false);
        stream.response_trailers(&mut s, || Ok(pairs(STATUS_OK)));
        h.push(("x-envoy-upstream-service-time".into(), b"1".to_vec()));
        s.on_reply(FIRST_TOKEN, || h, |c| c.push(NINE), || pairs(STATUS_OK));
        let name = DIFFERENCES_TOTAL.stat_name(["canary", GET, "/1", "mismatch"]);
        assert_eq!(
            fake.metrics.value(&name),
            Some(1),
            "{:?}",
            fake.metrics.nonzero()
        );
        assert_eq!(
            capture_log::lines(log::Level::Info),
            [format!("mirror mismatch: POST {GET} class=stable endpoint={GET} element=/1 result=body_mismatch: body /1: 7 vs 9")]
        );
    }
}
