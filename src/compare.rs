//! Comparing the canary's answer with the primary's: status, chosen headers, body.
//!
//! Each side is reduced while it streams to what the comparison needs ([`Answer`]): the
//! status, the values of `compare.headers`, and the body as its length and XXH64 digest
//! (`bytes`) or as bytes kept up to `compare.max_body_bytes` (`json`). So nothing bigger than
//! the limit is ever held, and in `bytes` mode not even that.
//!
//! XXH64, not SHA-256: the digest only tells two honest answers apart, and a 64-bit digest
//! of equal-length bodies collides by accident once in 2^64 comparisons. SHA-256 in Wasm
//! cost about 10 µs per KiB of body on every mirrored request.

use xxhash_rust::xxh64::Xxh64;

use crate::json_diff::{self, IgnorePattern};
use crate::label::label_enum;

/// `compare.body` in the config, by these names in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyMode {
    Bytes,
    Json,
    None,
}

/// The compiled `mirror.compare` section.
#[derive(Debug, Clone)]
pub struct CompareSpec {
    /// Lowercase header names.
    pub headers: Vec<String>,
    pub body: BodyMode,
    pub ignore: Vec<IgnorePattern>,
    pub max_body_bytes: usize,
}

label_enum! {
    /// The `result` label of `progressive_delivery_comparisons_total`.
    pub enum Outcome {
        Match = "match",
        StatusMismatch = "status_mismatch",
        HeaderMismatch = "header_mismatch",
        BodyMismatch = "body_mismatch",
        MirrorError = "mirror_error",
        MirrorTimeout = "mirror_timeout",
        Skipped = "skipped",
    }
}

/// A comparison's result and, unless it matched, what a person should look at first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub detail: String,
}

impl Verdict {
    pub fn new(outcome: Outcome, detail: impl Into<String>) -> Self {
        Verdict {
            outcome,
            detail: detail.into(),
        }
    }
}

/// A body as the comparison keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Over `compare.max_body_bytes`: not compared.
    TooLarge {
        len: usize,
    },
    Digest {
        len: usize,
        xxh64: u64,
    },
    Kept(Vec<u8>),
    /// `compare.body` is `none`.
    Ignored,
}

/// Reduces a body to a [`Body`] chunk by chunk.
pub struct BodyCapture {
    mode: BodyMode,
    limit: usize,
    len: usize,
    hasher: Option<Xxh64>,
    kept: Vec<u8>,
}

impl BodyCapture {
    pub fn new(spec: &CompareSpec) -> Self {
        BodyCapture {
            mode: spec.body,
            limit: spec.max_body_bytes,
            len: 0,
            hasher: (spec.body == BodyMode::Bytes).then(|| Xxh64::new(0)),
            kept: Vec::new(),
        }
    }

    /// Whether a next chunk of `len` bytes is kept; when not, [`BodyCapture::skip`] its length
    /// and spare the host the copy.
    pub fn wants(&self, len: usize) -> bool {
        self.mode != BodyMode::None && self.len.saturating_add(len) <= self.limit
    }

    pub fn skip(&mut self, len: usize) {
        self.len = self.len.saturating_add(len);
        if self.len > self.limit {
            self.hasher = None;
            self.kept = Vec::new();
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.len = self.len.saturating_add(chunk.len());
        if self.len > self.limit {
            // Past the limit the body is skipped: free what was held at once.
            self.hasher = None;
            self.kept = Vec::new();
            return;
        }
        match self.mode {
            BodyMode::Bytes => {
                if let Some(h) = &mut self.hasher {
                    h.update(chunk);
                }
            }
            BodyMode::Json => self.kept.extend_from_slice(chunk),
            BodyMode::None => {}
        }
    }

    pub fn finish(self) -> Body {
        if self.mode == BodyMode::None {
            return Body::Ignored;
        }
        if self.len > self.limit {
            return Body::TooLarge { len: self.len };
        }
        match (self.mode, self.hasher) {
            (BodyMode::Bytes, Some(h)) => Body::Digest {
                len: self.len,
                xxh64: h.digest(),
            },
            _ => Body::Kept(self.kept),
        }
    }
}

/// One side's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Values of `compare.headers`, index-aligned; several values joined with `, `.
    pub headers: Vec<Option<Vec<u8>>>,
    /// Lowercase `content-encoding`, empty for none or `identity`.
    pub content_encoding: Vec<u8>,
    pub body: Body,
}

