//! Comparing two answers to the same request: status, chosen headers, body.
//!
//! Each side is reduced while it streams to what the comparison needs ([`Answer`]): the
//! status, the values of `compare.headers`, and the body as its length and XXH64 digest
//! (`bytes`) or as bytes kept up to `compare.max_body_bytes` (`json`). So nothing bigger than
//! the limit is ever held, and in `bytes` mode not even that, unless the answer is gzip or
//! deflate encoded: then its bytes are kept up to the limit and decoded (src/decode.rs, its
//! output bounded by the same limit) before they are digested or parsed, so two servers that
//! compress alike content differently still agree.
//!
//! A gRPC answer (the request was gRPC) also has its `grpc-status`, from the trailers or the
//! headers of a trailers-only answer; in `protobuf` mode its body is split into messages
//! (src/grpc.rs, per-message `grpc-encoding` undone under the same limit) and compared field
//! by field (src/protobuf_diff.rs). Another answer's body in `protobuf` mode is one message.
//!
//! [`differences`] lists every element on which two answers differ (status, `grpc-status`, a
//! header, a JSON or field-number pointer, the body), in the order a person debugging would
//! look: status, headers, body. The
//! mirror session judges the canary on that list, against the primary or, with a baseline,
//! against the baseline with the noise learned between primary and baseline set aside.
//!
//! XXH64, not SHA-256: the digest only tells two honest answers apart, and a 64-bit digest
//! of equal-length bodies collides by accident once in 2^64 comparisons. SHA-256 in Wasm
//! cost about 10 µs per KiB of body on every mirrored request.

use xxhash_rust::xxh64::{xxh64, Xxh64};

use crate::decode;
use crate::endpoint::Templates;
use crate::grpc;
use crate::json_diff::{self, IgnorePattern};
use crate::label::label_enum;
use crate::noise::{self, header_element, Judgement};
use crate::protobuf_diff;

/// `compare.body` in the config, by these names in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyMode {
    Bytes,
    Json,
    Protobuf,
    None,
}

impl BodyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyMode::Bytes => "bytes",
            BodyMode::Json => "json",
            BodyMode::Protobuf => "protobuf",
            BodyMode::None => "none",
        }
    }
}

/// The compiled `mirror.compare` section.
#[derive(Debug, Clone)]
pub struct CompareSpec {
    /// Lowercase header names.
    pub headers: Vec<String>,
    pub body: BodyMode,
    /// `compare.ignore` in `json` mode.
    pub ignore: Vec<IgnorePattern>,
    /// `compare.ignore` in `protobuf` mode.
    pub protobuf_ignore: Vec<protobuf_diff::IgnorePattern>,
    pub max_body_bytes: usize,
    /// `compare.endpoints`: the names differences are counted and noise is learned under.
    pub endpoints: Templates,
}

impl CompareSpec {
    /// What decides which elements two answers differ on, and under which endpoint: noise
    /// learned under other settings means something else, so it is dropped when this changes.
    pub fn fingerprint(&self) -> u64 {
        let limit = self.max_body_bytes.to_le_bytes();
        let mut parts: Vec<&[u8]> = vec![b"body", self.body.as_str().as_bytes(), b"limit", &limit];
        parts.push(b"headers");
        parts.extend(self.headers.iter().map(String::as_bytes));
        parts.push(b"ignore");
        parts.extend(self.ignore.iter().map(|p| p.as_str().as_bytes()));
        parts.extend(self.protobuf_ignore.iter().map(|p| p.as_str().as_bytes()));
        parts.push(b"endpoints");
        let endpoints = self.endpoints.describe();
        for (name, path) in &endpoints {
            parts.push(name.as_bytes());
            parts.push(path.as_bytes());
        }
        noise::fingerprint(&parts)
    }
}

