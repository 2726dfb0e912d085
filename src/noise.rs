//! What differs between two healthy instances of the same version, learned per endpoint, so a
//! canary is not blamed for it (Diffy's noise cancellation).
//!
//! Each comparison of the primary with a baseline (another instance of the primary's version)
//! is an observation: the elements on which the two differed, usually none. An element that
//! differs in at least `threshold` of an endpoint's recent observations is noise there: a
//! request id, a timestamp, a hostname. A canary whose answer differs from the baseline only on
//! noise is not a mismatch; one that differs on anything else is.
//!
//! An element is a string: [`STATUS`], [`GRPC_STATUS`], [`header_element`], a JSON pointer
//! whose array indices are `*` (`/items/*/id`, as `json_diff` reports it), a protobuf
//! field-number pointer (`/2/*/1`, as `protobuf_diff` reports it), or [`BODY`] for a body
//! compared as bytes.
//! Everything is bounded: endpoints, elements per endpoint, elements taken from one
//! observation; what does not fit is counted in [`Shed`] and never treated as noise, so a full
//! table errs towards reporting a mismatch rather than hiding one.

use std::collections::BTreeMap;

use xxhash_rust::xxh64::Xxh64;

/// The element of the response status.
pub const STATUS: &str = "status";
/// The element of a gRPC answer's status (`grpc-status`).
pub const GRPC_STATUS: &str = "grpc-status";
/// The element of a whole body that is compared as bytes, not as JSON.
pub const BODY: &str = "body";

/// The element of one response header.
pub fn header_element(name: &str) -> String {
    format!("header {}", name.to_ascii_lowercase())
}

/// Longer elements are cut to this many bytes, alike when observed and when judged: a JSON
/// key can be any length, and one element must not hold kilobytes.
pub const MAX_ELEMENT_BYTES: usize = 200;

/// The largest `window`: each element keeps one bit per observation in it.
pub const MAX_WINDOW: u32 = 10_000;

/// The threshold is compared in millionths, so a boundary such as 1 in 20 at 0.05 is exact
/// rather than at the mercy of float rounding.
const PPM: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSettings {
    /// Observations of an endpoint before anything there counts as noise.
    pub min_samples: u32,
    /// The fraction of the window's observations in which an element must differ to be noise.
    pub threshold: f64,
    /// How many of an endpoint's latest observations count.
    pub window: u32,
    /// Endpoints learned per worker; observations of more are shed.
    pub max_endpoints: usize,
    /// Elements tracked per endpoint; new ones past it are shed.
    pub max_elements: usize,
    /// Elements taken from one observation; the rest are shed.
    pub max_elements_per_observation: usize,
}

impl Default for NoiseSettings {
    fn default() -> Self {
        NoiseSettings {
            min_samples: 5,
            threshold: 0.05,
            window: 200,
            max_endpoints: 100,
            max_elements: 64,
            max_elements_per_observation: 32,
        }
    }
}

/// A setting out of range: `field` is the `NoiseSettings` field, for the config layer to map
/// to its own path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub field: &'static str,
    pub message: String,
}

