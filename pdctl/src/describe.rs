//! One-line descriptions of compiled rules, in the config's own words:
//! `header x-beta exact "true"`, `bucket cookie uid 5% seed "checkout-v2"`.

use progressive_delivery::classify::{Condition, Rule};
use progressive_delivery::request::BucketKey;
use progressive_delivery::string_match::{Matcher, StringMatch};

/// The rule's conditions, joined with `and` (all must hold).
pub fn rule(r: &Rule) -> String {
    r.conditions
        .iter()
        .map(condition)
        .collect::<Vec<_>>()
        .join(" and ")
}

pub fn condition(c: &Condition) -> String {
    match c {
        Condition::Match {
            part,
            name,
            matcher,
        } => format!("{} {name} {}", part.key(), matcher_text(matcher)),
        Condition::Bucket(b) => format!(
            "bucket {} {}% seed {:?}",
            key(&b.key),
            percent(b.basis_points),
            b.seed
        ),
    }
}

pub fn key(k: &BucketKey) -> String {
    match k {
        BucketKey::Cookie(name) => format!("cookie {name}"),
        BucketKey::Header(name) => format!("header {name}"),
    }
}

/// Basis points as the percent the config gives (`500` is `5`, `50` is `0.5`).
pub fn percent(basis_points: u32) -> String {
    format!("{}", f64::from(basis_points) / 100.0)
}

fn matcher_text(m: &Matcher) -> String {
    let quoted = |v: &[u8]| format!("{:?}", String::from_utf8_lossy(v));
    let text = match m.kind() {
        StringMatch::Exact(v) => format!("exact {}", quoted(v)),
        StringMatch::Prefix(v) => format!("prefix {}", quoted(v)),
        StringMatch::Suffix(v) => format!("suffix {}", quoted(v)),
        StringMatch::Contains(v) => format!("contains {}", quoted(v)),
        StringMatch::Regex { re, .. } => {
            // The config anchors the pattern as `^(?:PATTERN)$`; the user wrote PATTERN.
            let anchored = re.as_str();
            let pattern = anchored
                .strip_prefix("^(?:")
                .and_then(|p| p.strip_suffix(")$"))
                .unwrap_or(anchored);
            format!("regex {pattern:?}")
        }
        StringMatch::Present(want) => format!("present {want}"),
    };
    if m.ignore_case() {
        format!("{text} ignore_case")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use progressive_delivery::config::parse;

    #[test]
    fn rules_in_the_configs_words() {
        let cases = [
            (
                r#"{"class": "b", "header": {"name": "X-Beta", "exact": "true"}}"#,
                r#"header x-beta exact "true""#,
            ),
            (
                r#"{"class": "b", "cookie": {"name": "type", "prefix": "in", "ignore_case": true}}"#,
                r#"cookie type prefix "in" ignore_case"#,
            ),
            (
                r#"{"class": "b", "query": {"name": "beta", "present": true}}"#,
                "query beta present true",
            ),
            (
                r#"{"class": "b", "header": {"name": "user-agent", "regex": ".*Firefox/.*"}}"#,
                r#"header user-agent regex ".*Firefox/.*""#,
            ),
            (
                r#"{"class": "b", "header": {"name": "h", "suffix": "x\"y"}}"#,
                r#"header h suffix "x\"y""#,
            ),
            (
                r#"{"class": "b", "header": {"name": "h", "contains": "z"}}"#,
                r#"header h contains "z""#,
            ),
            (
                r#"{"class": "b", "bucket": {"cookie": "uid", "percent": 5, "seed": "s"}}"#,
                r#"bucket cookie uid 5% seed "s""#,
            ),
            (
                r#"{"class": "b", "bucket": {"header": "x-id", "percent": 0.25}}"#,
                r#"bucket header x-id 0.25% seed """#,
            ),
            (
                r#"{"class": "b", "header": {"name": "x-a", "exact": "1"}, "cookie": {"name": "c", "present": false}}"#,
                r#"header x-a exact "1" and cookie c present false"#,
            ),
        ];
        for (json, want) in cases {
            let config =
                parse(format!(r#"{{"classification": {{"rules": [{json}]}}}}"#).as_bytes())
                    .unwrap();
            assert_eq!(rule(&config.classification.rules[0]), want, "{json}");
        }
    }
}