label_enum! {
    /// The `result` label of `progressive_delivery_comparisons_total`.
    pub enum Outcome {
        Match = "match",
        /// With a baseline: the canary differed from it only where two healthy instances of
        /// the primary's version differ too.
        Noise = "noise",
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
    /// A gRPC body in `protobuf` mode: its messages, decoded.
    Messages(Vec<Vec<u8>>),
    /// `compare.body` is `none`.
    Ignored,
    /// Its `content-encoding` could not be undone: why.
    Undecodable(String),
}

/// Reduces a body to a [`Body`] chunk by chunk.
pub struct BodyCapture {
    mode: BodyMode,
    limit: usize,
    len: usize,
    /// Digesting as it streams; `None` when the bytes are kept instead.
    hasher: Option<Xxh64>,
    kept: Vec<u8>,
}

impl BodyCapture {
    /// For a body sent as it is (no `content-encoding`).
    pub fn new(spec: &CompareSpec) -> Self {
        Self::with_encoding(spec, false)
    }

    /// For the body of a response with these headers: an encoded body is kept, even in
    /// `bytes` mode, so [`Answer::from_headers`] can decode it first.
    pub fn for_headers(spec: &CompareSpec, headers: &[(String, Vec<u8>)]) -> Self {
        Self::with_encoding(spec, !content_encoding(headers).is_empty())
    }

    fn with_encoding(spec: &CompareSpec, encoded: bool) -> Self {
        BodyCapture {
            mode: spec.body,
            limit: spec.max_body_bytes,
            len: 0,
            hasher: (spec.body == BodyMode::Bytes && !encoded).then(|| Xxh64::new(0)),
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

    /// A chunk the host handed over as a `Vec` is kept as it is when it is the first: most
    /// bodies come in one chunk, which then costs no second copy.
    pub fn push(&mut self, chunk: impl AsRef<[u8]> + Into<Vec<u8>>) {
        let bytes = chunk.as_ref();
        self.len = self.len.saturating_add(bytes.len());
        if self.len > self.limit {
            // Past the limit the body is skipped: free what was held at once.
            self.hasher = None;
            self.kept = Vec::new();
            return;
        }
        match (self.mode, &mut self.hasher) {
            (BodyMode::None, _) => {}
            (_, Some(h)) => h.update(bytes),
            (_, None) if self.kept.is_empty() => self.kept = chunk.into(),
            (_, None) => self.kept.extend_from_slice(bytes),
        }
    }

    pub fn finish(self) -> Body {
        if self.mode == BodyMode::None {
            return Body::Ignored;
        }
        if self.len > self.limit {
            return Body::TooLarge { len: self.len };
        }
        match self.hasher {
            Some(h) => Body::Digest {
                len: self.len,
                xxh64: h.digest(),
            },
            None => Body::Kept(self.kept),
        }
    }
}

/// One side's answer, its body decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Values of `compare.headers`, index-aligned; several values joined with `, `.
    pub headers: Vec<Option<Vec<u8>>>,
    pub body: Body,
    /// The answer to a gRPC request: its status and `grpc-message`.
    pub grpc: Option<(grpc::Status, Option<String>)>,
}

/// Messages of one gRPC body compared at most; a longer stream is not compared.
pub const MAX_GRPC_MESSAGES: usize = 4096;

impl Answer {
    /// The answer to a gRPC request: [`Answer::from_headers`], the status from the trailers
    /// (or the headers of a trailers-only answer), and in `protobuf` mode the body split into
    /// its messages, each decoded per `grpc-encoding`.
    pub fn from_grpc(
        spec: &CompareSpec,
        headers: &[(String, Vec<u8>)],
        trailers: &[(String, Vec<u8>)],
        body: Body,
    ) -> Answer {
        let mut answer = Answer::from_headers(spec, headers, body);
        answer.grpc = Some((
            grpc::status(headers, trailers),
            grpc::message(headers, trailers),
        ));
        if spec.body == BodyMode::Protobuf {
            if let Body::Kept(raw) = &answer.body {
                let encoding = header(headers, "grpc-encoding").unwrap_or_default();
                answer.body = match grpc::decoded_messages(
                    raw,
                    &encoding,
                    spec.max_body_bytes,
                    MAX_GRPC_MESSAGES,
                ) {
                    Ok(messages) => {
                        Body::Messages(messages.into_iter().map(|m| m.into_owned()).collect())
                    }
                    Err(e) => Body::Undecodable(e.to_string()),
                };
            }
        }
        answer
    }

    /// Picks what the comparison needs out of a response's headers, and decodes a body its
    /// `content-encoding` says is encoded. A missing or unparsable `:status` is 0, which
    /// differs from any real status.
    pub fn from_headers(spec: &CompareSpec, headers: &[(String, Vec<u8>)], body: Body) -> Answer {
        let status = header(headers, ":status")
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(0);
        let encoding = content_encoding(headers);
        let body = match body {
            Body::Kept(raw) if !encoding.is_empty() => {
                match decode::decode(&encoding, &raw, spec.max_body_bytes) {
                    Ok(decoded) if spec.body == BodyMode::Bytes => Body::Digest {
                        len: decoded.len(),
                        xxh64: xxh64(&decoded, 0),
                    },
                    Ok(decoded) => Body::Kept(decoded.into_owned()),
                    Err(e) => Body::Undecodable(e.to_string()),
                }
            }
            // Digested as it streamed (a capture made without the headers): the content is
            // not known. An empty body tells a coding decoded here from one that is not.
            Body::Digest { .. } if !encoding.is_empty() => {
                Body::Undecodable(match decode::decode(&encoding, &[], 0) {
                    Err(e) => e.to_string(),
                    Ok(_) => "the encoded body was digested before it could be decoded".into(),
                })
            }
            other => other,
        };
        Answer {
            status,
            headers: spec.headers.iter().map(|n| header(headers, n)).collect(),
            body,
            grpc: None,
        }
    }
}

impl Answer {
    /// A whole recorded response, captured as the stream captures one (its body in one
    /// chunk): for a tool or a test that has the answer at once rather than as it streams.
    pub fn from_response(spec: &CompareSpec, headers: &[(String, Vec<u8>)], body: &[u8]) -> Answer {
        let mut capture = BodyCapture::for_headers(spec, headers);
        if capture.wants(body.len()) {
            capture.push(body);
        } else {
            capture.skip(body.len());
        }
        Answer::from_headers(spec, headers, capture.finish())
    }
}

/// `content-encoding`, empty for none or `identity`.
fn content_encoding(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let value = header(headers, "content-encoding").unwrap_or_default();
    let trimmed = value.trim_ascii();
    if trimmed.eq_ignore_ascii_case(b"identity") {
        Vec::new()
    } else {
        trimmed.to_vec()
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

/// Envoy answers a callout that never reached its cluster itself: a reset gives no headers at
/// all, a refused connection a 503 and the callout's own timeout a 504, both without the
/// `x-envoy-upstream-service-time` header its router puts on every real upstream answer.
/// Those are failures of the copy, not `side`'s answer (`side`: "canary" or "baseline").
///
/// A reset is also what Envoy sends when its timeout fires after the headers came but before
/// the body finished: no 504 then, since the headers were already taken. A reset at the
/// timeout (`elapsed_ms` since dispatch, measured a little after Envoy started its own
/// timer, hence the slack) is that timeout, not the upstream breaking the connection.
pub fn callout_failure(
    side: &str,
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
                    format!("the {side}'s answer did not complete within mirror.timeout_ms"),
                )
            } else {
                Verdict::new(Outcome::MirrorError, format!("the {side} reset the stream"))
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
    // For a gRPC copy Envoy's stand-in is gRPC too: HTTP 200 with `grpc-status` 14
    // (UNAVAILABLE) for 503, 4 (DEADLINE_EXCEEDED) for its timeout.
    let grpc = headers
        .iter()
        .any(|(n, _)| n == "grpc-status")
        .then(|| grpc::status(headers, &[]));
    Some(match (status.as_slice(), &grpc) {
        (b"504", _) | (_, Some(grpc::Status::Code(4))) => {
            Verdict::new(Outcome::MirrorTimeout, "no answer within mirror.timeout_ms")
        }
        (other, None) => Verdict::new(
            Outcome::MirrorError,
            format!(
                "no answer from the {side} (Envoy replied {})",
                String::from_utf8_lossy(other)
            ),
        ),
        (other, Some(code)) => Verdict::new(
            Outcome::MirrorError,
            format!(
                "no answer from the {side} (Envoy replied {}, grpc-status {code}{})",
                String::from_utf8_lossy(other),
                grpc_message(&grpc::message(headers, &[]))
            ),
        ),
    })
}

/// `: "message"` for a log line, or nothing without a `grpc-message`.
fn grpc_message(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(": {m:?}"),
        None => String::new(),
    }
}

/// The canary's callout failure, as [`callout_failure`].
pub fn canary_failure(
    headers: &[(String, Vec<u8>)],
    elapsed_ms: u64,
    timeout_ms: u32,
) -> Option<Verdict> {
    callout_failure("canary", headers, elapsed_ms, timeout_ms)
}

/// Elements listed per comparison at most: as many as the noise learner takes from one
/// observation, and a bound on the metric updates one comparison makes.
pub const MAX_DIFFERENCES: usize = 32;

/// One element on which two answers differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// [`noise::STATUS`], [`noise::GRPC_STATUS`], [`header_element`], a JSON or field-number
    /// pointer with indices as `*`, or [`noise::BODY`] for a body compared as bytes.
    pub element: String,
    /// What a mismatch on it is: `status_mismatch`, `header_mismatch` or `body_mismatch`.
    pub outcome: Outcome,
    /// For the log line: the element and both values.
    pub detail: String,
}

/// Every element two answers differ on, in comparison order, at most [`MAX_DIFFERENCES`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Differences {
    pub list: Vec<Diff>,
    /// The bodies were not compared, and why (over the limit, not decodable): what the list
    /// says of them is unknown.
    pub body_skipped: Option<String>,
}