impl Answer {
    /// Picks what the comparison needs out of a response's headers. A missing or
    /// unparsable `:status` is 0, which differs from any real status.
    pub fn from_headers(spec: &CompareSpec, headers: &[(String, Vec<u8>)], body: Body) -> Answer {
        let status = header(headers, ":status")
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(0);
        let mut content_encoding = header(headers, "content-encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_encoding == b"identity" {
            content_encoding.clear();
        }
        Answer {
            status,
            headers: spec.headers.iter().map(|n| header(headers, n)).collect(),
            content_encoding,
            body,
        }
    }
}

/// All values of `name`, joined as HTTP does (`, `), or `None` when absent.
fn header(headers: &[(String, Vec<u8>)], name: &str) -> Option<Vec<u8>> {
    let mut values = headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
    let mut out = values.next()?.clone();
    for v in values {
        out.extend_from_slice(b", ");
        out.extend_from_slice(v);
    }
    Some(out)
}

/// Envoy answers a callout that never reached the canary itself: a reset gives no headers at
/// all, a refused connection a 503 and the callout's own timeout a 504, both without the
/// `x-envoy-upstream-service-time` header its router puts on every real upstream answer.
/// Those are mirror failures, not the canary's answer.
///
/// A reset is also what Envoy sends when its timeout fires after the canary's headers came
/// but before its body finished: no 504 then, since the headers were already taken. A reset
/// at the timeout (`elapsed_ms` since dispatch, measured a little after Envoy started its own
/// timer, hence the slack) is that timeout, not the canary breaking the connection.
pub fn canary_failure(
    headers: &[(String, Vec<u8>)],
    elapsed_ms: u64,
    timeout_ms: u32,
) -> Option<Verdict> {
    /// Host clocks tick in milliseconds and the dispatch time is read after the call returns.
    const TIMER_SLACK_MS: u64 = 5;
    if headers.is_empty() {
        return Some(
            if elapsed_ms.saturating_add(TIMER_SLACK_MS) >= u64::from(timeout_ms) {
                Verdict::new(
                    Outcome::MirrorTimeout,
                    "the canary's answer did not complete within mirror.timeout_ms",
                )
            } else {
                Verdict::new(Outcome::MirrorError, "the canary reset the stream")
            },
        );
    }
    if headers
        .iter()
        .any(|(n, _)| n == "x-envoy-upstream-service-time")
    {
        return None;
    }
    let status = header(headers, ":status").unwrap_or_default();
    Some(match status.as_slice() {
        b"504" => Verdict::new(Outcome::MirrorTimeout, "no answer within mirror.timeout_ms"),
        other => Verdict::new(
            Outcome::MirrorError,
            format!(
                "no answer from the canary (Envoy replied {})",
                String::from_utf8_lossy(other)
            ),
        ),
    })
}

/// Compares in the order a person debugging would: status, then headers, then the body.
pub fn compare(spec: &CompareSpec, primary: &Answer, canary: &Answer) -> Verdict {
    if primary.status != canary.status {
        return Verdict::new(
            Outcome::StatusMismatch,
            format!("status {} vs {}", primary.status, canary.status),
        );
    }
    for (i, name) in spec.headers.iter().enumerate() {
        let p = primary.headers.get(i).cloned().flatten();
        let c = canary.headers.get(i).cloned().flatten();
        if p != c {
            return Verdict::new(
                Outcome::HeaderMismatch,
                format!("header {name}: {} vs {}", quoted(&p), quoted(&c)),
            );
        }
    }
    compare_bodies(spec, primary, canary)
}

