//! gRPC as the filter sees it: HTTP/2 requests and answers whose meaning is in a few headers,
//! the trailers and a body of length-prefixed messages.
//!
//! What is here needs no host: telling a gRPC request from others (`content-type`), the
//! declared methods that may be mirrored (`mirror.grpc.methods`), whether a request body is one
//! message or a stream of them, the status of an answer (`grpc-status` in the trailers, or in
//! the headers of a trailers-only answer), the messages of a body (with per-message gzip), and
//! the `grpc-timeout` a mirrored copy carries.
//!
//! gRPC-Web (`application/grpc-web*`) is not gRPC here: its trailers travel inside the body,
//! and a browser-facing proxy translates it before it reaches a gRPC server anyway.

use std::borrow::Cow;
use std::fmt;

use crate::decode::{self, DecodeError};
use crate::query::percent_decode;

/// `grpc-status` and `grpc-message` values are quoted in log lines; a huge one must not flood
/// them.
const MAX_QUOTED_BYTES: usize = 120;

/// The length prefix of every message: a compressed flag and a 4-byte big-endian length.
pub const PREFIX_LEN: usize = 5;

/// Whether a `content-type` value makes a request (or an answer) gRPC: `application/grpc`,
/// alone or with a `+subtype` (`application/grpc+proto`, `+json`, any codec) and optional
/// `;` parameters, compared case-insensitively as media types are. `application/grpc-web`,
/// `application/grpc-web+proto` and `application/grpc-web-text` are not.
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let value = value.trim_ascii();
    let media = match value.iter().position(|&b| b == b';') {
        Some(end) => value.get(..end).unwrap_or_default().trim_ascii_end(),
        None => value,
    };
    let Some(head) = media.get(..GRPC.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(GRPC) {
        return false;
    }
    match media.get(GRPC.len()..).unwrap_or_default() {
        [] => true,
        [b'+', subtype @ ..] => {
            !subtype.is_empty()
                && subtype
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        }
        _ => false,
    }
}

/// One entry of `mirror.grpc.methods`: a full method name `/package.Service/Method`, or a
/// prefix of the method ending in `*` (`/package.Service/Get*`, `/package.Service/*`).
///
/// The service part is a protobuf full name, dot-separated identifiers; a package is usual but
/// not required, as protobuf allows a `.proto` file without one (`/Greeter/SayHello`). A
/// wildcard is allowed only at the end of the method, never over services: which methods of a
/// service have no side effects is declared service by service, method by method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodPattern {
    text: String,
    /// `/package.Service/`, with both slashes.
    service: String,
    method: String,
    prefix: bool,
}

impl MethodPattern {
    /// Errors quote the entry and say what is wrong, without the field path, which the caller
    /// prefixes (`mirror.grpc.methods[2]: ...`).
    pub fn parse(entry: &str) -> Result<MethodPattern, String> {
        const SHAPE: &str = "expected \"/package.Service/Method\", or a method prefix ending in '*' (\"/package.Service/Get*\")";
        let Some(rest) = entry.strip_prefix('/') else {
            return Err(format!(
                "{entry:?} is not a gRPC method: it must start with '/' ({SHAPE})"
            ));
        };
        let (service, method) = match rest.split_once('/') {
            Some((service, method)) if !method.contains('/') => (service, method),
            Some(_) => {
                return Err(format!(
                    "{entry:?} is not a gRPC method: it has more than two '/'-separated parts ({SHAPE})"
                ))
            }
            None if rest.contains('*') => return Err(services_wildcard(entry)),
            None => {
                return Err(format!(
                    "{entry:?} is not a gRPC method: it has no method part ({SHAPE})"
                ))
            }
        };
        if service.contains('*') {
            return Err(services_wildcard(entry));
        }
        if service.is_empty() || !service.split('.').all(is_identifier) {
            return Err(format!(
                "{entry:?} is not a gRPC method: {service:?} is not a service name (identifiers separated by '.', e.g. \"shop.v1.Catalog\")"
            ));
        }
        let (name, prefix) = match method.strip_suffix('*') {
            Some(name) => (name, true),
            None => (method, false),
        };
        if name.contains('*') {
            return Err(format!(
                "{entry:?} is not a gRPC method pattern: '*' may only end the method name (e.g. \"/{service}/Get*\")"
            ));
        }
        let valid = if prefix {
            name.is_empty() || is_identifier(name)
        } else {
            is_identifier(name)
        };
        if !valid {
            return Err(format!(
                "{entry:?} is not a gRPC method: {method:?} is not a method name (an identifier such as \"GetProduct\", or a prefix of one ending in '*')"
            ));
        }
        Ok(MethodPattern {
            text: entry.to_string(),
            service: format!("/{service}/"),
            method: name.to_string(),
            prefix,
        })
    }

    /// The entry as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a request's `:path` names a method this entry declares. gRPC method names are
    /// case-sensitive and a gRPC `:path` has no query, so a path with one does not match.
    pub fn matches(&self, path: &[u8]) -> bool {
        let Some(method) = path.strip_prefix(self.service.as_bytes()) else {
            return false;
        };
        if self.prefix {
            method.starts_with(self.method.as_bytes()) && is_identifier_bytes(method)
        } else {
            method == self.method.as_bytes()
        }
    }
}