impl Differences {
    /// The two-way verdict: the first difference, else skipped when the bodies were not
    /// compared, else a match.
    pub fn verdict(&self) -> Verdict {
        match (self.list.first(), &self.body_skipped) {
            (Some(d), _) => Verdict::new(d.outcome, d.detail.clone()),
            (None, Some(why)) => Verdict::new(Outcome::Skipped, why.clone()),
            (None, None) => Verdict::new(Outcome::Match, ""),
        }
    }

    pub fn elements(&self) -> Vec<&str> {
        self.list.iter().map(|d| d.element.as_str()).collect()
    }

    fn push(&mut self, element: String, outcome: Outcome, detail: String) {
        if self.list.len() < MAX_DIFFERENCES {
            self.list.push(Diff {
                element,
                outcome,
                detail,
            });
        }
    }

    fn room(&self) -> usize {
        MAX_DIFFERENCES.saturating_sub(self.list.len())
    }
}

/// The verdict on a canary judged against the baseline: `judgement` is the noise learner's
/// on `judged.elements()` (src/noise.rs `judge`). Agreement (a match, or differences only on
/// noise) is `skipped` when the bodies were not compared; a mismatch is the first element that
/// is not noise, returned with it for the log line.
pub fn judged_verdict(judged: &Differences, judgement: Judgement<'_>) -> (Verdict, Option<String>) {
    let agreed = |outcome| match &judged.body_skipped {
        Some(why) => Verdict::new(Outcome::Skipped, why.clone()),
        None => Verdict::new(outcome, ""),
    };
    match judgement {
        Judgement::Match => (agreed(Outcome::Match), None),
        Judgement::Noise => (agreed(Outcome::Noise), None),
        Judgement::Mismatch { index, .. } => match judged.list.get(index) {
            Some(d) => (
                Verdict::new(d.outcome, d.detail.clone()),
                Some(d.element.clone()),
            ),
            None => (judged.verdict(), None),
        },
    }
}

