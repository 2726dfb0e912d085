//! The metrics the filter defines: each one's name, kind and label keys, declared once in
//! the table below, and typed handles to increment them by class and label value.
//!
//! Envoy gives a Wasm metric no labels of its own: a label is cut out of the name by a
//! `stats_tags` regex in the bootstrap. Names here use Istio's tag encoding, `NAME.KEY=.=VALUE;.;`,
//! which Istio's `extraStatTags` (and the `stats_tags` in this repository's `envoy.yaml`) turn
//! into `NAME{KEY="VALUE"}` on `/stats/prometheus`. A test below holds both files to every
//! label key of the table.

use std::marker::PhantomData;

use log::{debug, warn};

use crate::classify::ClassId;
use crate::label::Label;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, kind, and label keys in the order they appear in the stat name.
#[derive(Debug)]
pub struct Metric<const N: usize> {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: [&'static str; N],
}

/// The label that carries the user class.
pub const USER_CLASS: &str = "user_class";
/// The label of `MIRROR_TOTAL`: why a request was or was not mirrored.
pub const DECISION: &str = "decision";
/// The label of `COMPARISONS_TOTAL`: how the canary's answer compared.
pub const RESULT: &str = "result";
/// The label of every mirror metric: the Envoy cluster mirrored to (`mirror.cluster`). In
/// Istio that is `outbound|PORT||HOST`, so a query can pick one canary out of a gateway that
/// mirrors several services, and two plugins in one proxy do not add to each other's series.
pub const CANARY_CLUSTER: &str = "canary_cluster";
/// The label of `DIFFERENCES_TOTAL`: the endpoint (src/endpoint.rs), or `other` past a cap.
pub const ENDPOINT: &str = "endpoint";
/// The label of `DIFFERENCES_TOTAL`: what differed (`status`, `header <name>`, a JSON pointer
/// with `*` for array indices, `body`), or `other` past a cap.
pub const ELEMENT: &str = "element";
/// The label of `DIFFERENCES_TOTAL`: `mismatch`, or `noise` where two healthy instances of the
/// primary's version differ too.
pub const KIND: &str = "kind";

/// Declares each metric as a constant and lists them all in `ALL`, from one line per metric.
macro_rules! metrics {
    ($($(#[$meta:meta])* $id:ident = $kind:ident $name:literal [$($label:expr),+];)+) => {
        $(
            $(#[$meta])*
            pub const $id: Metric<{ [$($label),+].len() }> = Metric {
                name: $name,
                kind: Kind::$kind,
                labels: [$($label),+],
            };
        )+

        /// Every metric's name, kind and label keys, for checks over all of them.
        pub const ALL: &[(&str, Kind, &[&str])] = &[$(($id.name, $id.kind, &$id.labels)),+];
    };
}

metrics! {
    /// Requests per class.
    REQUESTS_TOTAL = Counter "progressive_delivery_requests_total" [USER_CLASS];
    /// Mirror decisions per canary, class and decision.
    MIRROR_TOTAL = Counter "progressive_delivery_mirror_total" [CANARY_CLUSTER, USER_CLASS, DECISION];
    /// Comparison results per canary, class and result.
    COMPARISONS_TOTAL = Counter "progressive_delivery_comparisons_total" [CANARY_CLUSTER, USER_CLASS, RESULT];
    /// How long the primary took, from the complete request to the complete response.
    PRIMARY_DURATION_MS = Histogram "progressive_delivery_primary_duration_ms" [CANARY_CLUSTER, USER_CLASS];
    /// How long the canary took, from the dispatch of the copy to its answer.
    MIRROR_DURATION_MS = Histogram "progressive_delivery_mirror_duration_ms" [CANARY_CLUSTER, USER_CLASS];
    /// Mirrors not concluded yet; every worker's VM moves it by its own changes, so it shows
    /// the sum over workers.
    MIRRORS_PENDING = Gauge "progressive_delivery_mirrors_pending" [CANARY_CLUSTER];
    /// What became of the copies sent to the baseline, per canary, class and result.
    BASELINE_TOTAL = Counter "progressive_delivery_baseline_total" [CANARY_CLUSTER, USER_CLASS, RESULT];
    /// How long the baseline took, from the dispatch of the copy to its answer: the
    /// reference for the canary's `MIRROR_DURATION_MS`, over the same requests.
    BASELINE_DURATION_MS = Histogram "progressive_delivery_baseline_duration_ms" [CANARY_CLUSTER, USER_CLASS];
    /// Elements on which the canary's answer differed, one per element per comparison.
    DIFFERENCES_TOTAL = Counter "progressive_delivery_differences_total" [CANARY_CLUSTER, ENDPOINT, ELEMENT, KIND];
}

impl<const N: usize> Metric<N> {
    /// The stat name for one value per label key, e.g.
    /// `progressive_delivery_requests_total.user_class=.=beta;.;`.
    pub fn stat_name(&self, values: [&str; N]) -> String {
        let mut out = String::from(self.name);
        out.push('.');
        for (key, value) in self.labels.iter().zip(values) {
            out.push_str(key);
            out.push_str("=.=");
            out.push_str(value);
            out.push_str(";.;");
        }
        out
    }
}

/// The host's metric calls. Errors are the host's status, for the log.
pub trait MetricHost {
    fn define_metric(&self, kind: Kind, name: &str) -> Result<u32, String>;
    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), String>;
    fn record_metric(&self, id: u32, value: u64) -> Result<(), String>;
}

/// One defined stat. Empty when the host refused to define it: what it would count still
/// happens, just uncounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handle(Option<u32>);

impl Handle {
    pub fn define<const N: usize>(
        host: &impl MetricHost,
        metric: &Metric<N>,
        values: [&str; N],
    ) -> Handle {
        let name = metric.stat_name(values);
        Handle(
            host.define_metric(metric.kind, &name)
                .map_err(|e| warn!("cannot define metric {name}: {e}"))
                .ok(),
        )
    }

    pub fn increment(self, host: &impl MetricHost, delta: i64) {
        if let Some(id) = self.0 {
            if let Err(e) = host.increment_metric(id, delta) {
                debug!("increment_metric failed: {e}");
            }
        }
    }

    pub fn record(self, host: &impl MetricHost, value: u64) {
        if let Some(id) = self.0 {
            if let Err(e) = host.record_metric(id, value) {
                debug!("record_metric failed: {e}");
            }
        }
    }
}

/// One stat per value of the label enum `L`.
pub struct PerValue<L> {
    handles: Vec<Handle>,
    label: PhantomData<fn() -> L>,
}

impl<L: Label> PerValue<L> {
    /// `values` gives the label values of the stat for one value of `L`.
    pub fn define<'a, const N: usize>(
        host: &impl MetricHost,
        metric: &Metric<N>,
        values: impl Fn(L) -> [&'a str; N],
    ) -> Self {
        PerValue {
            handles: L::ALL
                .iter()
                .map(|l| Handle::define(host, metric, values(*l)))
                .collect(),
            label: PhantomData,
        }
    }

    pub fn get(&self, value: L) -> Handle {
        self.handles.get(value.index()).copied().unwrap_or_default()
    }
}

/// One `T` per class, index-aligned with the configuration's classes.
pub struct PerClass<T>(Vec<T>);

impl<T> PerClass<T> {
    pub fn define<'a>(
        class_names: impl IntoIterator<Item = &'a str>,
        define: impl FnMut(&'a str) -> T,
    ) -> Self {
        PerClass(class_names.into_iter().map(define).collect())
    }
}

impl PerClass<Handle> {
    pub fn get(&self, class: ClassId) -> Handle {
        self.0.get(class).copied().unwrap_or_default()
    }
}

impl<L: Label> PerClass<PerValue<L>> {
    pub fn get(&self, class: ClassId, value: L) -> Handle {
        self.0.get(class).map(|v| v.get(value)).unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::compare::Outcome;
    use crate::mirror_policy::Decision;

    /// A host keeping every stat by name, as Envoy would show it. Shared with the mirror
    /// session's tests.
    #[derive(Default)]
    pub struct FakeMetrics {
        /// Id to (kind, name).
        defined: RefCell<Vec<(Kind, String)>>,
        values: RefCell<BTreeMap<String, i64>>,
        records: RefCell<BTreeMap<String, Vec<u64>>>,
        /// Names the host refuses to define.
        pub refuse: Vec<String>,
    }

    impl FakeMetrics {
        /// A counter's or gauge's value; `None` when it was never defined.
        pub fn value(&self, name: &str) -> Option<i64> {
            self.values.borrow().get(name).copied()
        }

        pub fn records(&self, name: &str) -> Vec<u64> {
            self.records.borrow().get(name).cloned().unwrap_or_default()
        }

        pub fn defined(&self) -> Vec<(Kind, String)> {
            self.defined.borrow().clone()
        }

        /// Every counter and gauge that is not 0.
        pub fn nonzero(&self) -> BTreeMap<String, i64> {
            let values = self.values.borrow();
            values
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        }

        fn name(&self, id: u32) -> Result<String, String> {
            let defined = self.defined.borrow();
            let (_, name) = defined
                .get(id as usize)
                .ok_or_else(|| "NotFound".to_string())?;
            Ok(name.clone())
        }
    }

    impl MetricHost for FakeMetrics {
        fn define_metric(&self, kind: Kind, name: &str) -> Result<u32, String> {
            if self.refuse.iter().any(|r| r == name) {
                return Err("BadArgument".into());
            }
            let mut defined = self.defined.borrow_mut();
            if let Some(id) = defined.iter().position(|(_, n)| n == name) {
                return Ok(id as u32);
            }
            defined.push((kind, name.to_string()));
            if kind != Kind::Histogram {
                self.values.borrow_mut().insert(name.to_string(), 0);
            }
            Ok(defined.len() as u32 - 1)
        }

        fn increment_metric(&self, id: u32, delta: i64) -> Result<(), String> {
            let name = self.name(id)?;
            *self.values.borrow_mut().entry(name).or_default() += delta;
            Ok(())
        }

        fn record_metric(&self, id: u32, value: u64) -> Result<(), String> {
            let name = self.name(id)?;
            self.records
                .borrow_mut()
                .entry(name)
                .or_default()
                .push(value);
            Ok(())
        }
    }

    #[test]
    fn stat_names_are_istio_tag_encoded() {
        let c = "outbound|8080||api-canary.shop.svc.cluster.local";
        #[rustfmt::skip]
        let cases = [
            (REQUESTS_TOTAL.stat_name(["beta"]),
                "progressive_delivery_requests_total.user_class=.=beta;.;"),
            (MIRROR_TOTAL.stat_name([c, "stable", Decision::Mirrored.as_str()]),
                "progressive_delivery_mirror_total.canary_cluster=.=outbound|8080||api-canary.shop.svc.cluster.local;.;user_class=.=stable;.;decision=.=mirrored;.;"),
            (COMPARISONS_TOTAL.stat_name(["canary", "beta", Outcome::Match.as_str()]),
                "progressive_delivery_comparisons_total.canary_cluster=.=canary;.;user_class=.=beta;.;result=.=match;.;"),
            (PRIMARY_DURATION_MS.stat_name(["canary", "beta"]),
                "progressive_delivery_primary_duration_ms.canary_cluster=.=canary;.;user_class=.=beta;.;"),
            (MIRROR_DURATION_MS.stat_name(["canary", "beta"]),
                "progressive_delivery_mirror_duration_ms.canary_cluster=.=canary;.;user_class=.=beta;.;"),
            (MIRRORS_PENDING.stat_name(["canary"]),
                "progressive_delivery_mirrors_pending.canary_cluster=.=canary;.;"),
            (DIFFERENCES_TOTAL.stat_name(["canary", "GET /items/{id}", "/items/*/id", "noise"]),
                "progressive_delivery_differences_total.canary_cluster=.=canary;.;endpoint=.=GET /items/{id};.;element=.=/items/*/id;.;kind=.=noise;.;"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        let names: Vec<&str> = ALL.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(
            names,
            [
                "progressive_delivery_requests_total",
                "progressive_delivery_mirror_total",
                "progressive_delivery_comparisons_total",
                "progressive_delivery_primary_duration_ms",
                "progressive_delivery_mirror_duration_ms",
                "progressive_delivery_mirrors_pending",
                "progressive_delivery_baseline_total",
                "progressive_delivery_baseline_duration_ms",
                "progressive_delivery_differences_total",
            ]
        );
    }

    #[test]
    fn handles_by_class_and_value() {
        let host = FakeMetrics {
            refuse: vec![MIRROR_TOTAL.stat_name(["c", "b", "overloaded"])],
            ..FakeMetrics::default()
        };
        let classes = ["a", "b"];
        let table = PerClass::define(classes, |class| {
            PerValue::define(&host, &MIRROR_TOTAL, |d: Decision| ["c", class, d.as_str()])
        });
        assert_eq!(host.defined().len(), 2 * Decision::ALL.len() - 1);
        table.get(1, Decision::NotSampled).increment(&host, 1);
        table.get(1, Decision::NotSampled).increment(&host, 2);
        table.get(0, Decision::Mirrored).increment(&host, 1);
        // Refused by the host, or a class the table does not have: nothing counted.
        table.get(1, Decision::Overloaded).increment(&host, 1);
        table.get(2, Decision::Mirrored).increment(&host, 1);
        let name = |class, d: Decision| MIRROR_TOTAL.stat_name(["c", class, d.as_str()]);
        assert_eq!(
            host.nonzero(),
            BTreeMap::from([
                (name("a", Decision::Mirrored), 1),
                (name("b", Decision::NotSampled), 3)
            ])
        );
        assert_eq!(host.value(&name("b", Decision::Overloaded)), None);

        let hist = PerClass::define(classes, |class| {
            Handle::define(&host, &MIRROR_DURATION_MS, ["c", class])
        });
        hist.get(1).record(&host, 7);
        hist.get(5).record(&host, 8);
        assert_eq!(host.records(&MIRROR_DURATION_MS.stat_name(["c", "b"])), [7]);
        assert_eq!(
            host.defined().last(),
            Some(&(Kind::Histogram, MIRROR_DURATION_MS.stat_name(["c", "b"])))
        );
    }

    /// Every label key needs a `stats_tags` rule in the demo bootstrap and an `extraStatTags`
    /// entry in the Istio mesh config; without one the label stays in the metric's name and
    /// the queries in the README and Flagger templates find nothing.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn every_label_key_has_a_stats_tags_rule() {
        use yaml_rust2::{Yaml, YamlLoader};

        let load = |text: &str| YamlLoader::load_from_str(text).unwrap().remove(0);
        let envoy = load(include_str!("../envoy.yaml"));
        let rules: Vec<(&str, &str)> = envoy["stats_config"]["stats_tags"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["tag_name"].as_str().unwrap(),
                    r["regex"].as_str().unwrap(),
                )
            })
            .collect();
        let mesh = load(include_str!("../istio/mesh-config.yaml"));
        let extra: Vec<&str> = mesh["spec"]["meshConfig"]["defaultConfig"]["extraStatTags"]
            .as_vec()
            .unwrap()
            .iter()
            .filter_map(Yaml::as_str)
            .collect();

        let mut keys: Vec<&str> = ALL.iter().flat_map(|(_, _, l)| l.iter().copied()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert!(keys.contains(&USER_CLASS), "{keys:?}");
        for key in keys {
            let want = format!("({key}=\\.=(.*?);\\.;)");
            assert!(
                rules.contains(&(key, want.as_str())),
                "envoy.yaml: no stats_tags rule {{tag_name: {key}, regex: {want:?}}} in {rules:?}"
            );
            assert!(
                extra.contains(&key),
                "istio/mesh-config.yaml: {key} not in extraStatTags {extra:?}"
            );
        }
    }
}