fn services_wildcard(entry: &str) -> String {
    format!(
        "{entry:?} is not a gRPC method pattern: a wildcard may cover the methods of one service (\"/package.Service/*\"), not services"
    )
}

fn is_identifier(s: &str) -> bool {
    is_identifier_bytes(s.as_bytes())
}

/// A protobuf identifier: a letter or `_`, then letters, digits and `_`.
fn is_identifier_bytes(s: &[u8]) -> bool {
    match s.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        None => false,
    }
}

/// Whether any of `patterns` declares the method `path` names.
pub fn is_declared(patterns: &[MethodPattern], path: &[u8]) -> bool {
    patterns.iter().any(|p| p.matches(path))
}

/// The method a `:path` names, `/package.Service/Method`, when it is well-formed: the
/// endpoint a gRPC answer's noise is learned for. `None` for anything else (a query, a third
/// part, a bad name), which a gRPC server would answer `UNIMPLEMENTED`.
pub fn method_name(path: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(path).ok()?;
    let (service, method) = text.strip_prefix('/')?.split_once('/')?;
    let ok = !service.is_empty() && service.split('.').all(is_identifier) && is_identifier(method);
    ok.then_some(text)
}

/// How a request body splits into gRPC messages, as far as it has come.
///
/// A unary or server-streaming call sends exactly one message and ends its side of the stream;
/// the two cannot be told apart on the wire and both are one request. A client-streaming or
/// bidirectional call may send any number, and may keep its side open while the answer flows.
/// So, from what the filter sees of the request:
///
/// - more bytes than the first message's prefix announces: a second message, a stream;
/// - the request ended right after its first message: one request;
/// - the request ended with no message at all, or within a message: not one request (the
///   former is a client stream that sent nothing, the latter no valid gRPC request);
/// - the request has not ended: undecided. An answer that begins while the request is still
///   undecided belongs to a stream too: a unary or server-streaming client ends its side
///   together with its one message, before the server can have answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestShape {
    /// Exactly one message, and the request ended: unary or server-streaming.
    Single,
    /// More than one message: client-streaming or bidirectional.
    Stream,
    /// The request ended without a message.
    Empty,
    /// The request ended within a message's prefix or data, or a prefix's flag is neither 0
    /// nor 1.
    Malformed,
    /// The request has not ended and has sent at most one message so far.
    Pending,
}

/// Follows a request body chunk by chunk in constant memory: only the first message's prefix
/// and the count of bytes are kept, however long the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFraming {
    prefix: [u8; PREFIX_LEN],
    /// Bytes of the body seen so far.
    seen: u64,
}

impl RequestFraming {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next chunk of the request body. Only its length is kept past the prefix: the
    /// caller decides whether to keep the bytes themselves.
    pub fn push(&mut self, chunk: &[u8]) {
        let have = usize::try_from(self.seen).unwrap_or(PREFIX_LEN);
        for (slot, byte) in self.prefix.iter_mut().skip(have).zip(chunk) {
            *slot = *byte;
        }
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        self.seen = self.seen.saturating_add(len);
    }

    /// Takes the length of a chunk whose bytes were not handed over; only for chunks after the
    /// first [`PREFIX_LEN`] bytes, which [`RequestFraming::push`] must see.
    pub fn skip(&mut self, len: usize) {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        self.seen = self.seen.saturating_add(len);
    }

    /// The request's shape so far; `ended` is whether the client has ended its side.
    pub fn shape(&self, ended: bool) -> RequestShape {
        let prefix_len = PREFIX_LEN as u64;
        if self.seen < prefix_len {
            return match (ended, self.seen) {
                (false, _) => RequestShape::Pending,
                (true, 0) => RequestShape::Empty,
                (true, _) => RequestShape::Malformed,
            };
        }
        let [flag, l0, l1, l2, l3] = self.prefix;
        if flag > 1 {
            return RequestShape::Malformed;
        }
        let whole = prefix_len.saturating_add(u64::from(u32::from_be_bytes([l0, l1, l2, l3])));
        match (self.seen.cmp(&whole), ended) {
            (std::cmp::Ordering::Greater, _) => RequestShape::Stream,
            (std::cmp::Ordering::Equal, true) => RequestShape::Single,
            (std::cmp::Ordering::Less, true) => RequestShape::Malformed,
            (_, false) => RequestShape::Pending,
        }
    }
}

/// One length-prefixed message of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The prefix's compressed flag: the data is encoded per the stream's `grpc-encoding`.
    pub compressed: bool,
    pub data: &'a [u8],
}

