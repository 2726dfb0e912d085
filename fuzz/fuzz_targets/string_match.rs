//! The classifier's string matchers, on arbitrary patterns and values, through the real config
//! compile and classify: a rule with one header condition, one request per value.
//!
//! Input: first line `KIND PATTERN` (KIND one of exact, prefix, suffix, contains, regex, with
//! `-i` for ignore_case: `regex-i .*firefox/.*`), then one header value per line.
//!
//! The answer must be what the matcher means, checked with the plainest code: above all for
//! regexes, where `string_match::required_literal` rejects values without the literal every
//! match contains before the regex engine runs. That shortcut must never turn a match into a
//! miss; here the regex runs on its own, without it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use progressive_delivery::classify::Source;
use progressive_delivery::config::{self, REGEX_SIZE_LIMIT};
use regex_lite::RegexBuilder;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (kind, pattern) = match first.iter().position(|&b| b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (first, &b""[..]),
    };
    let (kind, ignore_case) = match kind.strip_suffix(b"-i") {
        Some(k) => (k, true),
        None => (kind, false),
    };
    let kind = match kind {
        b"exact" | b"prefix" | b"suffix" | b"contains" => {
            std::str::from_utf8(kind).unwrap_or("regex")
        }
        _ => "regex",
    };
    let pattern = String::from_utf8_lossy(pattern).into_owned();

    let mut condition = serde_json::Map::new();
    condition.insert("name".into(), "v".into());
    condition.insert(kind.into(), pattern.clone().into());
    condition.insert("ignore_case".into(), ignore_case.into());
    let json =
        serde_json::json!({"classification": {"rules": [{"class": "hit", "header": condition}]}});
    let Ok(c) = config::parse(json.to_string().as_bytes()) else {
        // Only a regex can be refused, and only one that does not compile on its own either.
        assert_eq!(kind, "regex");
        assert!(
            anchored(&pattern, ignore_case).is_none(),
            "config refused regex {pattern:?}"
        );
        return;
    };
    let cl = c.classification;
    let regex = (kind == "regex").then(|| {
        anchored(&pattern, ignore_case)
            .unwrap_or_else(|| panic!("config took regex {pattern:?}, which does not compile"))
    });
    let p = pattern.as_bytes();
    let eq = |a: &[u8], b: &[u8]| {
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };

    for value in lines {
        let out = cl.classify(&[("v".to_string(), value.to_vec())], || None);
        let matched = out.source == Source::Rule(0);
        let want = match kind {
            "exact" => eq(value, p),
            "prefix" => value.len() >= p.len() && eq(&value[..p.len()], p),
            "suffix" => value.len() >= p.len() && eq(&value[value.len() - p.len()..], p),
            "contains" => (0..=value.len())
                .any(|i| value.len() - i >= p.len() && eq(&value[i..i + p.len()], p)),
            _ => std::str::from_utf8(value)
                .is_ok_and(|s| regex.as_ref().is_some_and(|r| r.is_match(s))),
        };
        assert_eq!(
            matched, want,
            "{kind} {pattern:?} (ignore_case {ignore_case}) on {value:?}"
        );
    }
});

/// The pattern as a full match (RE2 FullMatch, as Envoy matches), without the literal
/// prefilter; `None` for a pattern Envoy would refuse. Anchoring by wrapping is only a full
/// match for a pattern that is valid on its own: `a)|(b` would escape the wrapper.
fn anchored(pattern: &str, ignore_case: bool) -> Option<regex_lite::Regex> {
    let build = |p: &str| {
        RegexBuilder::new(p)
            .case_insensitive(ignore_case)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .ok()
    };
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}
