//! Structural comparison of a primary's and a canary's JSON response bodies.
//!
//! `first_difference` reports only the first difference, so a mismatch log line stays short
//! and two runs over the same bodies name the same place: object keys are walked in sorted
//! byte order, never in the order either side happened to send them. `all_differences` lists
//! them all, up to a bound, in the same order, for learning which fields are noise. Fields
//! that legitimately differ between the two (timestamps, request ids) are skipped by
//! `compare.ignore` patterns.
//!
//! A pattern is an RFC 6901 JSON Pointer in which a segment `*` matches any one array index
//! or object key. So a literal key named `*` cannot be addressed exactly: `/*` also ignores
//! every other key at that level. RFC 6901 has no escape for `*`, and a key of that name is
//! rare enough not to warrant a syntax of our own.

use std::fmt::{self, Write as _};
use std::ops::ControlFlow;

use serde_json::{Number, Value};

/// Deeper than serde_json's own parser limit (128), so real bodies never reach it; it only
/// bounds the recursion for values built some other way.
const MAX_DEPTH: usize = 256;

/// Rendered values are cut so one huge field cannot flood the log line.
const MAX_RENDERED_BYTES: usize = 80;

const ABSENT: &str = "(absent)";

/// A JSON Pointer (RFC 6901) from config `compare.ignore`, where a segment `*` matches any
/// array index or object key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePattern {
    text: String,
    segments: Vec<PatternSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternSegment {
    Any,
    Exact(String),
}

impl IgnorePattern {
    /// Errors are a message without the field path, which the caller prefixes.
    pub fn parse(pointer: &str) -> Result<IgnorePattern, String> {
        if pointer.is_empty() {
            return Err(format!(
                "{pointer:?} would ignore the whole body; use compare.body \"none\" to skip body comparison"
            ));
        }
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(format!(
                "{pointer:?} is not a JSON Pointer: it must start with '/' (e.g. {:?})",
                format!("/{pointer}")
            ));
        };
        let segments = rest
            .split('/')
            .map(|raw| match raw {
                "*" => Some(PatternSegment::Any),
                _ => unescape(raw).map(PatternSegment::Exact),
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                format!(
                    "{pointer:?} has an invalid escape: '~' must be followed by 0 ('~') or 1 ('/')"
                )
            })?;
        Ok(IgnorePattern {
            text: pointer.to_string(),
            segments,
        })
    }

    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn matches(&self, path: &[PathSegment<'_>]) -> bool {
        self.segments.len() == path.len()
            && self.segments.iter().zip(path).all(|(p, s)| match p {
                PatternSegment::Any => true,
                PatternSegment::Exact(want) => s.is(want),
            })
    }
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            _ => out.push(c),
        }
    }
    Some(out)
}

/// The first place where the two bodies differ, ready for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Escaped per RFC 6901; the root is `/`.
    pub pointer: String,
    /// Compact JSON, cut to 80 bytes, or `(absent)`.
    pub primary: String,
    /// As `primary`.
    pub canary: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} vs {}", self.pointer, self.primary, self.canary)
    }
}

#[derive(Debug, Clone, Copy)]
enum PathSegment<'a> {
    Key(&'a str),
    Index(usize),
}

impl PathSegment<'_> {
    fn is(&self, want: &str) -> bool {
        match self {
            PathSegment::Key(k) => *k == want,
            // Decimal text, so "01" or "+1" in a pattern never address index 1.
            PathSegment::Index(i) => i.to_string() == want,
        }
    }
}

/// The first difference between the two bodies, skipping whatever `ignore` matches.
pub fn first_difference(
    primary: &Value,
    canary: &Value,
    ignore: &[IgnorePattern],
) -> Option<Difference> {
    let mut first = None;
    let _ = walk(
        Some(primary),
        Some(canary),
        ignore,
        &mut Vec::new(),
        &mut |path, p, c| {
            first = Some(difference(path, p, c));
            ControlFlow::Break(())
        },
    );
    first
}

/// One of [`all_differences`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementDifference {
    /// As `first_difference` reports it.
    pub difference: Difference,
    /// The pointer with every array index as `*` (`/items/3/id` is `/items/*/id`): the same
    /// field of every item in a list is one element, whose noise is learned once.
    pub element: String,
}