/// A body that is not a sequence of whole length-prefixed messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The body ends within a message's 5-byte prefix.
    TruncatedPrefix { offset: usize, have: usize },
    /// The body ends within a message's data.
    TruncatedMessage {
        offset: usize,
        declared: u32,
        have: usize,
    },
    /// A prefix's flag byte is neither 0 (plain) nor 1 (compressed).
    Flag { offset: usize, flag: u8 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TruncatedPrefix { offset, have } => write!(
                f,
                "the body ends {have} bytes into the 5-byte prefix of the message at byte {offset}"
            ),
            FrameError::TruncatedMessage {
                offset,
                declared,
                have,
            } => write!(
                f,
                "the message at byte {offset} declares {declared} bytes but the body holds {have}"
            ),
            FrameError::Flag { offset, flag } => write!(
                f,
                "the message at byte {offset} has compressed flag {flag} (only 0 and 1 are defined)"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// The messages of a body, in order; the first malformed prefix or truncated message ends it
/// with an error. An empty body has none.
pub fn frames(body: &[u8]) -> Frames<'_> {
    Frames {
        body,
        offset: 0,
        failed: false,
    }
}

/// The iterator of [`frames`].
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    body: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Message<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.body.get(self.offset..).unwrap_or_default();
        if rest.is_empty() {
            return None;
        }
        let offset = self.offset;
        let result = match rest {
            [flag, l0, l1, l2, l3, data @ ..] => {
                let declared = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
                let len = usize::try_from(declared).unwrap_or(usize::MAX);
                match (*flag, data.get(..len)) {
                    (flag @ 2.., _) => Err(FrameError::Flag { offset, flag }),
                    (_, None) => Err(FrameError::TruncatedMessage {
                        offset,
                        declared,
                        have: data.len(),
                    }),
                    (flag, Some(data)) => {
                        self.offset = offset.saturating_add(PREFIX_LEN).saturating_add(len);
                        Ok(Message {
                            compressed: flag == 1,
                            data,
                        })
                    }
                }
            }
            short => Err(FrameError::TruncatedPrefix {
                offset,
                have: short.len(),
            }),
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// A body whose messages cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Frame(FrameError),
    /// A compressed message in a stream whose `grpc-encoding` is absent or `identity`.
    CompressedWithoutEncoding {
        offset: usize,
    },
    /// A compressed message that does not decode, or decodes past the limit.
    Decode(DecodeError),
    /// More messages than the caller's bound.
    TooManyMessages {
        limit: usize,
    },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Frame(e) => e.fmt(f),
            BodyError::CompressedWithoutEncoding { offset } => write!(
                f,
                "the message at byte {offset} is flagged compressed but the stream has no grpc-encoding"
            ),
            BodyError::Decode(DecodeError::Unsupported(name)) => {
                write!(f, "grpc-encoding {name:?} is not decoded (only gzip, deflate, identity)")
            }
            BodyError::Decode(DecodeError::TooLarge { limit }) => {
                write!(f, "the decoded messages are over {limit} bytes")
            }
            BodyError::Decode(DecodeError::Corrupt(reason)) => {
                write!(f, "a compressed message does not decode: {reason}")
            }
            BodyError::TooManyMessages { limit } => {
                write!(f, "the body holds more than {limit} messages")
            }
        }
    }
}

impl std::error::Error for BodyError {}

/// Every message of a body, each decoded per `grpc_encoding` (the stream's `grpc-encoding`
/// header, empty when absent) if its compressed flag is set, as `decode::decode` undoes a
/// `Content-Encoding`. `limit` bounds the bytes decoded from all the compressed messages
/// together, so a few small gzip bombs cannot add up; plain messages borrow from `body`, which
/// the caller already holds within its own bound. At most `max_messages` messages.
pub fn decoded_messages<'a>(
    body: &'a [u8],
    grpc_encoding: &[u8],
    limit: usize,
    max_messages: usize,
) -> Result<Vec<Cow<'a, [u8]>>, BodyError> {
    let coding = grpc_encoding.trim_ascii();
    let plain = coding.is_empty() || coding.eq_ignore_ascii_case(b"identity");
    let mut out = Vec::new();
    let mut left = limit;
    let mut offset = 0usize;
    for message in frames(body) {
        let message = message.map_err(BodyError::Frame)?;
        if out.len() >= max_messages {
            return Err(BodyError::TooManyMessages {
                limit: max_messages,
            });
        }
        let at = offset;
        offset = offset
            .saturating_add(PREFIX_LEN)
            .saturating_add(message.data.len());
        if !message.compressed {
            out.push(Cow::Borrowed(message.data));
            continue;
        }
        if plain {
            return Err(BodyError::CompressedWithoutEncoding { offset: at });
        }
        let decoded = decode::decode(coding, message.data, left).map_err(|e| match e {
            DecodeError::TooLarge { .. } => BodyError::Decode(DecodeError::TooLarge { limit }),
            other => BodyError::Decode(other),
        })?;
        left = left.saturating_sub(decoded.len());
        out.push(decoded);
    }
    Ok(out)
}

/// The status a gRPC answer ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A `grpc-status` code, from the trailers or from the headers of a trailers-only answer.
    Code(u32),
    /// No `grpc-status` anywhere: the answer is not a gRPC one (a proxy's own HTTP error) or
    /// its stream was cut before the trailers. A gRPC client sees an error either way.
    Missing,
    /// A `grpc-status` that is not one decimal number, or several values: as sent, joined with
    /// `, ` and cut for the log.
    Invalid(String),
}

impl Status {
    /// Whether the call succeeded: `grpc-status: 0`.
    pub fn is_ok(&self) -> bool {
        *self == Status::Code(0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Code(code) => match code_name(*code) {
                Some(name) => write!(f, "{name} ({code})"),
                None => write!(f, "unknown code ({code})"),
            },
            Status::Missing => f.write_str("no grpc-status"),
            Status::Invalid(value) => write!(f, "invalid grpc-status {value:?}"),
        }
    }
}

/// The name of a status code as gRPC's status codes document defines it, `None` past 16.
pub fn code_name(code: u32) -> Option<&'static str> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(usize::try_from(code).ok()?).copied()
}