/// Compares in the order a person debugging would: status, then headers, then the body.
pub fn compare(spec: &CompareSpec, primary: &Answer, canary: &Answer) -> Verdict {
    differences(spec, primary, canary).verdict()
}

/// Every element `a` and `b` differ on; `detail`s read "`a`'s value vs `b`'s".
pub fn differences(spec: &CompareSpec, a: &Answer, b: &Answer) -> Differences {
    let mut out = Differences::default();
    if a.status != b.status {
        out.push(
            noise::STATUS.to_string(),
            Outcome::StatusMismatch,
            format!("status {} vs {}", a.status, b.status),
        );
    }
    // A call that failed sends no messages: when the two statuses differ, the bodies differ
    // because of it, and are not compared (nor counted as elements of their own).
    let mut bodies = true;
    if let (Some((x, xm)), Some((y, ym))) = (&a.grpc, &b.grpc) {
        if x != y {
            bodies = false;
            let messages = if xm.is_none() && ym.is_none() {
                String::new()
            } else {
                format!(", grpc-message {} vs {}", quoted_text(xm), quoted_text(ym))
            };
            out.push(
                noise::GRPC_STATUS.to_string(),
                Outcome::StatusMismatch,
                format!("grpc-status {x} vs {y}{messages}"),
            );
        }
    }
    for (i, name) in spec.headers.iter().enumerate() {
        let x = a.headers.get(i).cloned().flatten();
        let y = b.headers.get(i).cloned().flatten();
        if x != y {
            out.push(
                header_element(name),
                Outcome::HeaderMismatch,
                format!("header {name}: {} vs {}", quoted(&x), quoted(&y)),
            );
        }
    }
    if bodies {
        body_differences(spec, a, b, &mut out);
    }
    out
}

fn body_differences(spec: &CompareSpec, a: &Answer, b: &Answer, out: &mut Differences) {
    match (&a.body, &b.body) {
        (Body::Ignored, _) | (_, Body::Ignored) => {}
        (Body::TooLarge { len }, _) | (_, Body::TooLarge { len }) => {
            out.body_skipped = Some(format!(
                "body of {len} bytes is over compare.max_body_bytes ({})",
                spec.max_body_bytes
            ));
        }
        (Body::Undecodable(why), _) | (_, Body::Undecodable(why)) => {
            out.body_skipped = Some(format!("body not compared: {why}"));
        }
        (Body::Digest { len: al, xxh64: ah }, Body::Digest { len: bl, xxh64: bh }) => {
            if al != bl || ah != bh {
                out.push(
                    noise::BODY.to_string(),
                    Outcome::BodyMismatch,
                    format!("body differs ({al} vs {bl} bytes)"),
                );
            }
        }
        (Body::Kept(x), Body::Kept(y)) if spec.body == BodyMode::Protobuf => {
            if x != y {
                // As one message, the same type as a gRPC body's: one copy of the walker.
                protobuf_differences(spec, std::slice::from_ref(x), std::slice::from_ref(y), out);
            }
        }
        (Body::Kept(x), Body::Kept(y)) => json_differences(spec, x, y, out),
        (Body::Messages(x), Body::Messages(y)) => {
            if x != y {
                protobuf_differences(spec, x, y, out);
            }
        }
        // Both sides are built from the same spec, so the kinds agree; if not, say so.
        _ => out.body_skipped = Some("bodies captured differently".to_string()),
    }
}

fn json_differences(spec: &CompareSpec, x: &[u8], y: &[u8], out: &mut Differences) {
    // Equal bytes are equal JSON, or equal non-JSON: a match either way. A canary that
    // answers like the primary is the common case, and parsing, walking and freeing the two
    // trees costs hundreds of times more than comparing the bytes.
    if x == y {
        return;
    }
    if let Some(found) = json_diff::body_differences(x, y, &spec.ignore, out.room()) {
        for d in found.differences {
            out.push(
                d.element,
                Outcome::BodyMismatch,
                format!("body {}", d.difference),
            );
        }
        return;
    }
    // Not JSON on at least one side, and the bytes differ.
    out.push(
        noise::BODY.to_string(),
        Outcome::BodyMismatch,
        format!("body differs ({} vs {} bytes)", x.len(), y.len()),
    );
}

fn protobuf_differences(spec: &CompareSpec, x: &[Vec<u8>], y: &[Vec<u8>], out: &mut Differences) {
    let found = protobuf_diff::all_differences(x, y, &spec.protobuf_ignore, out.room());
    for d in found.differences {
        out.push(
            d.element,
            Outcome::BodyMismatch,
            format!("body {}", d.difference),
        );
    }
}