/// Every difference, up to a bound.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Differences {
    /// In the order `first_difference` walks: the first is the one it reports.
    pub differences: Vec<ElementDifference>,
    /// There were more than the bound; the rest are not listed.
    pub cut: bool,
}

/// Every difference between the two bodies, at most `max` of them, with the same rules as
/// [`first_difference`]: `ignore` skipped, integers exact, floats within [`FLOAT_ULPS`],
/// object keys in any order. A node that differs in type or is absent on one side is one
/// difference, not one per field under it.
pub fn all_differences(
    primary: &Value,
    canary: &Value,
    ignore: &[IgnorePattern],
    max: usize,
) -> Differences {
    let mut out = Differences::default();
    let _ = walk(
        Some(primary),
        Some(canary),
        ignore,
        &mut Vec::new(),
        &mut |path, p, c| {
            if out.differences.len() >= max {
                out.cut = true;
                return ControlFlow::Break(());
            }
            out.differences.push(ElementDifference {
                difference: difference(path, p, c),
                element: pointer(path, Indices::AsWildcard),
            });
            ControlFlow::Continue(())
        },
    );
    out
}

/// Calls `found` with each difference in walk order, until it breaks.
fn walk<'a>(
    primary: Option<&'a Value>,
    canary: Option<&'a Value>,
    ignore: &[IgnorePattern],
    path: &mut Vec<PathSegment<'a>>,
    found: &mut impl FnMut(&[PathSegment<'a>], Option<&Value>, Option<&Value>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    if ignore.iter().any(|p| p.matches(path)) {
        return ControlFlow::Continue(());
    }
    let (a, b) = match (primary, canary) {
        (Some(a), Some(b)) => (a, b),
        (None, None) => return ControlFlow::Continue(()),
        _ => return found(path, primary, canary),
    };
    if path.len() > MAX_DEPTH {
        return if a != b {
            found(path, primary, canary)
        } else {
            ControlFlow::Continue(())
        };
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in union_sorted(x.keys(), y.keys()) {
                path.push(PathSegment::Key(k));
                let flow = walk(x.get(k), y.get(k), ignore, path, found);
                path.pop();
                flow?;
            }
            ControlFlow::Continue(())
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                path.push(PathSegment::Index(i));
                let flow = walk(x.get(i), y.get(i), ignore, path, found);
                path.pop();
                flow?;
            }
            ControlFlow::Continue(())
        }
        (Value::Number(x), Value::Number(y)) if numbers_equal(x, y) => ControlFlow::Continue(()),
        (Value::Number(_), Value::Number(_)) => found(path, primary, canary),
        _ if a != b => found(path, primary, canary),
        _ => ControlFlow::Continue(()),
    }
}

/// The keys of both objects, each once, in sorted byte order. serde_json's `Map` is a
/// `BTreeMap` (its `preserve_order` feature is off; a test pins that), so both sides already
/// come sorted and merging them needs neither a set nor a sort.
fn union_sorted<'a>(
    x: impl Iterator<Item = &'a String>,
    y: impl Iterator<Item = &'a String>,
) -> impl Iterator<Item = &'a str> {
    let (mut x, mut y) = (x.peekable(), y.peekable());
    std::iter::from_fn(move || {
        let key = match (x.peek(), y.peek()) {
            (Some(a), Some(b)) if a < b => x.next(),
            (Some(a), Some(b)) if a > b => y.next(),
            (Some(_), Some(_)) => {
                y.next();
                x.next()
            }
            (Some(_), None) => x.next(),
            (None, _) => y.next(),
        };
        key.map(String::as_str)
    })
}

/// Integers compare exactly, since two ids past 2^53 can differ yet round to the same f64;
/// anything else compares as f64, so `1` equals `1.0`, and within [`FLOAT_ULPS`].
fn numbers_equal(a: &Number, b: &Number) -> bool {
    match (as_integer(a), as_integer(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => floats_close(x, y),
            (x, y) => x == y,
        },
    }
}