/// The status of an answer: `grpc-status` in `trailers` when they have one, else in `headers`
/// (a trailers-only answer: an error sent at once, with no message, as headers that end the
/// stream). Header names are lowercase, as the host gives them.
pub fn status(headers: &[(String, Vec<u8>)], trailers: &[(String, Vec<u8>)]) -> Status {
    let values = |block: &[(String, Vec<u8>)]| -> Vec<Vec<u8>> {
        block
            .iter()
            .filter(|(n, _)| n == "grpc-status")
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut found = values(trailers);
    if found.is_empty() {
        found = values(headers);
    }
    match found.as_slice() {
        [] => Status::Missing,
        [one] => match parse_code(one) {
            Some(code) => Status::Code(code),
            None => Status::Invalid(cut(&String::from_utf8_lossy(one))),
        },
        several => {
            let mut text = String::new();
            for (i, value) in several.iter().enumerate() {
                if i > 0 {
                    text.push_str(", ");
                }
                text.push_str(&String::from_utf8_lossy(value));
            }
            Status::Invalid(cut(&text))
        }
    }
}

/// Decimal digits only, as gRPC implementations parse it: no sign, no space, no hex.
fn parse_code(value: &[u8]) -> Option<u32> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The `grpc-message` next to the status ([`status`]'s rules on where), percent-decoded as
/// gRPC encodes it, lossily UTF-8 and cut for the log. `None` when there is none.
pub fn message(headers: &[(String, Vec<u8>)], trailers: &[(String, Vec<u8>)]) -> Option<String> {
    let find = |block: &[(String, Vec<u8>)]| {
        block
            .iter()
            .find(|(n, _)| n == "grpc-message")
            .map(|(_, v)| v.clone())
    };
    let has_status = |block: &[(String, Vec<u8>)]| block.iter().any(|(n, _)| n == "grpc-status");
    let raw = if has_status(trailers) || !has_status(headers) {
        find(trailers).or_else(|| find(headers))
    } else {
        find(headers)
    }?;
    Some(cut(&String::from_utf8_lossy(&percent_decode(&raw))))
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_QUOTED_BYTES {
        return text.to_string();
    }
    let mut end = MAX_QUOTED_BYTES;
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    format!("{}…", text.get(..end).unwrap_or_default())
}

/// A `grpc-timeout` value in nanoseconds: 1 to 8 ASCII digits and a unit, `H` hours, `M`
/// minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds. `None` for
/// anything else.
pub fn parse_timeout(value: &[u8]) -> Option<u128> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u128 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let nanos_per_unit: u128 = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    };
    amount.checked_mul(nanos_per_unit)
}

