//! Names of the metrics the filter defines.
//!
//! Envoy gives a Wasm metric no labels of its own: a label is cut out of the name by a
//! `stats_tags` regex in the bootstrap. Names here use Istio's tag encoding, `NAME.KEY=.=VALUE;.;`,
//! which Istio's `extraStatTags` (and the `stats_tags` in this repository's `envoy.yaml`) turn
//! into `NAME{KEY="VALUE"}` on `/stats/prometheus`.

pub const REQUESTS_TOTAL: &str = "progressive_delivery_requests_total";
pub const MIRROR_TOTAL: &str = "progressive_delivery_mirror_total";
pub const COMPARISONS_TOTAL: &str = "progressive_delivery_comparisons_total";
pub const PRIMARY_DURATION_MS: &str = "progressive_delivery_primary_duration_ms";
pub const MIRROR_DURATION_MS: &str = "progressive_delivery_mirror_duration_ms";
pub const MIRRORS_PENDING: &str = "progressive_delivery_mirrors_pending";

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

/// One tagged counter name, e.g. `progressive_delivery_requests_total.user_class=.=beta;.;`.
pub fn tagged(name: &str, tags: &[(&str, &str)]) -> String {
    let mut out = String::from(name);
    out.push('.');
    for (key, value) in tags {
        out.push_str(key);
        out.push_str("=.=");
        out.push_str(value);
        out.push_str(";.;");
    }
    out
}

/// The per-class request counter.
pub fn requests_total(class: &str) -> String {
    tagged(REQUESTS_TOTAL, &[(USER_CLASS, class)])
}

/// Mirror decisions per canary, class and decision.
pub fn mirror_total(cluster: &str, class: &str, decision: &str) -> String {
    tagged(
        MIRROR_TOTAL,
        &[
            (CANARY_CLUSTER, cluster),
            (USER_CLASS, class),
            (DECISION, decision),
        ],
    )
}

/// Comparison results per canary, class and result.
pub fn comparisons_total(cluster: &str, class: &str, result: &str) -> String {
    tagged(
        COMPARISONS_TOTAL,
        &[
            (CANARY_CLUSTER, cluster),
            (USER_CLASS, class),
            (RESULT, result),
        ],
    )
}

/// A per-canary, per-class histogram.
pub fn mirror_histogram(name: &str, cluster: &str, class: &str) -> String {
    tagged(name, &[(CANARY_CLUSTER, cluster), (USER_CLASS, class)])
}

/// The pending-mirrors gauge of one canary.
pub fn mirrors_pending(cluster: &str) -> String {
    tagged(MIRRORS_PENDING, &[(CANARY_CLUSTER, cluster)])
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            requests_total("beta"),
            "progressive_delivery_requests_total.user_class=.=beta;.;"
        );
        assert_eq!(tagged("m", &[("a", "1"), ("b", "2")]), "m.a=.=1;.;b=.=2;.;");
        let c = "outbound|8080||api-canary.shop.svc.cluster.local";
        assert_eq!(
            mirror_total(c, "stable", "mirrored"),
            "progressive_delivery_mirror_total.canary_cluster=.=outbound|8080||api-canary.shop.svc.cluster.local;.;user_class=.=stable;.;decision=.=mirrored;.;"
        );
        assert_eq!(
            comparisons_total("canary", "beta", "match"),
            "progressive_delivery_comparisons_total.canary_cluster=.=canary;.;user_class=.=beta;.;result=.=match;.;"
        );
        assert_eq!(
            mirror_histogram(MIRROR_DURATION_MS, "canary", "beta"),
            "progressive_delivery_mirror_duration_ms.canary_cluster=.=canary;.;user_class=.=beta;.;"
        );
        assert_eq!(
            mirrors_pending("canary"),
            "progressive_delivery_mirrors_pending.canary_cluster=.=canary;.;"
        );
    }
}
