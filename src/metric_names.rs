//! Names of the metrics the filter defines.
//!
//! Envoy gives a Wasm metric no labels of its own: a label is cut out of the name by a
//! `stats_tags` regex in the bootstrap. Names here use Istio's tag encoding, `NAME.KEY=.=VALUE;.;`,
//! which Istio's `extraStatTags` (and the `stats_tags` in this repository's `envoy.yaml`) turn
//! into `NAME{KEY="VALUE"}` on `/stats/prometheus`.

pub const REQUESTS_TOTAL: &str = "progressive_delivery_requests_total";

/// The label that carries the user class.
pub const USER_CLASS: &str = "user_class";

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
    }
}