fn compare_bodies(spec: &CompareSpec, primary: &Answer, canary: &Answer) -> Verdict {
    let (p, c) = match (&primary.body, &canary.body) {
        (Body::Ignored, _) | (_, Body::Ignored) => return Verdict::new(Outcome::Match, ""),
        (Body::TooLarge { len }, _) | (_, Body::TooLarge { len }) => {
            return Verdict::new(
                Outcome::Skipped,
                format!(
                    "body of {len} bytes is over compare.max_body_bytes ({})",
                    spec.max_body_bytes
                ),
            )
        }
        (p, c) => (p, c),
    };
    // Differently encoded bytes say nothing about the content, and decoding would put a
    // decompressor in the filter: not compared, and said so.
    if primary.content_encoding != canary.content_encoding {
        return Verdict::new(
            Outcome::Skipped,
            format!(
                "content-encoding {} vs {}: bodies not compared",
                encoding_name(&primary.content_encoding),
                encoding_name(&canary.content_encoding)
            ),
        );
    }
    match (p, c) {
        (Body::Digest { len: pl, xxh64: ps }, Body::Digest { len: cl, xxh64: cs }) => {
            if pl == cl && ps == cs {
                Verdict::new(Outcome::Match, "")
            } else {
                Verdict::new(
                    Outcome::BodyMismatch,
                    format!("body differs ({pl} vs {cl} bytes)"),
                )
            }
        }
        (Body::Kept(p), Body::Kept(c)) => compare_json(spec, p, c),
        // Both sides are built from the same spec, so the kinds agree; if not, say so.
        _ => Verdict::new(Outcome::Skipped, "bodies captured differently"),
    }
}

fn compare_json(spec: &CompareSpec, p: &[u8], c: &[u8]) -> Verdict {
    // Equal bytes are equal JSON, or equal non-JSON: a match either way. A canary that
    // answers like the primary is the common case, and parsing, walking and freeing the two
    // trees costs hundreds of times more than comparing the bytes.
    if p == c {
        return Verdict::new(Outcome::Match, "");
    }
    let parsed = (
        serde_json::from_slice::<serde_json::Value>(p),
        serde_json::from_slice::<serde_json::Value>(c),
    );
    if let (Ok(pv), Ok(cv)) = parsed {
        return match json_diff::first_difference(&pv, &cv, &spec.ignore) {
            None => Verdict::new(Outcome::Match, ""),
            Some(d) => Verdict::new(Outcome::BodyMismatch, format!("body {d}")),
        };
    }
    // Not JSON on at least one side (or encoded), and the bytes differ.
    Verdict::new(
        Outcome::BodyMismatch,
        format!("body differs ({} vs {} bytes)", p.len(), c.len()),
    )
}

fn encoding_name(e: &[u8]) -> String {
    if e.is_empty() {
        "identity".to_string()
    } else {
        String::from_utf8_lossy(e).into_owned()
    }
}