impl NoiseSettings {
    /// Every setting out of range, in field order. Settings that fail still work (clamped
    /// into range), but not as the operator meant.
    pub fn validate(&self) -> Result<(), Vec<SettingsError>> {
        let mut errors = Vec::new();
        let mut error = |field, message| errors.push(SettingsError { field, message });
        if self.min_samples == 0 {
            error("min_samples", "0 is not at least 1".to_string());
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            error(
                "threshold",
                format!(
                    "{} is not a fraction in (0, 1], e.g. 0.05 for 5%",
                    self.threshold
                ),
            );
        }
        if self.window > MAX_WINDOW || self.window < self.min_samples.max(1) {
            error(
                "window",
                format!(
                    "{} must be from min_samples ({}) to {MAX_WINDOW}",
                    self.window, self.min_samples
                ),
            );
        }
        for (field, value) in [
            ("max_endpoints", self.max_endpoints),
            ("max_elements", self.max_elements),
            (
                "max_elements_per_observation",
                self.max_elements_per_observation,
            ),
        ] {
            if value == 0 {
                error(field, "0 is not at least 1".to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn window(&self) -> u32 {
        self.window.clamp(1, MAX_WINDOW)
    }

    fn min_samples(&self) -> u64 {
        u64::from(self.min_samples.max(1))
    }

    fn threshold_ppm(&self) -> u64 {
        // `as` saturates, and a NaN is 0; either way clamped to a fraction.
        ((self.threshold * 1e6).round() as u64).clamp(1, PPM)
    }
}

/// A fingerprint of whatever decides what the elements are (the comparison settings: ignore
/// patterns, headers compared, body mode...), for [`NoiseLearner::reconfigured`]. Each part is
/// length-prefixed, so `["ab", "c"]` and `["a", "bc"]` differ.
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut hash = Xxh64::new(0);
    for part in parts {
        hash.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
        hash.update(part);
    }
    hash.digest()
}

/// An element became noise, or stopped being noise, for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub element: String,
    pub change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Learned,
    Forgotten,
}

/// How the canary's answer compares, given the baseline's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement<'a> {
    /// No difference.
    Match,
    /// Differences only where two healthy instances differ too.
    Noise,
    /// The first difference, in the order given, that is not noise; `index` is its position.
    Mismatch { index: usize, element: &'a str },
}

/// What did not fit, since the learner was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shed {
    /// Observations of an endpoint past `max_endpoints`.
    pub endpoints: u64,
    /// New elements of an endpoint past `max_elements`.
    pub elements: u64,
    /// Elements of one observation past `max_elements_per_observation`.
    pub observation_elements: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Endpoint {
    observations: u64,
    /// Sorted, so transitions come in the same order on every worker.
    elements: BTreeMap<Box<str>, Element>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    /// One bit per observation in the window, at `observation % window`: set if it differed.
    differed_at: Vec<u64>,
    /// The bits set.
    differed: u64,
    noisy: bool,
}

/// Noise learned per endpoint, for one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseLearner {
    settings: NoiseSettings,
    comparison: u64,
    endpoints: BTreeMap<Box<str>, Endpoint>,
    shed: Shed,
}

impl NoiseLearner {
    /// `comparison` is the [`fingerprint`] of the comparison settings.
    pub fn new(settings: NoiseSettings, comparison: u64) -> Self {
        NoiseLearner {
            settings,
            comparison,
            endpoints: BTreeMap::new(),
            shed: Shed::default(),
        }
    }

    /// After a config push: what was learned is kept only if neither these settings nor the
    /// comparison changed, since either changes what an element is or when it is noise. The
    /// flag says whether it was kept.
    pub fn reconfigured(self, settings: NoiseSettings, comparison: u64) -> (Self, bool) {
        if self.keeps_state_for(&settings, comparison) {
            (self, true)
        } else {
            (NoiseLearner::new(settings, comparison), false)
        }
    }

    pub fn keeps_state_for(&self, settings: &NoiseSettings, comparison: u64) -> bool {
        self.settings == *settings && self.comparison == comparison
    }

    pub fn settings(&self) -> &NoiseSettings {
        &self.settings
    }

    pub fn shed(&self) -> Shed {
        self.shed
    }