/// How many units in the last place two floats may be apart and still be the same number.
/// serde_json's float parser (without its `float_roundtrip` feature, 16 KB more wasm) is up to
/// 2 ULP off the nearest f64 when a number has many digits or a large exponent, so one f64
/// written two ways, say in full and as its shortest form (`8.888888888888889e72`), can parse
/// 4 ULP apart: the same answer would be a body mismatch. 4 ULP is under 1e-15 of the value.
const FLOAT_ULPS: u64 = 4;

fn floats_close(a: f64, b: f64) -> bool {
    // The bits ordered as integers, so neighbouring floats are neighbouring integers across
    // zero too, and -0.0 is 0.0. JSON has no NaN or infinity.
    let ordered = |x: f64| {
        let bits = i64::from_ne_bytes(x.to_bits().to_ne_bytes());
        if bits < 0 {
            // Non-negative once the sign bit is masked off, so this never wraps.
            (bits & i64::MAX).wrapping_neg()
        } else {
            bits
        }
    };
    ordered(a).abs_diff(ordered(b)) <= FLOAT_ULPS
}

fn as_integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

fn difference(
    path: &[PathSegment<'_>],
    primary: Option<&Value>,
    canary: Option<&Value>,
) -> Difference {
    Difference {
        pointer: pointer(path, Indices::AsNumbers),
        primary: render(primary),
        canary: render(canary),
    }
}

#[derive(Clone, Copy)]
enum Indices {
    AsNumbers,
    AsWildcard,
}

fn pointer(path: &[PathSegment<'_>], indices: Indices) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let mut out = String::new();
    for segment in path {
        out.push('/');
        match (segment, indices) {
            (PathSegment::Key(k), _) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            (PathSegment::Index(i), Indices::AsNumbers) => out.push_str(&i.to_string()),
            (PathSegment::Index(_), Indices::AsWildcard) => out.push('*'),
        }
    }
    out
}

fn render(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return ABSENT.to_string();
    };
    let mut json = String::new();
    write_json(&mut json, value);
    cut(json)
}

fn cut(json: String) -> String {
    if json.len() <= MAX_RENDERED_BYTES {
        return json;
    }
    let mut cut: String = json
        .char_indices()
        .take_while(|(i, c)| i.saturating_add(c.len_utf8()) <= MAX_RENDERED_BYTES)
        .map(|(_, c)| c)
        .collect();
    cut.push('…');
    cut
}

/// Appends `value` as compact JSON, byte for byte what `serde_json::to_string` writes, but
/// only until `out` is past `MAX_RENDERED_BYTES`: the rest would be cut anyway, so a huge or
/// deeply nested value costs no more than a short one. (serde_json's serializer would also
/// bring its own code into the module for this one log field.)
fn write_json(out: &mut String, value: &Value) {
    if out.len() > MAX_RENDERED_BYTES {
        return;
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // A Number displays as serde_json serializes it (itoa, zmij).
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if out.len() > MAX_RENDERED_BYTES {
                    return;
                }
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if out.len() > MAX_RENDERED_BYTES {
                    return;
                }
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_json(out, item);
            }
            out.push('}');
        }
    }
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, the five short control escapes and
/// `\u00xx` for the other control characters; everything else as is.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if out.len() > MAX_RENDERED_BYTES {
            return;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\0'..='\u{1f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn diff(primary: &str, canary: &str, ignore: &[&str]) -> Option<String> {
        let primary: Value = serde_json::from_str(primary).unwrap();
        let canary: Value = serde_json::from_str(canary).unwrap();
        let ignore: Vec<IgnorePattern> = ignore
            .iter()
            .map(|p| IgnorePattern::parse(p).unwrap())
            .collect();
        first_difference(&primary, &canary, &ignore).map(|d| d.to_string())
    }

    fn all(primary: &str, canary: &str, ignore: &[&str], max: usize) -> Differences {
        let primary: Value = serde_json::from_str(primary).unwrap();
        let canary: Value = serde_json::from_str(canary).unwrap();
        let ignore: Vec<IgnorePattern> = ignore
            .iter()
            .map(|p| IgnorePattern::parse(p).unwrap())
            .collect();
        all_differences(&primary, &canary, &ignore, max)
    }

    #[test]
    fn table() {
        let x79 = "x".repeat(79);
        let x78 = "x".repeat(78);
        // 102 bytes of JSON: cut to the quote and 79 x's.
        let long = format!(r#"["{}"]"#, "x".repeat(100));
        let long_want = format!(r#"/0: "{x79}… vs "y""#);
        // The 2-byte 'é' straddles byte 80, so it goes whole rather than split.
        let multibyte = format!(r#"["{x78}étail"]"#);
        let multibyte_want = format!(r#"/0: "{x78}… vs 1"#);
        // Exactly 80 bytes: nothing cut.
        let exact = format!(r#"["{x78}"]"#);
        let exact_want = format!(r#"/0: "{x78}" vs 1"#);

        let cases: &[(&str, &str, &[&str], Option<&str>)] = &[
            // Key order never matters.
            (
                r#"{"a":1,"b":[1,{"c":2,"d":3}]}"#,
                r#"{"b":[1,{"d":3,"c":2}],"a":1}"#,
                &[],
                None,
            ),
            (
                r#"{"user":{"balance":100,"name":"x"}}"#,
                r#"{"user":{"name":"x","balance":90}}"#,
                &[],
                Some("/user/balance: 100 vs 90"),
            ),
            // Sorted key order decides which difference is first, not input order.
            (
                r#"{"b":1,"a":1}"#,
                r#"{"b":2,"a":2}"#,
                &[],
                Some("/a: 1 vs 2"),
            ),
            (
                r#"{"a":1,"b":2}"#,
                r#"{"a":1}"#,
                &[],
                Some("/b: 2 vs (absent)"),
            ),
            (
                r#"{"a":1}"#,
                r#"{"a":1,"b":2}"#,
                &[],
                Some("/b: (absent) vs 2"),
            ),
            (r#"{"a":null}"#, r#"{}"#, &[], Some("/a: null vs (absent)")),
            // Keys of either side interleave in sorted order.
            (
                r#"{"c":1,"e":1,"a":1}"#,
                r#"{"e":1,"d":1,"c":1}"#,
                &[],
                Some("/a: 1 vs (absent)"),
            ),
            (
                r#"{"b":1,"d":1}"#,
                r#"{"d":1,"c":1,"a":1}"#,
                &["/a", "/c"],
                Some("/b: 1 vs (absent)"),
            ),
            (
                r#"{"b":1,"d":1}"#,
                r#"{"d":1,"c":1,"a":1,"b":1}"#,
                &["/a"],
                Some("/c: (absent) vs 1"),
            ),
            (r#"[1,2,3]"#, r#"[1]"#, &[], Some("/1: 2 vs (absent)")),
            (r#"[1]"#, r#"[1,2,3]"#, &[], Some("/1: (absent) vs 2")),
            // An element that differs comes before the length difference.
            (r#"[1,9,3]"#, r#"[1,2]"#, &[], Some("/1: 9 vs 2")),
            // Wildcard over array indices.
            (
                r#"{"items":[{"id":1,"v":1},{"id":2,"v":1}]}"#,
                r#"{"items":[{"id":7,"v":1},{"id":8,"v":1}]}"#,
                &["/items/*/id"],
                None,
            ),
            (
                r#"{"items":[{"id":1,"v":1},{"id":2,"v":1}]}"#,
                r#"{"items":[{"id":7,"v":1},{"id":8,"v":2}]}"#,
                &["/items/*/id"],
                Some("/items/1/v: 1 vs 2"),
            ),
            // Wildcard over object keys.
            (
                r#"{"users":{"al":{"seen":1,"n":1},"bo":{"seen":2,"n":2}}}"#,
                r#"{"users":{"al":{"seen":5,"n":1},"bo":{"seen":6,"n":2}}}"#,
                &["/users/*/seen"],
                None,
            ),
            // An ignored node takes its whole subtree with it.
            (
                r#"{"meta":{"a":{"b":1}},"x":1}"#,
                r#"{"meta":{"a":{"b":2},"c":[3]},"x":1}"#,
                &["/meta"],
                None,
            ),
            // Ignored even when absent on one side.
            (r#"{"a":1,"ts":5}"#, r#"{"a":1}"#, &["/ts"], None),
            (r#"{"a":1}"#, r#"{"a":1,"ts":5}"#, &["/ts"], None),
            (r#"[1,2,3]"#, r#"[1,2]"#, &["/2"], None),
            // A pattern longer than the path does not match it.
            (
                r#"{"items":[{"id":1},{"id":2}]}"#,
                r#"{"items":[{"id":1}]}"#,
                &["/items/*/id"],
                Some(r#"/items/1: {"id":2} vs (absent)"#),
            ),
            // Nor does one shorter than the path: patterns are anchored at the root.
            (
                r#"{"user":{"id":1}}"#,
                r#"{"user":{"id":2}}"#,
                &["/id"],
                Some("/user/id: 1 vs 2"),
            ),
            // Indices match only as their decimal text.
            (r#"[1,2]"#, r#"[1,3]"#, &["/01", "/+1"], Some("/1: 2 vs 3")),
            // Escaped keys, in patterns and in the output.
            (
                r#"{"a/b":1,"m~n":1,"c/d":1}"#,
                r#"{"a/b":2,"m~n":2,"c/d":2}"#,
                &["/a~1b", "/m~0n"],
                Some("/c~1d: 1 vs 2"),
            ),
            (
                r#"{"m~n":{"a/b":1}}"#,
                r#"{"m~n":{"a/b":2}}"#,
                &[],
                Some("/m~0n/a~1b: 1 vs 2"),
            ),
            // The empty key is "/", the root is shown as "/" too.
            (r#"{"":1}"#, r#"{"":2}"#, &["/"], None),
            // Numbers compare numerically; integers exactly, beyond f64 precision.
            (
                r#"{"a":1,"b":-2,"c":0.5}"#,
                r#"{"a":1.0,"b":-2.0,"c":0.50}"#,
                &[],
                None,
            ),
            (
                r#"{"id":9007199254740993}"#,
                r#"{"id":9007199254740992}"#,
                &[],
                Some("/id: 9007199254740993 vs 9007199254740992"),
            ),
            // The same f64 written two ways, which serde_json parses up to 2 ULP off each
            // (found by the json_compare fuzz target): in full and shortest; a subnormal's
            // neighbour; a float and the integer it rounds to.
            (&"8".repeat(73), "8.888888888888889e72", &[], None),
            (
                "2.2250738585072011e-308",
                "2.225073858507201e-308",
                &[],
                None,
            ),
            (
                r#"{"a":9007199254740993.0}"#,
                r#"{"a":9007199254740992}"#,
                &[],
                None,
            ),
            // A few ULP more is a different number.
            (
                "1.000000000000002",
                "1",
                &[],
                Some("/: 1.000000000000002 vs 1"),
            ),
            (
                "-1e-300",
                "-1.0000000000000009e-300",
                &[],
                Some("/: -1e-300 vs -1.0000000000000009e-300"),
            ),
            ("-0.0", "0", &[], None),
            (
                r#"{"a":18446744073709551615}"#,
                r#"{"a":-1}"#,
                &[],
                Some("/a: 18446744073709551615 vs -1"),
            ),
            // Types differ.
            (r#"{"a":"1"}"#, r#"{"a":1}"#, &[], Some(r#"/a: "1" vs 1"#)),
            (r#"{"a":[]}"#, r#"{"a":{}}"#, &[], Some("/a: [] vs {}")),
            // Truncation.
            (&long, r#"["y"]"#, &[], Some(&long_want)),
            (&multibyte, "[1]", &[], Some(&multibyte_want)),
            (&exact, "[1]", &[], Some(&exact_want)),
            // Root.
            ("1", "2", &[], Some("/: 1 vs 2")),
            ("1", "1.0", &[], None),
            (r#"{"a":1}"#, "[1]", &[], Some(r#"/: {"a":1} vs [1]"#)),
        ];
        for (primary, canary, ignore, want) in cases {
            assert_eq!(
                diff(primary, canary, ignore).as_deref(),
                *want,
                "{primary} vs {canary} ignoring {ignore:?}"
            );
            // all_differences' first is first_difference, whatever the bound past 0.
            for max in [1, 2, 100] {
                let all = all(primary, canary, ignore, max);
                let first = all.differences.first().map(|d| d.difference.to_string());
                assert_eq!(first.as_deref(), *want, "{primary} vs {canary}, max {max}");
                assert!(
                    !all.cut || all.differences.len() == max,
                    "{primary} vs {canary}, max {max}"
                );
            }
        }
    }

    #[test]
    fn all_table() {
        let items_a = r#"{"items":[{"id":1,"v":1},{"id":2,"v":1},{"id":3,"v":1}],"ts":1}"#;
        let items_b = r#"{"items":[{"id":7,"v":1},{"id":8,"v":2},{"id":9,"v":1}],"ts":2}"#;
        // primary, canary, ignore, max, (difference, element) in order, cut
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [&'a str],
            usize,
            &'a [(&'a str, &'a str)],
            bool,
        );
        let cases: &[Case] = &[
            ("1", "1", &[], 10, &[], false),
            ("1", "1", &[], 0, &[], false),
            ("1", "2", &[], 10, &[("/: 1 vs 2", "/")], false),
            ("1", "2", &[], 0, &[], true),
            (
                items_a,
                items_b,
                &[],
                100,
                &[
                    ("/items/0/id: 1 vs 7", "/items/*/id"),
                    ("/items/1/id: 2 vs 8", "/items/*/id"),
                    ("/items/1/v: 1 vs 2", "/items/*/v"),
                    ("/items/2/id: 3 vs 9", "/items/*/id"),
                    ("/ts: 1 vs 2", "/ts"),
                ],
                false,
            ),
            // Exactly as many as the bound: not cut.
            (
                items_a,
                items_b,
                &["/items/*/id"],
                2,
                &[("/items/1/v: 1 vs 2", "/items/*/v"), ("/ts: 1 vs 2", "/ts")],
                false,
            ),
            (
                items_a,
                items_b,
                &[],
                2,
                &[
                    ("/items/0/id: 1 vs 7", "/items/*/id"),
                    ("/items/1/id: 2 vs 8", "/items/*/id"),
                ],
                true,
            ),
            (items_a, items_b, &["/items", "/ts"], 100, &[], false),
            // Key order does not matter; numbers by value; absent on one side, or another
            // type, is one difference for the whole subtree.
            (
                r#"{"b":{"x":1,"y":2},"a":1.0,"c":[1,2],"d":0.1}"#,
                r#"{"a":1,"c":{"0":1},"e":[3],"d":0.1000000000000000055}"#,
                &[],
                100,
                &[
                    (r#"/b: {"x":1,"y":2} vs (absent)"#, "/b"),
                    (r#"/c: [1,2] vs {"0":1}"#, "/c"),
                    ("/e: (absent) vs [3]", "/e"),
                ],
                false,
            ),
            // Arrays of different lengths: each missing item.
            (
                "[[1],[2]]",
                "[[1,5]]",
                &[],
                100,
                &[
                    ("/0/1: (absent) vs 5", "/*/*"),
                    ("/1: [2] vs (absent)", "/*"),
                ],
                false,
            ),
            // Keys escaped in both; a key that looks like an index stays a key.
            (
                r#"{"a/b":{"7":1},"m~n":[0]}"#,
                r#"{"a/b":{"7":2},"m~n":[1]}"#,
                &[],
                100,
                &[
                    ("/a~1b/7: 1 vs 2", "/a~1b/7"),
                    ("/m~0n/0: 0 vs 1", "/m~0n/*"),
                ],
                false,
            ),
            // Integers exactly.
            (
                "[9007199254740993, 1]",
                "[9007199254740992, 1]",
                &[],
                100,
                &[("/0: 9007199254740993 vs 9007199254740992", "/*")],
                false,
            ),
        ];
        for (primary, canary, ignore, max, want, cut) in cases {
            let got = all(primary, canary, ignore, *max);
            let pairs: Vec<(String, &str)> = got
                .differences
                .iter()
                .map(|d| (d.difference.to_string(), d.element.as_str()))
                .collect();
            let want: Vec<(String, &str)> = want.iter().map(|(d, e)| (d.to_string(), *e)).collect();
            assert_eq!(pairs, want, "{primary} vs {canary}, max {max}");
            assert_eq!(got.cut, *cut, "{primary} vs {canary}, max {max}");
        }
    }

    #[test]
    fn all_differences_deep() {
        let nest = |leaf: Value| (0..1000).fold(leaf, |v, _| Value::Array(vec![v]));
        let got = all_differences(&nest(Value::from(1)), &nest(Value::from(2)), &[], 10);
        assert_eq!(got.differences.len(), 1);
        assert!(!got.cut);
        let d = &got.differences[0];
        assert_eq!(d.difference.pointer, "/0".repeat(MAX_DEPTH + 1));
        assert_eq!(d.element, "/*".repeat(MAX_DEPTH + 1));
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "",
                r#""" would ignore the whole body; use compare.body "none" to skip body comparison"#,
            ),
            (
                "timestamp",
                r#""timestamp" is not a JSON Pointer: it must start with '/' (e.g. "/timestamp")"#,
            ),
            (
                "#/a",
                r##""#/a" is not a JSON Pointer: it must start with '/' (e.g. "/#/a")"##,
            ),
            (
                "/a~2b",
                r#""/a~2b" has an invalid escape: '~' must be followed by 0 ('~') or 1 ('/')"#,
            ),
            (
                "/a/b~",
                r#""/a/b~" has an invalid escape: '~' must be followed by 0 ('~') or 1 ('/')"#,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                IgnorePattern::parse(input).err().as_deref(),
                Some(*want),
                "{input:?}"
            );
        }
        for ok in ["/", "/*", "/a~0~1b/*/0", "//"] {
            assert_eq!(IgnorePattern::parse(ok).unwrap().as_str(), ok);
        }
    }

    /// `union_sorted` relies on it: with serde_json's `preserve_order` feature switched on by
    /// any crate in the build, maps would keep input order and objects would be misread.
    #[test]
    fn maps_iterate_in_sorted_key_order() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":2,"B":3,"\u00e9":4,"aa":5,"":6}"#).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["", "B", "a", "aa", "b", "\u{e9}"]);
    }

    /// `render` writes its own JSON: it must be serde_json's text, cut where that would be.
    #[test]
    fn render_is_serde_json_text() {
        let controls: String = (0u8..0x20).map(char::from).collect();
        let long = "x".repeat(100);
        let texts = [
            "null".to_string(),
            "true".into(),
            "false".into(),
            "0".into(),
            "-0".into(),
            "-0.0".into(),
            "1.0".into(),
            "1E2".into(),
            "0.1".into(),
            "1.5e-7".into(),
            "1e300".into(),
            "-2.5e-300".into(),
            "123456789012345678901234567890".into(),
            "18446744073709551615".into(),
            "-9223372036854775808".into(),
            "[]".into(),
            "{}".into(),
            r#"[1,[2,[3,{}]],{"a":[]}]"#.into(),
            r#"{"z":1,"a":{"y":null,"b":[true,false]}}"#.into(),
            serde_json::to_string(&controls).unwrap(),
            r#""quote \" backslash \\ slash / del \u007f""#.into(),
            r#""\u00e9 \u2028 \ud83d\ude00""#.into(),
            format!(r#"["{long}"]"#),
            format!(r#"{{"{long}":1}}"#),
            format!(r#"["{}\u00e9"]"#, "x".repeat(77)),
            format!(r#"["{}\n"]"#, "x".repeat(77)),
            format!("[{}]", vec!["1.25"; 40].join(",")),
        ];
        for text in texts {
            let v: Value = serde_json::from_str(&text).unwrap();
            let want = cut(serde_json::to_string(&v).unwrap());
            assert_eq!(render(Some(&v)), want, "{text}");
        }
        assert_eq!(render(None), "(absent)");
    }

    #[test]
    fn deep_values_stop_recursing() {
        let nest = |leaf: Value| (0..1000).fold(leaf, |v, _| Value::Array(vec![v]));
        let a = nest(Value::from(1));
        let b = nest(Value::from(2));
        assert_eq!(first_difference(&a, &a.clone(), &[]), None);
        let d = first_difference(&a, &b, &[]).unwrap();
        assert_eq!(d.pointer, "/0".repeat(MAX_DEPTH + 1));
        assert!(d.primary.ends_with('…'));
    }
}