/// A header value for a log line: quoted, non-UTF-8 and control bytes escaped, cut at 80.
fn quoted(v: &Option<Vec<u8>>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(v) => {
            let text: String = String::from_utf8_lossy(v).chars().take(80).collect();
            format!("{text:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn spec(body: BodyMode, ignore: &[&str], limit: usize) -> CompareSpec {
        CompareSpec {
            headers: vec!["content-type".into()],
            body,
            ignore: ignore
                .iter()
                .map(|p| IgnorePattern::parse(p).unwrap())
                .collect(),
            max_body_bytes: limit,
        }
    }

    fn answer(
        spec: &CompareSpec,
        status: &str,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
    ) -> Answer {
        let mut h = vec![(":status".to_string(), status.as_bytes().to_vec())];
        h.extend(
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())),
        );
        let mut body = BodyCapture::new(spec);
        for c in chunks {
            body.push(c);
        }
        Answer::from_headers(spec, &h, body.finish())
    }

    #[test]
    fn verdicts() {
        let json = spec(BodyMode::Json, &["/timestamp", "/items/*/id"], 64);
        let bytes = spec(BodyMode::Bytes, &[], 64);
        let none = spec(BodyMode::None, &[], 64);
        let ct = ("content-type", "application/json");
        type Side<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a [u8]>);
        #[rustfmt::skip]
        let cases: Vec<(&CompareSpec, Side, Side, Outcome, &str)> = vec![
            (&bytes, ("200", vec![ct], vec![b"ab", b"c"]), ("200", vec![ct], vec![b"abc"]), Outcome::Match, ""),
            (&bytes, ("200", vec![ct], vec![b"abc"]), ("200", vec![ct], vec![b"abd"]), Outcome::BodyMismatch, "body differs (3 vs 3 bytes)"),
            (&bytes, ("200", vec![], vec![]), ("500", vec![], vec![]), Outcome::StatusMismatch, "status 200 vs 500"),
            (&bytes, ("200", vec![], vec![]), ("x", vec![], vec![]), Outcome::StatusMismatch, "status 200 vs 0"),
            (&bytes, ("200", vec![ct], vec![]), ("200", vec![("content-type", "text/plain")], vec![]), Outcome::HeaderMismatch,
                "header content-type: \"application/json\" vs \"text/plain\""),
            (&bytes, ("200", vec![ct], vec![]), ("200", vec![], vec![]), Outcome::HeaderMismatch,
                "header content-type: \"application/json\" vs (absent)"),
            // Status wins over headers, headers over bodies.
            (&bytes, ("200", vec![ct], vec![b"a"]), ("404", vec![], vec![b"b"]), Outcome::StatusMismatch, "status 200 vs 404"),
            (&bytes, ("200", vec![ct], vec![b"a"]), ("200", vec![], vec![b"b"]), Outcome::HeaderMismatch,
                "header content-type: \"application/json\" vs (absent)"),
            // Limits.
            (&bytes, ("200", vec![], vec![&[b'x'; 40], &[b'x'; 40]]), ("200", vec![], vec![b"y"]), Outcome::Skipped,
                "body of 80 bytes is over compare.max_body_bytes (64)"),
            (&json, ("200", vec![], vec![b"{}"]), ("200", vec![], vec![&[b' '; 65]]), Outcome::Skipped,
                "body of 65 bytes is over compare.max_body_bytes (64)"),
            // JSON.
            (&json, ("200", vec![], vec![br#"{"a":1,"b":[1,2]}"#]), ("200", vec![], vec![br#"{"b":[1,2], "a":1.0}"#]), Outcome::Match, ""),
            (&json, ("200", vec![], vec![br#"{"a":1,"b":[1,2]}"#]), ("200", vec![], vec![br#"{"a":1,"b":[1,2]}"#]), Outcome::Match, ""),
            (&json, ("200", vec![], vec![br#"{"balance":100}"#]), ("200", vec![], vec![br#"{"balance":90}"#]), Outcome::BodyMismatch,
                "body /balance: 100 vs 90"),
            (&json, ("200", vec![], vec![br#"{"timestamp":1,"items":[{"id":1,"v":2}]}"#]),
                    ("200", vec![], vec![br#"{"items":[{"v":2,"id":7}],"timestamp":2}"#]), Outcome::Match, ""),
            (&json, ("200", vec![], vec![b"not json"]), ("200", vec![], vec![b"not json"]), Outcome::Match, ""),
            (&json, ("200", vec![], vec![b"not json"]), ("200", vec![], vec![b"not jsoN!"]), Outcome::BodyMismatch,
                "body differs (8 vs 9 bytes)"),
            (&json, ("200", vec![], vec![]), ("200", vec![], vec![]), Outcome::Match, ""),
            // Encodings.
            (&json, ("200", vec![("content-encoding", "gzip")], vec![b"\x1f\x8b"]), ("200", vec![], vec![b"{}"]), Outcome::Skipped,
                "content-encoding gzip vs identity: bodies not compared"),
            (&bytes, ("200", vec![("content-encoding", "GZIP")], vec![b"z"]), ("200", vec![("content-encoding", "gzip")], vec![b"z"]), Outcome::Match, ""),
            (&bytes, ("200", vec![("content-encoding", "identity")], vec![b"z"]), ("200", vec![], vec![b"z"]), Outcome::Match, ""),
            // Bodies not compared.
            (&none, ("200", vec![], vec![b"a"]), ("200", vec![], vec![b"b"]), Outcome::Match, ""),
        ];
        for (spec, p, c, outcome, detail) in cases {
            let pa = answer(spec, p.0, &p.1, &p.2);
            let ca = answer(spec, c.0, &c.1, &c.2);
            let v = compare(spec, &pa, &ca);
            assert_eq!(v, Verdict::new(outcome, detail), "{p:?} vs {c:?}");
        }
    }

    #[test]
    fn canary_failures() {
        type Headers = Vec<(String, Vec<u8>)>;
        let h = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let real = ("x-envoy-upstream-service-time", "3");
        #[rustfmt::skip]
        let reset = "the canary reset the stream";
        let stalled = "the canary's answer did not complete within mirror.timeout_ms";
        // (headers, ms since dispatch, with a timeout of 1000 ms) -> verdict
        #[rustfmt::skip]
        type Case<'a> = (Headers, u64, Option<(Outcome, &'a str)>);
        let cases: Vec<Case> = vec![
            (h(&[]), 0, Some((Outcome::MirrorError, reset))),
            (h(&[]), 994, Some((Outcome::MirrorError, reset))),
            (h(&[]), 995, Some((Outcome::MirrorTimeout, stalled))),
            (h(&[]), 1000, Some((Outcome::MirrorTimeout, stalled))),
            (h(&[]), u64::MAX, Some((Outcome::MirrorTimeout, stalled))),
            (
                h(&[(":status", "503")]),
                3,
                Some((
                    Outcome::MirrorError,
                    "no answer from the canary (Envoy replied 503)",
                )),
            ),
            (
                h(&[(":status", "504")]),
                1000,
                Some((Outcome::MirrorTimeout, "no answer within mirror.timeout_ms")),
            ),
            (h(&[(":status", "503"), real]), 3, None),
            (h(&[(":status", "504"), real]), 1000, None),
            (h(&[(":status", "200"), real]), 3, None),
        ];
        for (headers, elapsed, want) in cases {
            let want = want.map(|(o, d)| Verdict::new(o, d));
            assert_eq!(
                canary_failure(&headers, elapsed, 1000),
                want,
                "{headers:?} after {elapsed} ms"
            );
        }
    }

    #[test]
    fn repeated_headers_join() {
        let mut s = spec(BodyMode::None, &[], 0);
        s.headers = vec!["vary".into()];
        let h: Vec<(String, Vec<u8>)> = vec![
            (":status".into(), b"200".to_vec()),
            ("vary".into(), b"a".to_vec()),
            ("vary".into(), b"b".to_vec()),
        ];
        let a = Answer::from_headers(&s, &h, Body::Ignored);
        assert_eq!(a.headers, vec![Some(b"a, b".to_vec())]);
    }

    #[test]
    fn capture_frees_past_the_limit() {
        let s = spec(BodyMode::Json, &[], 4);
        let mut c = BodyCapture::new(&s);
        c.push(b"abcd");
        c.push(b"e");
        assert_eq!(c.kept.capacity(), 0);
        c.push(b"f");
        assert_eq!(c.finish(), Body::TooLarge { len: 6 });
    }

    #[test]
    fn outcome_names() {
        let names: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            names,
            [
                "match",
                "status_mismatch",
                "header_mismatch",
                "body_mismatch",
                "mirror_error",
                "mirror_timeout",
                "skipped"
            ]
        );
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }
}