    /// Endpoints learned.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Records one comparison of the primary with the baseline on `endpoint`: the elements on
    /// which they differed, possibly none. Returns the elements that became, or stopped being,
    /// noise there.
    pub fn observe<S: AsRef<str>>(&mut self, endpoint: &str, differing: &[S]) -> Vec<Transition> {
        let settings = &self.settings;
        let shed = &mut self.shed;
        if !self.endpoints.contains_key(endpoint) {
            if self.endpoints.len() >= settings.max_endpoints {
                shed.endpoints = shed.endpoints.saturating_add(1);
                return Vec::new();
            }
            self.endpoints.insert(endpoint.into(), Endpoint::default());
        }
        let Some(state) = self.endpoints.get_mut(endpoint) else {
            return Vec::new();
        };
        let window = settings.window();
        let slot = state
            .observations
            .checked_rem(u64::from(window))
            .unwrap_or(0);
        // The observation a window ago leaves it, making room for this one.
        for element in state.elements.values_mut() {
            if element.clear(slot) {
                element.differed = element.differed.saturating_sub(1);
            }
        }
        let mut recorded = 0usize;
        for name in differing {
            let name = cut(name.as_ref());
            if state.elements.get(name).is_some_and(|e| e.is_set(slot)) {
                continue;
            }
            if recorded >= settings.max_elements_per_observation {
                shed.observation_elements = shed.observation_elements.saturating_add(1);
                continue;
            }
            if !state.elements.contains_key(name) {
                if state.elements.len() >= settings.max_elements {
                    shed.elements = shed.elements.saturating_add(1);
                    continue;
                }
                state.elements.insert(name.into(), Element::new(window));
            }
            let Some(element) = state.elements.get_mut(name) else {
                continue;
            };
            element.set(slot);
            element.differed = element.differed.saturating_add(1);
            recorded = recorded.saturating_add(1);
        }
        state.observations = state.observations.saturating_add(1);

        let samples = state.observations.min(u64::from(window));
        let enough = state.observations >= settings.min_samples();
        let ppm = settings.threshold_ppm();
        let mut transitions = Vec::new();
        state.elements.retain(|name, element| {
            let noisy = enough
                && element.differed > 0
                && element.differed.saturating_mul(PPM) >= ppm.saturating_mul(samples);
            if noisy != element.noisy {
                element.noisy = noisy;
                transitions.push(Transition {
                    element: name.to_string(),
                    change: if noisy {
                        Change::Learned
                    } else {
                        Change::Forgotten
                    },
                });
            }
            // Nothing left to remember: it did not differ within the window.
            element.differed > 0
        });
        transitions
    }