/// The `grpc-timeout` a mirrored copy carries, so the canary's server gives up when the
/// filter stops waiting for it (`timeout_ms`), not later: the client's value when it is
/// within `timeout_ms`, as sent; `timeout_ms` (as `{timeout_ms}m`) when the client's is
/// longer or absent. `None` when the client's value is malformed: the copy keeps it as sent,
/// so the canary's server refuses it as the primary's does, rather than the copy being a
/// request the primary never got.
pub fn capped_timeout(client: Option<&[u8]>, timeout_ms: u32) -> Option<String> {
    let cap = format!("{timeout_ms}m");
    let Some(value) = client else {
        return Some(cap);
    };
    let nanos = parse_timeout(value)?;
    if nanos <= u128::from(timeout_ms).saturating_mul(1_000_000) {
        std::str::from_utf8(value).ok().map(str::to_string)
    } else {
        Some(cap)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    fn framed(flag: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    type Headers = Vec<(String, Vec<u8>)>;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn content_type() {
        let cases: &[(&[u8], bool)] = &[
            (b"application/grpc", true),
            (b"application/grpc+proto", true),
            (b"application/grpc+json", true),
            (b"application/grpc+my-codec.v2", true),
            (b"Application/GRPC", true),
            (b" application/grpc ", true),
            (b"application/grpc; charset=utf-8", true),
            (b"application/grpc+proto;x=y", true),
            (b"application/grpc-web", false),
            (b"application/grpc-web+proto", false),
            (b"application/grpc-web-text", false),
            (b"application/grpc-web-text+proto", false),
            (b"application/grpc+", false),
            (b"application/grpc+a b", false),
            (b"application/grpcx", false),
            (b"application/grp", false),
            (b"application/json", false),
            (b"text/plain", false),
            (b"", false),
            (b"\xffapplication/grpc", false),
        ];
        for (value, want) in cases {
            assert_eq!(
                is_grpc_content_type(value),
                *want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn method_patterns_match() {
        // entry, path, matches
        let cases: &[(&str, &str, bool)] = &[
            (
                "/shop.v1.Catalog/GetProduct",
                "/shop.v1.Catalog/GetProduct",
                true,
            ),
            (
                "/shop.v1.Catalog/GetProduct",
                "/shop.v1.Catalog/GetProducts",
                false,
            ),
            (
                "/shop.v1.Catalog/GetProduct",
                "/shop.v1.Catalog/getProduct",
                false,
            ),
            (
                "/shop.v1.Catalog/GetProduct",
                "/shop.v1.Catalog/GetProduct?x=1",
                false,
            ),
            (
                "/shop.v1.Catalog/GetProduct",
                "/shop.v2.Catalog/GetProduct",
                false,
            ),
            ("/shop.v1.Catalog/Get*", "/shop.v1.Catalog/Get", true),
            ("/shop.v1.Catalog/Get*", "/shop.v1.Catalog/GetPrices", true),
            (
                "/shop.v1.Catalog/Get*",
                "/shop.v1.Catalog/ListProducts",
                false,
            ),
            // The prefix is of the method, never across the '/' into another service.
            ("/shop.v1.Catalog/Get*", "/shop.v1.Catalog/Get/x", false),
            ("/shop.v1.Catalog/Get*", "/shop.v1.CatalogX/GetA", false),
            ("/shop.v1.Catalog/Get*", "/shop.v1.Catalog/Get?a", false),
            ("/shop.v1.Catalog/*", "/shop.v1.Catalog/PlaceOrder", true),
            ("/shop.v1.Catalog/*", "/shop.v1.Catalog/", false),
            ("/shop.v1.Catalog/*", "/shop.v1.Catalog.Admin/Drop", false),
            ("/shop.v1.Catalog/*", "/shop.v1.Catalog", false),
            ("/Greeter/SayHello", "/Greeter/SayHello", true),
            (
                "/grpc.health.v1.Health/Check",
                "/grpc.health.v1.Health/Check",
                true,
            ),
            (
                "/grpc.health.v1.Health/Check",
                "/grpc.health.v1.Health/Watch",
                false,
            ),
        ];
        for (entry, path, want) in cases {
            let p = MethodPattern::parse(entry).unwrap();
            assert_eq!(p.as_str(), *entry);
            assert_eq!(p.matches(path.as_bytes()), *want, "{entry} vs {path}");
        }
        let set: Vec<MethodPattern> = ["/a.B/Get*", "/a.B/List"]
            .iter()
            .map(|e| MethodPattern::parse(e).unwrap())
            .collect();
        assert!(is_declared(&set, b"/a.B/GetX"));
        assert!(is_declared(&set, b"/a.B/List"));
        assert!(!is_declared(&set, b"/a.B/Put"));
        assert!(!is_declared(&[], b"/a.B/List"));
    }

    #[test]
    fn method_pattern_errors() {
        let shape = "expected \"/package.Service/Method\", or a method prefix ending in '*' (\"/package.Service/Get*\")";
        let services = "a wildcard may cover the methods of one service (\"/package.Service/*\"), not services";
        let cases: Vec<(&str, String)> = vec![
            (
                "",
                format!("\"\" is not a gRPC method: it must start with '/' ({shape})"),
            ),
            (
                "shop.v1.Catalog/Get",
                format!(
                    "\"shop.v1.Catalog/Get\" is not a gRPC method: it must start with '/' ({shape})"
                ),
            ),
            (
                "/shop.v1.Catalog",
                format!("\"/shop.v1.Catalog\" is not a gRPC method: it has no method part ({shape})"),
            ),
            (
                "/shop/v1/Catalog/Get",
                format!("\"/shop/v1/Catalog/Get\" is not a gRPC method: it has more than two '/'-separated parts ({shape})"),
            ),
            (
                "/shop.v1.*",
                format!("\"/shop.v1.*\" is not a gRPC method pattern: {services}"),
            ),
            (
                "/*",
                format!("\"/*\" is not a gRPC method pattern: {services}"),
            ),
            (
                "/shop.*/Get",
                format!("\"/shop.*/Get\" is not a gRPC method pattern: {services}"),
            ),
            (
                "/*/*",
                format!("\"/*/*\" is not a gRPC method pattern: {services}"),
            ),
            (
                "/shop.v1.Catalog/*Product",
                "\"/shop.v1.Catalog/*Product\" is not a gRPC method pattern: '*' may only end the method name (e.g. \"/shop.v1.Catalog/Get*\")".to_string(),
            ),
            (
                "/shop.v1.Catalog/Get**",
                "\"/shop.v1.Catalog/Get**\" is not a gRPC method pattern: '*' may only end the method name (e.g. \"/shop.v1.Catalog/Get*\")".to_string(),
            ),
            (
                "/shop..Catalog/Get",
                "\"/shop..Catalog/Get\" is not a gRPC method: \"shop..Catalog\" is not a service name (identifiers separated by '.', e.g. \"shop.v1.Catalog\")".to_string(),
            ),
            (
                "//Get",
                "\"//Get\" is not a gRPC method: \"\" is not a service name (identifiers separated by '.', e.g. \"shop.v1.Catalog\")".to_string(),
            ),
            (
                "/1shop.Catalog/Get",
                "\"/1shop.Catalog/Get\" is not a gRPC method: \"1shop.Catalog\" is not a service name (identifiers separated by '.', e.g. \"shop.v1.Catalog\")".to_string(),
            ),
            (
                "/shop.v1.Catalog/",
                "\"/shop.v1.Catalog/\" is not a gRPC method: \"\" is not a method name (an identifier such as \"GetProduct\", or a prefix of one ending in '*')".to_string(),
            ),
            (
                "/shop.v1.Catalog/Get Product",
                "\"/shop.v1.Catalog/Get Product\" is not a gRPC method: \"Get Product\" is not a method name (an identifier such as \"GetProduct\", or a prefix of one ending in '*')".to_string(),
            ),
            (
                "/shop.v1.Catalog/9Get*",
                "\"/shop.v1.Catalog/9Get*\" is not a gRPC method: \"9Get*\" is not a method name (an identifier such as \"GetProduct\", or a prefix of one ending in '*')".to_string(),
            ),
        ];
        for (entry, want) in cases {
            assert_eq!(
                MethodPattern::parse(entry).err().as_deref(),
                Some(want.as_str()),
                "{entry:?}"
            );
        }
    }

    #[test]
    fn method_names() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (
                b"/shop.v1.Catalog/GetProduct",
                Some("/shop.v1.Catalog/GetProduct"),
            ),
            (b"/Greeter/SayHello", Some("/Greeter/SayHello")),
            (b"/shop.v1.Catalog/GetProduct?x", None),
            (b"/shop.v1.Catalog/", None),
            (b"/shop.v1.Catalog", None),
            (b"/a/b/c", None),
            (b"shop.v1.Catalog/Get", None),
            (b"/\xff/Get", None),
            (b"", None),
        ];
        for (path, want) in cases {
            assert_eq!(method_name(path), *want, "{path:?}");
        }
    }

    #[test]
    fn request_shapes() {
        use RequestShape::*;
        let one = framed(0, b"\x08\x01");
        let two = [framed(0, b"\x08\x01"), framed(0, b"")].concat();
        let empty_message = framed(0, b"");
        let compressed = framed(1, b"x");
        let bad_flag = framed(2, b"x");
        // chunks, ended, want
        let cases: Vec<(Vec<&[u8]>, bool, RequestShape)> = vec![
            (vec![], true, Empty),
            (vec![], false, Pending),
            (vec![&one], true, Single),
            (vec![&one], false, Pending),
            (vec![&empty_message], true, Single),
            // Prefix and data split across chunks, any way.
            (vec![&one[..1], &one[1..3], &one[3..]], true, Single),
            (vec![&one[..4]], true, Malformed),
            (vec![&one[..4]], false, Pending),
            (vec![&one[..6]], true, Malformed),
            (vec![&one[..6]], false, Pending),
            (vec![&two], true, Stream),
            // A stream is known as soon as the second message's first byte comes.
            (vec![&two[..8]], false, Stream),
            (vec![&one, &one], false, Stream),
            (vec![&compressed], true, Single),
            (vec![&bad_flag], true, Malformed),
            (vec![&bad_flag], false, Malformed),
            (vec![b"GET / HTTP/1.1"], true, Malformed),
        ];
        for (chunks, ended, want) in cases {
            let mut f = RequestFraming::new();
            for c in &chunks {
                f.push(c);
            }
            assert_eq!(f.shape(ended), want, "{chunks:?} ended {ended}");
        }
        // Past the prefix only lengths count.
        let big = framed(0, &[7u8; 100]);
        let mut f = RequestFraming::new();
        f.push(&big[..10]);
        f.skip(95);
        assert_eq!(f.shape(true), Single);
        f.skip(1);
        assert_eq!(f.shape(false), Stream);
        // A 4 GiB declared message is pending, not an overflow.
        let mut f = RequestFraming::new();
        f.push(&[0, 0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(f.shape(false), Pending);
        assert_eq!(f.shape(true), Malformed);
    }

    #[test]
    fn framing() {
        let a = framed(0, b"\x08\x96\x01");
        let b = framed(1, b"zz");
        let e = framed(0, b"");
        let ok: Vec<(Vec<u8>, Vec<Message>)> = vec![
            (vec![], vec![]),
            (
                a.clone(),
                vec![Message {
                    compressed: false,
                    data: b"\x08\x96\x01",
                }],
            ),
            (
                [a.clone(), e.clone(), b.clone()].concat(),
                vec![
                    Message {
                        compressed: false,
                        data: b"\x08\x96\x01",
                    },
                    Message {
                        compressed: false,
                        data: b"",
                    },
                    Message {
                        compressed: true,
                        data: b"zz",
                    },
                ],
            ),
        ];
        for (body, want) in ok {
            let got: Result<Vec<Message>, FrameError> = frames(&body).collect();
            assert_eq!(got, Ok(want), "{body:?}");
        }
        let bad: Vec<(Vec<u8>, FrameError, &str)> = vec![
            (
                vec![0, 0, 0],
                FrameError::TruncatedPrefix { offset: 0, have: 3 },
                "the body ends 3 bytes into the 5-byte prefix of the message at byte 0",
            ),
            (
                [a.clone(), vec![0]].concat(),
                FrameError::TruncatedPrefix { offset: 8, have: 1 },
                "the body ends 1 bytes into the 5-byte prefix of the message at byte 8",
            ),
            (
                a[..7].to_vec(),
                FrameError::TruncatedMessage {
                    offset: 0,
                    declared: 3,
                    have: 2,
                },
                "the message at byte 0 declares 3 bytes but the body holds 2",
            ),
            (
                vec![0, 0xff, 0xff, 0xff, 0xff],
                FrameError::TruncatedMessage {
                    offset: 0,
                    declared: u32::MAX,
                    have: 0,
                },
                "the message at byte 0 declares 4294967295 bytes but the body holds 0",
            ),
            (
                [e.clone(), framed(0x80, b"x")].concat(),
                FrameError::Flag {
                    offset: 5,
                    flag: 0x80,
                },
                "the message at byte 5 has compressed flag 128 (only 0 and 1 are defined)",
            ),
            (
                b"{\"json\": true}".to_vec(),
                FrameError::Flag {
                    offset: 0,
                    flag: b'{',
                },
                "the message at byte 0 has compressed flag 123 (only 0 and 1 are defined)",
            ),
        ];
        for (body, want, text) in bad {
            let got: Vec<_> = frames(&body).collect();
            assert_eq!(got.last(), Some(&Err(want.clone())), "{body:?}");
            // The error ends the iteration.
            assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
            assert_eq!(want.to_string(), text);
        }
    }

    #[test]
    fn decoded() {
        let plain = framed(0, b"\x08\x01");
        let zipped = framed(1, &gzip(b"\x08\x02\x12\x03abc"));
        let body = [plain.clone(), zipped.clone()].concat();
        let got = decoded_messages(&body, b"gzip", 1024, 10).unwrap();
        assert_eq!(got, [&b"\x08\x01"[..], &b"\x08\x02\x12\x03abc"[..]]);
        assert!(matches!(got[0], Cow::Borrowed(_)));
        // Plain messages need no encoding, whatever the header says.
        for coding in [&b""[..], b"identity", b"br"] {
            assert_eq!(
                decoded_messages(&plain, coding, 0, 1).unwrap(),
                [&b"\x08\x01"[..]]
            );
        }
        let bomb = framed(1, &gzip(&[0u8; 100_000]));
        let two_bombs = [framed(1, &gzip(&[0u8; 600])), framed(1, &gzip(&[0u8; 600]))].concat();
        // body, grpc-encoding, limit, max messages, error, its text
        type Case<'a> = (Vec<u8>, &'a [u8], usize, usize, BodyError, &'a str);
        let cases: Vec<Case> = vec![
            (
                zipped.clone(),
                b"",
                1024,
                10,
                BodyError::CompressedWithoutEncoding { offset: 0 },
                "the message at byte 0 is flagged compressed but the stream has no grpc-encoding",
            ),
            (
                [plain.clone(), zipped.clone()].concat(),
                b"identity",
                1024,
                10,
                BodyError::CompressedWithoutEncoding { offset: 7 },
                "the message at byte 7 is flagged compressed but the stream has no grpc-encoding",
            ),
            (
                zipped.clone(),
                b"snappy",
                1024,
                10,
                BodyError::Decode(DecodeError::Unsupported("snappy".into())),
                "grpc-encoding \"snappy\" is not decoded (only gzip, deflate, identity)",
            ),
            (
                bomb,
                b"gzip",
                65536,
                10,
                BodyError::Decode(DecodeError::TooLarge { limit: 65536 }),
                "the decoded messages are over 65536 bytes",
            ),
            // The limit is for all messages together.
            (
                two_bombs,
                b"gzip",
                1000,
                10,
                BodyError::Decode(DecodeError::TooLarge { limit: 1000 }),
                "the decoded messages are over 1000 bytes",
            ),
            (
                framed(1, b"not gzip at all, not even close"),
                b"gzip",
                1024,
                10,
                BodyError::Decode(DecodeError::Corrupt("invalid gzip header".into())),
                "a compressed message does not decode: invalid gzip header",
            ),
            (
                [plain.clone(), plain.clone()].concat(),
                b"",
                1024,
                1,
                BodyError::TooManyMessages { limit: 1 },
                "the body holds more than 1 messages",
            ),
            (
                plain[..3].to_vec(),
                b"",
                1024,
                10,
                BodyError::Frame(FrameError::TruncatedPrefix { offset: 0, have: 3 }),
                "the body ends 3 bytes into the 5-byte prefix of the message at byte 0",
            ),
        ];
        for (body, coding, limit, max, want, text) in cases {
            assert_eq!(
                decoded_messages(&body, coding, limit, max),
                Err(want.clone()),
                "{text}"
            );
            assert_eq!(want.to_string(), text);
        }
    }

    #[test]
    fn statuses() {
        let cases: Vec<(Headers, Headers, Status, &str)> = vec![
            (
                headers(&[(":status", "200")]),
                headers(&[("grpc-status", "0")]),
                Status::Code(0),
                "OK (0)",
            ),
            (
                headers(&[(":status", "200")]),
                headers(&[("grpc-status", "14"), ("grpc-message", "down")]),
                Status::Code(14),
                "UNAVAILABLE (14)",
            ),
            // Trailers-only: the status is in the headers.
            (
                headers(&[(":status", "200"), ("grpc-status", "5")]),
                vec![],
                Status::Code(5),
                "NOT_FOUND (5)",
            ),
            // The trailers are the last word.
            (
                headers(&[("grpc-status", "0")]),
                headers(&[("grpc-status", "13")]),
                Status::Code(13),
                "INTERNAL (13)",
            ),
            (
                headers(&[(":status", "503")]),
                vec![],
                Status::Missing,
                "no grpc-status",
            ),
            (vec![], vec![], Status::Missing, "no grpc-status"),
            (
                vec![],
                headers(&[("grpc-status", "16")]),
                Status::Code(16),
                "UNAUTHENTICATED (16)",
            ),
            (
                vec![],
                headers(&[("grpc-status", "17")]),
                Status::Code(17),
                "unknown code (17)",
            ),
            (
                vec![],
                headers(&[("grpc-status", "-1")]),
                Status::Invalid("-1".into()),
                "invalid grpc-status \"-1\"",
            ),
            (
                vec![],
                headers(&[("grpc-status", " 0")]),
                Status::Invalid(" 0".into()),
                "invalid grpc-status \" 0\"",
            ),
            (
                vec![],
                headers(&[("grpc-status", "")]),
                Status::Invalid("".into()),
                "invalid grpc-status \"\"",
            ),
            (
                vec![],
                headers(&[("grpc-status", "99999999999")]),
                Status::Invalid("99999999999".into()),
                "invalid grpc-status \"99999999999\"",
            ),
            (
                vec![],
                headers(&[("grpc-status", "0"), ("grpc-status", "14")]),
                Status::Invalid("0, 14".into()),
                "invalid grpc-status \"0, 14\"",
            ),
        ];
        for (h, t, want, text) in cases {
            let got = status(&h, &t);
            assert_eq!(got, want, "{h:?} {t:?}");
            assert_eq!(got.to_string(), text);
            assert_eq!(got.is_ok(), want == Status::Code(0));
        }
        let long = "9".repeat(300);
        let got = status(&headers(&[("grpc-status", &long)]), &[]);
        assert_eq!(got, Status::Invalid(format!("{}…", "9".repeat(120))));
    }

    #[test]
    fn code_names() {
        let cases = [
            (0, Some("OK")),
            (1, Some("CANCELLED")),
            (2, Some("UNKNOWN")),
            (3, Some("INVALID_ARGUMENT")),
            (4, Some("DEADLINE_EXCEEDED")),
            (5, Some("NOT_FOUND")),
            (6, Some("ALREADY_EXISTS")),
            (7, Some("PERMISSION_DENIED")),
            (8, Some("RESOURCE_EXHAUSTED")),
            (9, Some("FAILED_PRECONDITION")),
            (10, Some("ABORTED")),
            (11, Some("OUT_OF_RANGE")),
            (12, Some("UNIMPLEMENTED")),
            (13, Some("INTERNAL")),
            (14, Some("UNAVAILABLE")),
            (15, Some("DATA_LOSS")),
            (16, Some("UNAUTHENTICATED")),
            (17, None),
            (u32::MAX, None),
        ];
        for (code, want) in cases {
            assert_eq!(code_name(code), want, "{code}");
        }
    }

    #[test]
    fn messages() {
        let cases: Vec<(Headers, Headers, Option<&str>)> = vec![
            (
                vec![],
                headers(&[
                    ("grpc-status", "14"),
                    ("grpc-message", "canary%20down%3A%20%E2%9C%97"),
                ]),
                Some("canary down: ✗"),
            ),
            (
                headers(&[("grpc-status", "5"), ("grpc-message", "no such product")]),
                vec![],
                Some("no such product"),
            ),
            // Beside the status that counts.
            (
                headers(&[("grpc-message", "from headers")]),
                headers(&[("grpc-status", "3"), ("grpc-message", "from trailers")]),
                Some("from trailers"),
            ),
            (
                headers(&[("grpc-status", "3"), ("grpc-message", "from headers")]),
                vec![],
                Some("from headers"),
            ),
            (headers(&[("grpc-status", "0")]), vec![], None),
            (vec![], vec![], None),
            (
                vec![],
                headers(&[("grpc-message", "%ff%zz")]),
                Some("\u{fffd}%zz"),
            ),
        ];
        for (h, t, want) in cases {
            assert_eq!(message(&h, &t).as_deref(), want, "{h:?} {t:?}");
        }
    }

    #[test]
    fn timeouts() {
        let cases: &[(&[u8], Option<u128>)] = &[
            (b"1S", Some(1_000_000_000)),
            (b"2H", Some(7_200_000_000_000)),
            (b"3M", Some(180_000_000_000)),
            (b"250m", Some(250_000_000)),
            (b"7u", Some(7_000)),
            (b"9n", Some(9)),
            (b"0m", Some(0)),
            (b"00000001m", Some(1_000_000)),
            (b"99999999H", Some(99_999_999 * 3_600_000_000_000)),
            (b"123456789m", None),
            (b"1", None),
            (b"m", None),
            (b"", None),
            (b"1s", None),
            (b"1h", None),
            (b"-1S", None),
            (b"+1S", None),
            (b" 1S", None),
            (b"1 S", None),
            (b"1.5S", None),
            (b"1SS", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_timeout(value), *want, "{value:?}");
        }
    }

    #[test]
    fn capped_timeouts() {
        // the client's grpc-timeout, mirror.timeout_ms, the copy's
        type Case<'a> = (Option<&'a [u8]>, u32, Option<&'a str>);
        let cases: &[Case] = &[
            (None, 1000, Some("1000m")),
            (Some(b"500m"), 1000, Some("500m")),
            (Some(b"1000m"), 1000, Some("1000m")),
            (Some(b"1S"), 1000, Some("1S")),
            (Some(b"1001m"), 1000, Some("1000m")),
            (Some(b"2S"), 1000, Some("1000m")),
            (Some(b"99999999H"), 60000, Some("60000m")),
            (Some(b"999999u"), 1000, Some("999999u")),
            (Some(b"1000001u"), 1000, Some("1000m")),
            (Some(b"5n"), 1, Some("5n")),
            (Some(b"0m"), 1000, Some("0m")),
            (Some(b"soon"), 1000, None),
            (Some(b""), 1000, None),
        ];
        for (client, cap, want) in cases {
            assert_eq!(
                capped_timeout(*client, *cap).as_deref(),
                *want,
                "{client:?} {cap}"
            );
        }
    }
}