/// A `grpc-message` for a log line: quoted, or `(absent)`.
fn quoted_text(v: &Option<String>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(text) => format!("{text:?}"),
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
            protobuf_ignore: Vec::new(),
            max_body_bytes: limit,
            endpoints: Templates::default(),
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
            body.push(*c);
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
            // Encodings: decoded first (see `encoded_bodies`); what cannot be is not compared.
            (&json, ("200", vec![("content-encoding", "gzip")], vec![b"\x1f\x8b"]), ("200", vec![], vec![b"{}"]), Outcome::Skipped,
                "body not compared: the body does not decode: gzip header cut short"),
            (&bytes, ("200", vec![("content-encoding", "br")], vec![b"z"]), ("200", vec![("content-encoding", "br")], vec![b"z"]), Outcome::Skipped,
                "body not compared: content-encoding \"br\" is not decoded (only gzip, x-gzip, deflate, identity)"),
            (&bytes, ("200", vec![("content-encoding", "identity")], vec![b"z"]), ("200", vec![], vec![b"z"]), Outcome::Match, ""),
            // Status and headers are compared whatever the body.
            (&bytes, ("200", vec![("content-encoding", "br")], vec![b"z"]), ("500", vec![], vec![b"z"]), Outcome::StatusMismatch, "status 200 vs 500"),
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
    fn judged_verdicts() {
        let s = spec(BodyMode::Json, &[], 16);
        let ok =
            |body: &[u8]| Answer::from_response(&s, &[(":status".into(), b"200".to_vec())], body);
        let found = differences(&s, &ok(br#"{"a":1,"b":1}"#), &ok(br#"{"a":2,"b":2}"#));
        let skipped = differences(&s, &ok(b"{}"), &ok(br#"{"longer_key":1.5}"#));
        let cut = Differences::default();
        let a = "body /a: 1 vs 2";
        let b = "body /b: 1 vs 2";
        let over = "body of 18 bytes is over compare.max_body_bytes (16)";
        // (differences, judgement) -> (result, detail, element)
        type Case<'a> = (
            &'a Differences,
            Judgement<'a>,
            (Outcome, &'a str, Option<&'a str>),
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (&found, Judgement::Mismatch { index: 0, element: "/a" }, (Outcome::BodyMismatch, a, Some("/a"))),
            (&found, Judgement::Mismatch { index: 1, element: "/b" }, (Outcome::BodyMismatch, b, Some("/b"))),
            (&found, Judgement::Noise, (Outcome::Noise, "", None)),
            (&cut, Judgement::Match, (Outcome::Match, "", None)),
            (&cut, Judgement::Mismatch { index: 3, element: "/x" }, (Outcome::Match, "", None)),
            // Agreement on what was compared, but the bodies were not: not a match.
            (&skipped, Judgement::Match, (Outcome::Skipped, over, None)),
            (&skipped, Judgement::Noise, (Outcome::Skipped, over, None)),
        ];
        for (d, judgement, (outcome, detail, element)) in cases {
            let (v, e) = judged_verdict(d, judgement);
            assert_eq!(v, Verdict::new(outcome, detail), "{judgement:?}");
            assert_eq!(e.as_deref(), element, "{judgement:?}");
        }
    }

    /// A recorded answer, in one piece, is captured as one that streams.
    #[test]
    fn answers_from_whole_responses() {
        let doc = br#"{"id":42}"#;
        for mode in [BodyMode::Bytes, BodyMode::Json, BodyMode::None] {
            for (encoding, body, limit) in [
                (None, doc.to_vec(), 64),
                (None, doc.to_vec(), 4),
                (Some("gzip"), gzip(doc), 64),
                (Some("deflate"), deflate(doc), 64),
                (Some("gzip"), gzip(doc), 4),
            ] {
                let s = spec(mode, &[], limit);
                let mut h = vec![(":status".to_string(), b"200".to_vec())];
                if let Some(e) = encoding {
                    h.push(("content-encoding".to_string(), e.as_bytes().to_vec()));
                }
                assert_eq!(
                    Answer::from_response(&s, &h, &body),
                    streamed(&s, encoding, &body),
                    "{mode:?} {encoding:?} {limit}"
                );
            }
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
            // Envoy's stand-ins for a gRPC copy are gRPC answers.
            (
                h(&[(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "14"), ("grpc-message", "upstream%20connect%20error")]),
                3,
                Some((
                    Outcome::MirrorError,
                    "no answer from the canary (Envoy replied 200, grpc-status UNAVAILABLE (14): \"upstream connect error\")",
                )),
            ),
            (
                h(&[(":status", "200"), ("grpc-status", "14")]),
                3,
                Some((
                    Outcome::MirrorError,
                    "no answer from the canary (Envoy replied 200, grpc-status UNAVAILABLE (14))",
                )),
            ),
            (
                h(&[(":status", "200"), ("grpc-status", "4"), ("grpc-message", "upstream request timeout")]),
                1000,
                Some((Outcome::MirrorTimeout, "no answer within mirror.timeout_ms")),
            ),
            // The canary's own server said UNAVAILABLE: an answer, compared.
            (h(&[(":status", "200"), ("grpc-status", "14"), real]), 3, None),
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
    fn capture_keeps_the_first_chunk_without_a_copy() {
        let s = spec(BodyMode::Json, &[], 8);
        let mut c = BodyCapture::new(&s);
        let first = b"abc".to_vec();
        let at = first.as_ptr();
        c.push(first);
        assert_eq!(c.kept.as_ptr(), at);
        c.push(b"de");
        assert_eq!(c.finish(), Body::Kept(b"abcde".to_vec()));
    }

    /// The label values are public: dashboards, alerts and the Flagger templates name them.
    #[test]
    fn outcome_names() {
        let names: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            names,
            [
                "match",
                "noise",
                "status_mismatch",
                "header_mismatch",
                "body_mismatch",
                "mirror_error",
                "mirror_timeout",
                "skipped"
            ]
        );
    }

    #[test]
    fn every_difference_is_an_element() {
        let mut json = spec(BodyMode::Json, &["/ts"], 1024);
        json.headers = vec!["content-type".into(), "etag".into()];
        let bytes = spec(BodyMode::Bytes, &[], 1024);
        type Side<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [u8]);
        // (spec, a, b, [(element, outcome, detail)], body_skipped)
        type Case<'a> = (
            &'a CompareSpec,
            Side<'a>,
            Side<'a>,
            Vec<(&'a str, Outcome, &'a str)>,
            Option<&'a str>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (&json, ("200", vec![], b"{}"), ("200", vec![], b"{}"), vec![], None),
            (&json, ("200", vec![("etag", "1")], br#"{"a":[{"id":1},{"id":2}],"ts":1,"b":true}"#),
                    ("404", vec![("etag", "2")], br#"{"a":[{"id":1},{"id":3}],"ts":2,"b":"x","c":null}"#),
                vec![("status", Outcome::StatusMismatch, "status 200 vs 404"),
                     ("header etag", Outcome::HeaderMismatch, "header etag: \"1\" vs \"2\""),
                     ("/a/*/id", Outcome::BodyMismatch, "body /a/1/id: 2 vs 3"),
                     ("/b", Outcome::BodyMismatch, "body /b: true vs \"x\""),
                     ("/c", Outcome::BodyMismatch, "body /c: (absent) vs null")], None),
            (&json, ("200", vec![], b"[1]"), ("200", vec![], b"2"),
                vec![("/", Outcome::BodyMismatch, "body /: [1] vs 2")], None),
            (&json, ("200", vec![], b"text"), ("200", vec![], b"texts"),
                vec![("body", Outcome::BodyMismatch, "body differs (4 vs 5 bytes)")], None),
            (&bytes, ("200", vec![], b"x"), ("201", vec![], b"y"),
                vec![("status", Outcome::StatusMismatch, "status 200 vs 201"),
                     ("body", Outcome::BodyMismatch, "body differs (1 vs 1 bytes)")], None),
            // A body not compared: the status still is, and the list says the body is unknown.
            (&bytes, ("200", vec![], &[b'x'; 1025]), ("500", vec![], b"y"),
                vec![("status", Outcome::StatusMismatch, "status 200 vs 500")],
                Some("body of 1025 bytes is over compare.max_body_bytes (1024)")),
        ];
        for (spec, a, b, want, skipped) in cases {
            let d = differences(
                spec,
                &answer(spec, a.0, &a.1, &[a.2]),
                &answer(spec, b.0, &b.1, &[b.2]),
            );
            let got: Vec<(&str, Outcome, &str)> = d
                .list
                .iter()
                .map(|d| (d.element.as_str(), d.outcome, d.detail.as_str()))
                .collect();
            assert_eq!(got, want, "{a:?} vs {b:?}");
            assert_eq!(d.body_skipped.as_deref(), skipped, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn differences_are_bounded() {
        let s = spec(BodyMode::Json, &[], 1 << 20);
        let a: Vec<String> = (0..100).map(|i| format!("\"k{i}\":1")).collect();
        let b: Vec<String> = (0..100).map(|i| format!("\"k{i}\":2")).collect();
        let (a, b) = (
            format!("{{{}}}", a.join(",")),
            format!("{{{}}}", b.join(",")),
        );
        let d = differences(
            &s,
            &answer(&s, "200", &[], &[a.as_bytes()]),
            &answer(&s, "500", &[], &[b.as_bytes()]),
        );
        assert_eq!(d.list.len(), MAX_DIFFERENCES);
        assert_eq!(d.list[0].element, "status");
        assert_eq!(d.list[1].element, "/k0");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// An answer streamed as the host gives it, the capture made from its headers.
    fn streamed(spec: &CompareSpec, encoding: Option<&str>, body: &[u8]) -> Answer {
        let mut h = vec![(":status".to_string(), b"200".to_vec())];
        if let Some(e) = encoding {
            h.push(("content-encoding".to_string(), e.as_bytes().to_vec()));
        }
        let mut c = BodyCapture::for_headers(spec, &h);
        for piece in body.chunks(5) {
            if c.wants(piece.len()) {
                c.push(piece);
            } else {
                c.skip(piece.len());
            }
        }
        Answer::from_headers(spec, &h, c.finish())
    }

    #[test]
    fn encoded_bodies() {
        let doc = br#"{"id":42,"name":"caf\u00e9","items":[1,2,3]}"#;
        let other = br#"{"id":43,"name":"caf\u00e9","items":[1,2,3]}"#;
        let zeros = vec![b' '; 10_000];
        let (gz, gz_other, zl) = (gzip(doc), gzip(other), deflate(doc));
        let bomb = gzip(&zeros);
        let over = "body not compared: the decoded body is over 128 bytes";
        // (encoding and body of a, of b, the verdict in bytes mode, in json mode)
        type Side<'a> = (Option<&'a str>, &'a [u8]);
        type Case<'a> = (Side<'a>, Side<'a>, (Outcome, &'a str), (Outcome, &'a str));
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // One side compressed, or both in different codings: compared by content.
            ((Some("gzip"), &gz), (None, doc), (Outcome::Match, ""), (Outcome::Match, "")),
            ((Some("GZip "), &gz), (Some("deflate"), &zl), (Outcome::Match, ""), (Outcome::Match, "")),
            ((Some("x-gzip"), &gz), (Some("identity"), doc), (Outcome::Match, ""), (Outcome::Match, "")),
            ((Some("gzip"), &gz), (Some("gzip"), &gz_other),
                (Outcome::BodyMismatch, "body differs (44 vs 44 bytes)"), (Outcome::BodyMismatch, "body /id: 42 vs 43")),
            ((Some("deflate"), &zl), (None, other),
                (Outcome::BodyMismatch, "body differs (44 vs 44 bytes)"), (Outcome::BodyMismatch, "body /id: 42 vs 43")),
            // A bomb, a corrupt stream, an unknown coding: not compared, and why.
            ((Some("gzip"), &bomb), (None, doc), (Outcome::Skipped, over), (Outcome::Skipped, over)),
            ((Some("gzip"), &gz[..gz.len() - 3]), (None, doc),
                (Outcome::Skipped, "body not compared: the body does not decode: gzip trailer cut short"),
                (Outcome::Skipped, "body not compared: the body does not decode: gzip trailer cut short")),
            ((None, doc), (Some("br"), doc),
                (Outcome::Skipped, "body not compared: content-encoding \"br\" is not decoded (only gzip, x-gzip, deflate, identity)"),
                (Outcome::Skipped, "body not compared: content-encoding \"br\" is not decoded (only gzip, x-gzip, deflate, identity)")),
            // The encoded body counts against the limit as it streams too.
            ((Some("gzip"), &[b'x'; 129]), (None, doc),
                (Outcome::Skipped, "body of 129 bytes is over compare.max_body_bytes (128)"),
                (Outcome::Skipped, "body of 129 bytes is over compare.max_body_bytes (128)")),
        ];
        for (a, b, want_bytes, want_json) in cases {
            for (mode, want) in [(BodyMode::Bytes, want_bytes), (BodyMode::Json, want_json)] {
                let s = spec(mode, &[], 128);
                let v = compare(&s, &streamed(&s, a.0, a.1), &streamed(&s, b.0, b.1));
                assert_eq!(
                    v,
                    Verdict::new(want.0, want.1),
                    "{mode:?} {:?} vs {:?}",
                    a.0,
                    b.0
                );
            }
        }
        // In bytes mode an unencoded body is digested as it streams, never held.
        let s = spec(BodyMode::Bytes, &[], 128);
        let plain = streamed(&s, None, doc);
        assert!(
            matches!(plain.body, Body::Digest { len: 44, .. }),
            "{:?}",
            plain.body
        );
        assert_eq!(streamed(&s, Some("gzip"), &gz).body, plain.body);
    }

    /// One length-prefixed gRPC message.
    fn framed(flag: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    /// `{1: id, 2: {1: price}}`: a product with its price.
    fn product(id: u8, price: u8) -> Vec<u8> {
        vec![0x08, id, 0x12, 0x02, 0x08, price]
    }

    #[test]
    fn grpc_answers() {
        use std::io::Write;
        let mut protobuf = spec(BodyMode::Protobuf, &[], 64);
        let mut ignoring = protobuf.clone();
        ignoring.protobuf_ignore =
            vec![crate::protobuf_diff::IgnorePattern::parse("/2/1").unwrap()];
        let bytes = spec(BodyMode::Bytes, &[], 64);
        protobuf.headers.clear();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&product(7, 100)).unwrap();
        let gzipped = framed(1, &gz.finish().unwrap());
        let one = framed(0, &product(7, 100));
        let cheaper = framed(0, &product(7, 90));
        let stream = [framed(0, &product(1, 100)), framed(0, &product(2, 100))].concat();
        let stream_cheaper = [framed(0, &product(1, 100)), framed(0, &product(2, 90))].concat();
        let ok: &[(&str, &str)] = &[("grpc-status", "0")];
        let ct = ("content-type", "application/grpc");
        // A side: headers besides :status, trailers, body.
        type Side<'a> = (Vec<(&'a str, &'a str)>, &'a [(&'a str, &'a str)], &'a [u8]);
        #[rustfmt::skip]
        let cases: Vec<(&str, &CompareSpec, Side, Side, Outcome, &str)> = vec![
            ("same", &protobuf, (vec![ct], ok, &one), (vec![ct], ok, &one), Outcome::Match, ""),
            ("a field differs", &protobuf, (vec![ct], ok, &one), (vec![ct], ok, &cheaper), Outcome::BodyMismatch, "body /2/1: 100 vs 90"),
            ("ignored", &ignoring, (vec![ct], ok, &one), (vec![ct], ok, &cheaper), Outcome::Match, ""),
            ("a message of a stream differs", &protobuf, (vec![ct], ok, &stream), (vec![ct], ok, &stream_cheaper), Outcome::BodyMismatch,
                "body message 1 /2/1: 100 vs 90"),
            ("gzip messages decoded", &protobuf, (vec![ct], ok, &one), (vec![ct, ("grpc-encoding", "gzip")], ok, &gzipped), Outcome::Match, ""),
            ("compressed without grpc-encoding", &protobuf, (vec![ct], ok, &one), (vec![ct], ok, &gzipped), Outcome::Skipped,
                "body not compared: the message at byte 0 is flagged compressed but the stream has no grpc-encoding"),
            ("trailers-only error", &protobuf, (vec![ct], ok, &one), (vec![ct, ("grpc-status", "14"), ("grpc-message", "catalog%20down")], &[], b""),
                Outcome::StatusMismatch, "grpc-status OK (0) vs UNAVAILABLE (14), grpc-message (absent) vs \"catalog down\""),
            ("error in the trailers", &protobuf, (vec![ct], &[("grpc-status", "5")], b""), (vec![ct], &[("grpc-status", "14")], b""),
                Outcome::StatusMismatch, "grpc-status NOT_FOUND (5) vs UNAVAILABLE (14)"),
            ("the trailers' status wins", &protobuf, (vec![ct, ("grpc-status", "14")], ok, &one), (vec![ct], ok, &one), Outcome::Match, ""),
            ("no status at all", &protobuf, (vec![ct], ok, &one), (vec![ct], &[], &one), Outcome::StatusMismatch,
                "grpc-status OK (0) vs no grpc-status"),
            ("status before body", &protobuf, (vec![ct], ok, &one), (vec![ct], &[("grpc-status", "13")], &cheaper), Outcome::StatusMismatch,
                "grpc-status OK (0) vs INTERNAL (13)"),
            ("bytes mode compares the status too", &bytes, (vec![ct], ok, &one), (vec![ct], &[("grpc-status", "2")], &one), Outcome::StatusMismatch,
                "grpc-status OK (0) vs UNKNOWN (2)"),
            ("bytes mode, a field differs", &bytes, (vec![ct], ok, &one), (vec![ct], ok, &cheaper), Outcome::BodyMismatch,
                "body differs (11 vs 11 bytes)"),
        ];
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
            list.iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        for (what, spec, p, c, outcome, detail) in cases {
            let side = |(headers, trailers, body): &Side| {
                let mut h = pairs(&[(":status", "200")]);
                h.extend(pairs(headers));
                let mut capture = BodyCapture::for_headers(spec, &h);
                capture.push(*body);
                Answer::from_grpc(spec, &h, &pairs(trailers), capture.finish())
            };
            let found = differences(spec, &side(&p), &side(&c));
            assert_eq!(found.verdict(), Verdict::new(outcome, detail), "{what}");
        }
        // The elements are field-number pointers and `grpc-status`; bodies are not compared
        // when the statuses differ.
        let a = Answer::from_grpc(
            &protobuf,
            &pairs(&[(":status", "200")]),
            &pairs(ok),
            Body::Kept(one.clone()),
        );
        let b = Answer::from_grpc(
            &protobuf,
            &pairs(&[(":status", "200")]),
            &pairs(&[("grpc-status", "1")]),
            Body::Kept(cheaper.clone()),
        );
        assert_eq!(differences(&protobuf, &a, &b).elements(), ["grpc-status"]);
        let c = Answer::from_grpc(
            &protobuf,
            &pairs(&[(":status", "200")]),
            &pairs(ok),
            Body::Kept(cheaper.clone()),
        );
        assert_eq!(differences(&protobuf, &a, &c).elements(), ["/2/1"]);
    }

    /// `protobuf` mode on an answer that is not gRPC: its body is one message.
    #[test]
    fn protobuf_bodies_without_grpc() {
        let s = spec(BodyMode::Protobuf, &[], 64);
        let side = |body: &[u8]| {
            let mut capture = BodyCapture::new(&s);
            capture.push(body);
            Answer::from_headers(
                &s,
                &[(":status".to_string(), b"200".to_vec())],
                capture.finish(),
            )
        };
        let v = compare(&s, &side(&product(7, 100)), &side(&product(7, 90)));
        assert_eq!(
            v,
            Verdict::new(Outcome::BodyMismatch, "body /2/1: 100 vs 90")
        );
        assert_eq!(
            compare(&s, &side(&product(7, 100)), &side(&product(7, 100))).outcome,
            Outcome::Match
        );
    }

    #[test]
    fn fingerprint_follows_the_comparison_settings() {
        let base = spec(BodyMode::Json, &["/ts"], 64);
        let fp = base.fingerprint();
        let mut changes: Vec<CompareSpec> = Vec::new();
        let mut c = base.clone();
        c.body = BodyMode::Bytes;
        c.ignore.clear();
        changes.push(c);
        let mut c = base.clone();
        c.ignore.push(IgnorePattern::parse("/id").unwrap());
        changes.push(c);
        let mut c = base.clone();
        c.headers.push("etag".into());
        changes.push(c);
        let mut c = base.clone();
        c.max_body_bytes = 65;
        changes.push(c);
        let mut c = base.clone();
        c.body = BodyMode::Protobuf;
        c.ignore.clear();
        c.protobuf_ignore = vec![crate::protobuf_diff::IgnorePattern::parse("/2").unwrap()];
        changes.push(c);
        let mut c = base.clone();
        c.endpoints = Templates::compile([("a", "/a/{id}")]).unwrap();
        changes.push(c);
        for c in &changes {
            assert_ne!(c.fingerprint(), fp, "{c:?}");
        }
        assert_eq!(base.clone().fingerprint(), fp);
        // A parameter's name is not part of what a template matches.
        let x = Templates::compile([("a", "/a/{id}")]).unwrap();
        let y = Templates::compile([("a", "/a/{account}")]).unwrap();
        assert_eq!(x.describe(), y.describe());
    }
}