    /// Whether the canary's differences from the baseline on `endpoint`, given in comparison
    /// order, are all noise. Before the endpoint has `min_samples` observations nothing is.
    pub fn judge<'a, S: AsRef<str>>(&self, endpoint: &str, differing: &'a [S]) -> Judgement<'a> {
        let state = self
            .endpoints
            .get(endpoint)
            .filter(|s| s.observations >= self.settings.min_samples());
        let not_noise = differing.iter().enumerate().find(|(_, name)| {
            state
                .and_then(|s| s.elements.get(cut(name.as_ref())))
                .is_none_or(|e| !e.noisy)
        });
        match not_noise {
            Some((index, name)) => Judgement::Mismatch {
                index,
                element: name.as_ref(),
            },
            None if differing.is_empty() => Judgement::Match,
            None => Judgement::Noise,
        }
    }

    /// The elements that are noise for `endpoint` now, in sorted order.
    pub fn noisy(&self, endpoint: &str) -> Vec<&str> {
        self.endpoints
            .get(endpoint)
            .map(|s| {
                s.elements
                    .iter()
                    .filter(|(_, e)| e.noisy)
                    .map(|(name, _)| &**name)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Element {
    fn new(window: u32) -> Self {
        Element {
            differed_at: vec![0; usize::try_from(window.div_ceil(64)).unwrap_or(0)],
            differed: 0,
            noisy: false,
        }
    }

    fn bit(slot: u64) -> (usize, u64) {
        let word = usize::try_from(slot / 64).unwrap_or(usize::MAX);
        (
            word,
            1u64.rotate_left(u32::try_from(slot % 64).unwrap_or(0)),
        )
    }

    fn is_set(&self, slot: u64) -> bool {
        let (word, mask) = Self::bit(slot);
        self.differed_at.get(word).is_some_and(|w| w & mask != 0)
    }

    fn set(&mut self, slot: u64) {
        let (word, mask) = Self::bit(slot);
        if let Some(w) = self.differed_at.get_mut(word) {
            *w |= mask;
        }
    }

    /// Clears the bit; whether it was set.
    fn clear(&mut self, slot: u64) -> bool {
        let (word, mask) = Self::bit(slot);
        match self.differed_at.get_mut(word) {
            Some(w) if *w & mask != 0 => {
                *w &= !mask;
                true
            }
            _ => false,
        }
    }
}

/// At most [`MAX_ELEMENT_BYTES`], never inside a character.
fn cut(element: &str) -> &str {
    let mut end = element.len().min(MAX_ELEMENT_BYTES);
    while !element.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    element.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const NONE: &[&str] = &[];

    fn learner(min_samples: u32, threshold: f64, window: u32) -> NoiseLearner {
        NoiseLearner::new(
            NoiseSettings {
                min_samples,
                threshold,
                window,
                ..NoiseSettings::default()
            },
            0,
        )
    }

    fn learned(element: &str) -> Transition {
        Transition {
            element: element.to_string(),
            change: Change::Learned,
        }
    }

    fn forgotten(element: &str) -> Transition {
        Transition {
            element: element.to_string(),
            change: Change::Forgotten,
        }
    }

    /// A deterministic coin, so "50% of the time" is the same sequence on every run.
    struct Coin(u64);

    impl Coin {
        fn flip(&mut self) -> bool {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 & 1 == 1
        }
    }

    /// Default settings, realistic noise: a request id that differs every time, a timestamp
    /// half the time, a stable balance never. Each is judged on the canary after each
    /// observation; by the 20th request of the endpoint both noisy fields are noise and the
    /// balance still counts.
    #[test]
    fn converges_on_realistic_noise() {
        let mut l = NoiseLearner::new(NoiseSettings::default(), 0);
        let mut coin = Coin(0x2545_f491_4f6c_dd1d);
        let mut learned_at = BTreeMap::new();
        for request in 1..=20 {
            let mut differing = vec!["header x-request-id"];
            if coin.flip() {
                differing.push("/meta/timestamp");
            }
            for t in l.observe("GET /api/accounts/{id}", &differing) {
                assert_eq!(t.change, Change::Learned);
                learned_at.insert(t.element, request);
            }
        }
        assert_eq!(learned_at.get("header x-request-id"), Some(&5));
        assert!(learned_at.get("/meta/timestamp").is_some_and(|&r| r <= 20));
        assert_eq!(learned_at.len(), 2);
        let endpoint = "GET /api/accounts/{id}";
        let cases: &[(&[&str], Judgement)] = &[
            (&[], Judgement::Match),
            (&["header x-request-id"], Judgement::Noise),
            (
                &["header x-request-id", "/meta/timestamp"],
                Judgement::Noise,
            ),
            (
                &["header x-request-id", "/balance"],
                Judgement::Mismatch {
                    index: 1,
                    element: "/balance",
                },
            ),
        ];
        for (differing, want) in cases {
            assert_eq!(l.judge(endpoint, differing), *want, "{differing:?}");
        }
        // Learned for that endpoint only.
        assert_eq!(
            l.judge("GET /other", &["header x-request-id"]),
            Judgement::Mismatch {
                index: 0,
                element: "header x-request-id"
            }
        );
    }

    /// Step by step: what each observation returns and what is noise after it.
    #[test]
    fn learns_and_forgets_in_window() {
        // Noise at 2 of the last 4, once 3 observations are in.
        let mut l = learner(3, 0.5, 4);
        let steps: &[(&[&str], &[Transition], &[&str])] = &[
            (&["a", "b"], &[], &[]),
            (&["a"], &[], &[]),
            // Three observations: a 2/3, b 1/3.
            (&[], &[learned("a")], &["a"]),
            // a 2/4, b 1/4, c 1/4.
            (&["c"], &[], &["a"]),
            // The first observation leaves the window: a 1/4, b gone, c 2/4.
            (&["c"], &[forgotten("a"), learned("c")], &["c"]),
            // a 0/4: no longer tracked; c 2/4, d 1/4.
            (&["d"], &[], &["c"]),
            (&["d"], &[learned("d")], &["c", "d"]),
            // c's first difference leaves: 1/4.
            (&[], &[forgotten("c")], &["d"]),
            (&[], &[], &["d"]),
            (&[], &[forgotten("d")], &[]),
            // A field that becomes stable is checked again; one that comes back is noise again.
            (&["c"], &[], &[]),
            (&["c"], &[learned("c")], &["c"]),
        ];
        for (i, (differing, transitions, noisy)) in steps.iter().enumerate() {
            assert_eq!(l.observe("e", differing), *transitions, "step {i}");
            assert_eq!(l.noisy("e"), *noisy, "step {i}");
        }
        assert_eq!(l.endpoints["e"].elements.len(), 1);
    }

    /// With a long window, the default threshold of 5% forgets an element that stopped
    /// differing once it is under 1 in 20 of the window: after 20 times as many observations.
    #[test]
    fn forgets_at_threshold() {
        let mut l = learner(5, 0.05, 200);
        let mut changes = Vec::new();
        for i in 1..=300 {
            let differing: &[&str] = if i <= 3 { &["x"] } else { &[] };
            for t in l.observe("e", differing) {
                changes.push((i, t.change));
            }
        }
        // 3 of 5 at the 5th; 3 of 60 is 5%, 3 of 61 is less.
        assert_eq!(changes, [(5, Change::Learned), (61, Change::Forgotten)]);
    }

    #[test]
    fn min_samples_gate() {
        let mut l = learner(5, 0.05, 200);
        for i in 1..=5 {
            let before = l.judge("e", &["x"]);
            assert_eq!(
                before,
                Judgement::Mismatch {
                    index: 0,
                    element: "x"
                },
                "before observation {i}"
            );
            assert_eq!(l.judge("e", NONE), Judgement::Match);
            let t = l.observe("e", &["x"]);
            assert_eq!(t.is_empty(), i < 5, "observation {i}");
        }
        assert_eq!(l.judge("e", &["x"]), Judgement::Noise);
        assert_eq!(
            l.judge("e", &["x", "y"]),
            Judgement::Mismatch {
                index: 1,
                element: "y"
            }
        );
    }

    /// Primary, baseline and canary: the canary is judged on how it differs from the
    /// baseline, once primary and baseline have shown what differs between healthy instances.
    #[test]
    fn three_way() {
        let mut l = learner(5, 0.05, 200);
        for _ in 0..10 {
            l.observe("e", &["header date", "/id"]);
        }
        let cases: &[(&[&str], Judgement)] = &[
            // primary = baseline = canary
            (&[], Judgement::Match),
            // the canary differs only on noise
            (&["/id"], Judgement::Noise),
            (&["header date", "/id"], Judgement::Noise),
            // the canary differs on a stable element: that one, first in the order given
            (
                &[STATUS, "header date"],
                Judgement::Mismatch {
                    index: 0,
                    element: STATUS,
                },
            ),
            (
                &["header date", "/items/*/price", "/id", BODY],
                Judgement::Mismatch {
                    index: 1,
                    element: "/items/*/price",
                },
            ),
        ];
        for (canary, want) in cases {
            assert_eq!(l.judge("e", canary), *want, "{canary:?}");
        }
        let owned: Vec<String> = vec![header_element("Date"), "/name".to_string()];
        assert_eq!(
            l.judge("e", &owned),
            Judgement::Mismatch {
                index: 1,
                element: "/name"
            }
        );
    }

    #[test]
    fn caps_shed_and_count() {
        let mut l = NoiseLearner::new(
            NoiseSettings {
                min_samples: 1,
                threshold: 0.5,
                window: 10,
                max_endpoints: 2,
                max_elements: 3,
                max_elements_per_observation: 2,
            },
            0,
        );
        let steps: &[(&str, &[&str], Shed, &[&str])] = &[
            // endpoint, differing, shed after, noisy for the endpoint after
            (
                "a",
                &["x", "y", "z"],
                Shed {
                    endpoints: 0,
                    elements: 0,
                    observation_elements: 1,
                },
                &["x", "y"],
            ),
            // Duplicates take no room.
            (
                "a",
                &["x", "x", "x", "z"],
                Shed {
                    endpoints: 0,
                    elements: 0,
                    observation_elements: 1,
                },
                &["x", "y", "z"],
            ),
            // A 4th element does not fit; the 3 known ones still count: y and z 1 in 3.
            (
                "a",
                &["w", "x"],
                Shed {
                    endpoints: 0,
                    elements: 1,
                    observation_elements: 1,
                },
                &["x"],
            ),
            (
                "b",
                &["x"],
                Shed {
                    endpoints: 0,
                    elements: 1,
                    observation_elements: 1,
                },
                &["x"],
            ),
            (
                "c",
                &["x"],
                Shed {
                    endpoints: 1,
                    elements: 1,
                    observation_elements: 1,
                },
                &[],
            ),
            (
                "c",
                NONE,
                Shed {
                    endpoints: 2,
                    elements: 1,
                    observation_elements: 1,
                },
                &[],
            ),
        ];
        for (i, (endpoint, differing, shed, noisy)) in steps.iter().enumerate() {
            l.observe(endpoint, differing);
            assert_eq!(l.shed(), *shed, "step {i}");
            assert_eq!(l.noisy(endpoint), *noisy, "step {i}");
        }
        assert_eq!(l.len(), 2);
        // What was shed is never noise.
        assert_eq!(
            l.judge("a", &["x", "w"]),
            Judgement::Mismatch {
                index: 1,
                element: "w"
            }
        );
        assert_eq!(
            l.judge("c", &["x"]),
            Judgement::Mismatch {
                index: 0,
                element: "x"
            }
        );
    }

    #[test]
    fn many_distinct_stay_bounded() {
        let mut l = NoiseLearner::new(NoiseSettings::default(), 0);
        for i in 0..10_000 {
            let endpoint = format!("GET /e{}", i % 150);
            let differing = [format!("/f{i}"), format!("/g{}", i % 7)];
            l.observe(&endpoint, &differing);
        }
        assert_eq!(l.len(), 100);
        assert!(l
            .endpoints
            .values()
            .all(|e| e.elements.len() <= NoiseSettings::default().max_elements));
        let shed = l.shed();
        // Endpoints 100 to 149, 66 observations each.
        assert_eq!(shed.endpoints, 50 * 66);
        assert!(shed.elements > 0);
    }

    #[test]
    fn long_elements_are_cut_alike() {
        let mut l = learner(1, 1.0, 5);
        let long = format!("/{}", "é".repeat(150));
        l.observe("e", &[&long]);
        assert_eq!(l.noisy("e"), [cut(&long)]);
        assert_eq!(cut(&long).len(), 199);
        assert_eq!(l.judge("e", &[&long]), Judgement::Noise);
        // The same up to the cut: the same element.
        let other = format!("{}ü and more", cut(&long));
        assert_eq!(l.judge("e", &[&other]), Judgement::Noise);
    }

    #[test]
    fn reconfigured() {
        let settings = NoiseSettings::default();
        let comparison = fingerprint(&[b"ignore", b"/ts"]);
        let mut l = NoiseLearner::new(settings.clone(), comparison);
        for _ in 0..5 {
            l.observe("e", &["/id"]);
        }
        let tighter = NoiseSettings {
            threshold: 0.1,
            ..settings.clone()
        };
        let cases: &[(&NoiseSettings, u64, bool)] = &[
            (&settings, comparison, true),
            (&settings, fingerprint(&[b"ignore", b"/ts", b"/id"]), false),
            (&settings, fingerprint(&[b"ignor", b"e/ts"]), false),
            (&tighter, comparison, false),
        ];
        for (new, fp, kept) in cases {
            let (after, was_kept) = l.clone().reconfigured((*new).clone(), *fp);
            assert_eq!(was_kept, *kept, "{new:?} {fp}");
            assert_eq!(after.noisy("e").len(), usize::from(*kept), "{new:?} {fp}");
            assert_eq!(after.settings(), *new);
            assert!(after.keeps_state_for(new, *fp));
        }
        assert_eq!(fingerprint(&[]), fingerprint(&[]));
        assert_ne!(fingerprint(&[]), fingerprint(&[b""]));
    }

    #[test]
    fn validate() {
        let d = NoiseSettings::default();
        assert_eq!(d.validate(), Ok(()));
        let cases: &[(NoiseSettings, &[(&str, &str)])] = &[
            (
                NoiseSettings {
                    min_samples: 0,
                    ..d.clone()
                },
                &[("min_samples", "0 is not at least 1")],
            ),
            (
                NoiseSettings {
                    threshold: 0.0,
                    ..d.clone()
                },
                &[(
                    "threshold",
                    "0 is not a fraction in (0, 1], e.g. 0.05 for 5%",
                )],
            ),
            (
                NoiseSettings {
                    threshold: 1.5,
                    ..d.clone()
                },
                &[(
                    "threshold",
                    "1.5 is not a fraction in (0, 1], e.g. 0.05 for 5%",
                )],
            ),
            (
                NoiseSettings {
                    threshold: f64::NAN,
                    ..d.clone()
                },
                &[(
                    "threshold",
                    "NaN is not a fraction in (0, 1], e.g. 0.05 for 5%",
                )],
            ),
            (
                NoiseSettings {
                    window: 4,
                    ..d.clone()
                },
                &[("window", "4 must be from min_samples (5) to 10000")],
            ),
            (
                NoiseSettings {
                    window: 10_001,
                    ..d.clone()
                },
                &[("window", "10001 must be from min_samples (5) to 10000")],
            ),
            (
                NoiseSettings {
                    max_endpoints: 0,
                    max_elements: 0,
                    max_elements_per_observation: 0,
                    ..d.clone()
                },
                &[
                    ("max_endpoints", "0 is not at least 1"),
                    ("max_elements", "0 is not at least 1"),
                    ("max_elements_per_observation", "0 is not at least 1"),
                ],
            ),
        ];
        for (settings, want) in cases {
            let got = settings.validate().unwrap_err();
            let got: Vec<(&str, &str)> =
                got.iter().map(|e| (e.field, e.message.as_str())).collect();
            assert_eq!(got, *want, "{settings:?}");
        }
        for (ok_threshold, ok_window) in [(1.0, 5), (1e-6, 10_000)] {
            let s = NoiseSettings {
                threshold: ok_threshold,
                window: ok_window,
                ..d.clone()
            };
            assert_eq!(s.validate(), Ok(()));
        }
    }

    /// Settings that fail validation still give bounded, panic-free behaviour.
    #[test]
    fn invalid_settings_do_not_panic() {
        for (min_samples, threshold, window) in [
            (0, 0.0, 0),
            (0, f64::NAN, 0),
            (u32::MAX, -1.0, u32::MAX),
            (1, f64::INFINITY, 1),
        ] {
            let mut l = learner(min_samples, threshold, window);
            for _ in 0..50 {
                l.observe("e", &["x"]);
                l.judge("e", &["x"]);
            }
            let words = window.clamp(1, MAX_WINDOW).div_ceil(64) as usize;
            let elements = &l.endpoints["e"].elements;
            assert_eq!(elements.len(), 1);
            assert_eq!(elements["x"].differed_at.len(), words);
        }
    }

    #[test]
    fn header_elements() {
        assert_eq!(header_element("X-Request-Id"), "header x-request-id");
        assert_eq!(header_element("date"), "header date");
    }
}
