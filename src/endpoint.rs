//! Which endpoint a request is for: its method and a path template such as
//! `GET /api/accounts/{id}/balance`, so what is learned and counted per endpoint is shared by
//! every request to it, whatever the ids in its path.
//!
//! A path either matches a configured template, whose name is the label, or is templated
//! automatically: segments that look like ids become `{id}`. Automatic labels are only a guess
//! (a path of free-form words stays as it is), so a worker keeps a bounded set of them and
//! counts the requests past it as `other`.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

/// The label of every endpoint past an [`EndpointTable`]'s cap.
pub const OTHER: &str = "other";

/// Labels are cut to this many bytes: a metric series per label must stay readable, and paths
/// can be kilobytes long.
pub const MAX_LABEL_BYTES: usize = 120;

/// What an automatically templated id segment becomes.
const ID: &str = "{id}";

/// A template the config could not use. `index` is its position in the list and `field`
/// (`name` or `path`) the field at fault, so the config layer can prefix a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub index: usize,
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}].{}: {}", self.index, self.field, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    name: String,
    /// The path split at '/', so the leading "" is the first: `/a/{id}` is `["", "a", Param]`.
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{...}`: any one non-empty segment.
    Param,
}

/// Configured endpoint templates, tried in order; the first whose path matches names the
/// endpoint, for every method.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Templates {
    entries: Vec<Template>,
}

impl Templates {
    /// Compiles `(name, path)` pairs. A path starts with '/', a segment `{...}` (any text
    /// without braces inside) matches exactly one non-empty path segment, and every other
    /// segment matches itself byte for byte as sent, percent-encoding included. Names are
    /// metric label values, so each must be non-empty, unique, not `other`, at most 120
    /// bytes, and without ';', '"', '\' or control characters. Every problem is reported,
    /// in order.
    pub fn compile<'a>(
        specs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Templates, Vec<TemplateError>> {
        let mut entries: Vec<Template> = Vec::new();
        let mut errors = Vec::new();
        for (index, (name, path)) in specs.into_iter().enumerate() {
            let mut error = |field, message| {
                errors.push(TemplateError {
                    index,
                    field,
                    message,
                })
            };
            let name_ok = match check_name(name) {
                Err(message) => Err(message),
                Ok(()) if entries.iter().any(|t| t.name == name) => {
                    Err(format!("{name:?} is the name of an earlier template too"))
                }
                Ok(()) => Ok(()),
            };
            let name_ok = name_ok.map_err(|message| error("name", message)).is_ok();
            match parse_path(path) {
                Ok(segments) if name_ok => entries.push(Template {
                    name: name.to_string(),
                    segments,
                }),
                Ok(_) => {}
                Err(message) => error("path", message),
            }
        }
        if errors.is_empty() {
            Ok(Templates { entries })
        } else {
            Err(errors)
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Each template's name and path, its parameters written `{}`: what a fingerprint of the
    /// comparison settings needs to tell two lists apart.
    pub fn describe(&self) -> Vec<(&str, String)> {
        self.entries
            .iter()
            .map(|t| {
                let path: Vec<&str> = t
                    .segments
                    .iter()
                    .map(|s| match s {
                        Segment::Literal(l) => l.as_str(),
                        Segment::Param => "{}",
                    })
                    .collect();
                (t.name.as_str(), path.join("/"))
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the first template matching `path` (its query and fragment ignored).
    pub fn find(&self, path: &[u8]) -> Option<&str> {
        let path = path_only(path);
        self.entries
            .iter()
            .find(|t| {
                let mut got = path.split(|&b| b == b'/');
                t.segments.iter().all(|want| match (want, got.next()) {
                    (Segment::Literal(want), Some(got)) => want.as_bytes() == got,
                    (Segment::Param, Some(got)) => !got.is_empty(),
                    (_, None) => false,
                }) && got.next().is_none()
            })
            .map(|t| t.name.as_str())
    }

    /// The endpoint label of a request: a configured template's name, or the method and the
    /// automatic template of its path.
    pub fn label(&self, method: &[u8], path: &[u8]) -> Cow<'_, str> {
        match self.find(path) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(automatic_label(method, path)),
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(format!(
            "{name:?} is empty; a name is the endpoint's metric label"
        ));
    }
    if name == OTHER {
        return Err(format!(
            "{name:?} is reserved for endpoints past the per-worker cap"
        ));
    }
    if name.len() > MAX_LABEL_BYTES {
        return Err(format!(
            "{name:?} is {} bytes, over the {MAX_LABEL_BYTES} of a metric label",
            name.len()
        ));
    }
    if name.chars().any(|c| label_char(c) != c) {
        return Err(format!(
            "{name:?} cannot be a metric label: it has ';', '\"', '\\' or a control character"
        ));
    }
    Ok(())
}

fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with '/' (e.g. \"/{path}\")"));
    }
    if path.contains(['?', '#']) {
        return Err(format!(
            "{path:?} has a query or fragment; a template matches the path only"
        ));
    }
    path.split('/')
        .map(|segment| {
            if !segment.contains(['{', '}']) {
                return Ok(Segment::Literal(segment.to_string()));
            }
            let inner = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
            match inner {
                Some(inner) if !inner.contains(['{', '}']) => Ok(Segment::Param),
                _ if braces_balanced(segment) => Err(format!(
                    "{path:?} has {segment:?}: a '{{...}}' must be a whole segment, as in /items/{{id}}"
                )),
                _ => Err(format!("{path:?} has unbalanced braces in {segment:?}")),
            }
        })
        .collect()
}

/// Each '{' closed by a '}' before the next '{'.
fn braces_balanced(segment: &str) -> bool {
    let mut open = false;
    for c in segment.chars() {
        match c {
            '{' if open => return false,
            '{' => open = true,
            '}' if !open => return false,
            '}' => open = false,
            _ => {}
        }
    }
    !open
}

/// The path without its query and fragment.
fn path_only(path: &[u8]) -> &[u8] {
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// `METHOD /path/{id}/...`: the path without query or fragment, each id-like segment
/// replaced by `{id}`, made safe as a label value and cut to [`MAX_LABEL_BYTES`].
pub fn automatic_label(method: &[u8], path: &[u8]) -> String {
    let mut label = Label::default();
    label.push_bytes(method);
    label.push_str(" ");
    for (i, segment) in path_only(path).split(|&b| b == b'/').enumerate() {
        if i > 0 {
            label.push_str("/");
        }
        if is_id(segment) {
            label.push_str(ID);
        } else {
            label.push_bytes(segment);
        }
        if label.full {
            break;
        }
    }
    no_tag_separator(label.text)
}

/// A label under construction: each character made safe, and nothing kept past the cap (so a
/// huge path costs no more than a short one once the label is full).
#[derive(Default)]
struct Label {
    text: String,
    full: bool,
}

impl Label {
    fn push_bytes(&mut self, bytes: &[u8]) {
        self.push_str(&String::from_utf8_lossy(bytes));
    }

    fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            let c = label_char(c);
            if self.text.len().saturating_add(c.len_utf8()) > MAX_LABEL_BYTES {
                self.full = true;
                return;
            }
            self.text.push(c);
        }
    }
}

/// `text` as a metric label value: each character made safe as in an automatic label, cut
/// to [`MAX_LABEL_BYTES`]. For the elements of `progressive_delivery_differences_total`,
/// whose JSON keys are whatever a body holds.
pub fn label_value(text: &str) -> String {
    let mut label = Label::default();
    label.push_str(text);
    no_tag_separator(label.text)
}

/// `=.=` is the key-value separator of Istio's tag encoding: in a value, a `stats_tags` regex
/// of a later key could start matching inside it. Envoy itself passes every other character
/// (spaces, '/', '{', '}', '*', '|', ':', '=', UTF-8) to `/stats/prometheus` unchanged.
fn no_tag_separator(text: String) -> String {
    if text.contains("=.=") {
        text.replace("=.=", "=_=")
    } else {
        text
    }
}

/// A label value ends up as an Envoy stat tag, which ';' would end (`name.tag=.=value;.;`),
/// and in Prometheus' text format, where '"' and '\' need escaping; control characters have
/// no business in either. They become '_'.
fn label_char(c: char) -> char {
    match c {
        ';' | '"' | '\\' => '_',
        c if c.is_control() => '_',
        c => c,
    }
}

/// A segment that names one thing among many: a decimal number, a UUID, a hex string of at
/// least 16 characters, or a base64-like token of at least 20 with letters and digits. Looked
/// at percent-decoded, since base64's '+' and '=' are often sent as %2B and %3D.
fn is_id(segment: &[u8]) -> bool {
    let decoded = percent_decoded(segment);
    let s = decoded.as_ref();
    let all = |f: fn(&u8) -> bool| !s.is_empty() && s.iter().all(f);
    all(u8::is_ascii_digit)
        || is_uuid(s)
        || (s.len() >= 16 && all(u8::is_ascii_hexdigit))
        || (s.len() >= 20
            && all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'='))
            && s.iter().any(u8::is_ascii_alphabetic)
            && s.iter().any(u8::is_ascii_digit))
}

/// 8-4-4-4-12 hex digits, any case.
fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// `%XX` decoded; a '%' not followed by two hex digits stays as it is.
fn percent_decoded(segment: &[u8]) -> Cow<'_, [u8]> {
    if !segment.contains(&b'%') {
        return Cow::Borrowed(segment);
    }
    let mut out = Vec::with_capacity(segment.len());
    let mut rest = segment;
    while let Some((&b, tail)) = rest.split_first() {
        let hex = |i: usize| tail.get(i).and_then(|&h| char::from(h).to_digit(16));
        match (b, hex(0), hex(1)) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits: at most 0xff, so the byte is exact.
                out.push(u8::try_from(hi.saturating_mul(16).saturating_add(lo)).unwrap_or(b'%'));
                rest = tail.get(2..).unwrap_or_default();
            }
            _ => {
                out.push(b);
                rest = tail;
            }
        }
    }
    Cow::Owned(out)
}

/// What an [`EndpointTable`] says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribution<'a> {
    /// The endpoint's label value, or [`OTHER`] past the cap.
    pub label: &'a str,
    /// The first request this table ever sent to `other`, so the caller logs it once.
    pub first_overflow: bool,
}

/// `label` once it is among the `seen` (up to `cap` of them), else [`OTHER`].
fn remember<'s>(
    seen: &'s mut BTreeSet<Box<str>>,
    cap: usize,
    overflowed: &mut u64,
    label: String,
) -> Attribution<'s> {
    if !seen.contains(label.as_str()) {
        if seen.len() >= cap {
            *overflowed = overflowed.saturating_add(1);
            return Attribution {
                label: OTHER,
                first_overflow: *overflowed == 1,
            };
        }
        seen.insert(label.clone().into_boxed_str());
    }
    Attribution {
        label: seen.get(label.as_str()).map_or(OTHER, |s| &**s),
        first_overflow: false,
    }
}

/// The endpoints one worker has seen. Configured templates always have their own label;
/// automatic ones are kept up to `cap`, and any new one past it is counted as `other`.
#[derive(Debug, Clone)]
pub struct EndpointTable {
    templates: Templates,
    seen: BTreeSet<Box<str>>,
    cap: usize,
    overflowed: u64,
}

impl EndpointTable {
    pub fn new(templates: Templates, cap: usize) -> Self {
        EndpointTable {
            templates,
            seen: BTreeSet::new(),
            cap,
            overflowed: 0,
        }
    }

    pub fn attribute(&mut self, method: &[u8], path: &[u8]) -> Attribution<'_> {
        let EndpointTable {
            templates,
            seen,
            cap,
            overflowed,
        } = self;
        match templates.label(method, path) {
            Cow::Borrowed(name) => Attribution {
                label: name,
                first_overflow: false,
            },
            Cow::Owned(label) => remember(seen, *cap, overflowed, label),
        }
    }

    /// A gRPC call's endpoint: a configured template's name, else its method
    /// (`/package.Service/Method`, made a safe label value), under the same cap.
    pub fn attribute_grpc(&mut self, path: &[u8]) -> Attribution<'_> {
        let EndpointTable {
            templates,
            seen,
            cap,
            overflowed,
        } = self;
        match templates.find(path) {
            Some(name) => Attribution {
                label: name,
                first_overflow: false,
            },
            None => {
                let label = label_value(&String::from_utf8_lossy(path_only(path)));
                remember(seen, *cap, overflowed, label)
            }
        }
    }

    /// Requests sent to `other` because the table was full.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Automatic labels held (configured ones are not counted).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn automatic() {
        let long_path = format!("/{}", "segment/".repeat(40));
        // 120 bytes: "GET ", 14 whole segments and the start of the 15th.
        let long_want = format!("GET {}/seg", "/segment".repeat(14));
        let cases: &[(&str, &[u8], &str)] = &[
            ("GET", b"/", "GET /"),
            ("GET", b"", "GET "),
            ("GET", b"/api/accounts", "GET /api/accounts"),
            (
                "GET",
                b"/api/accounts/42/balance",
                "GET /api/accounts/{id}/balance",
            ),
            ("GET", b"/api/accounts/0", "GET /api/accounts/{id}"),
            (
                "PUT",
                b"/v1/items/123/parts/456",
                "PUT /v1/items/{id}/parts/{id}",
            ),
            // "v1" is neither a number nor long enough to be a token.
            ("GET", b"/v1/x", "GET /v1/x"),
            ("GET", b"/-1/1.5/1e3", "GET /-1/1.5/1e3"),
            // UUIDs in any case.
            (
                "GET",
                b"/u/123e4567-e89b-12d3-a456-426614174000",
                "GET /u/{id}",
            ),
            (
                "GET",
                b"/u/123E4567-E89B-12D3-A456-426614174000/x",
                "GET /u/{id}/x",
            ),
            // All digits, a UUID is no token; one digit short or a dash moved, it is nothing.
            (
                "GET",
                b"/u/12345678-1234-1234-1234-123456789012",
                "GET /u/{id}",
            ),
            (
                "GET",
                b"/u/12345678-1234-1234-1234-12345678901",
                "GET /u/12345678-1234-1234-1234-12345678901",
            ),
            (
                "GET",
                b"/u/123456789-234-1234-1234-123456789012",
                "GET /u/123456789-234-1234-1234-123456789012",
            ),
            // Hex from 16 characters, digits or not.
            ("GET", b"/o/507f1f77bcf86cd799439011", "GET /o/{id}"),
            ("GET", b"/o/DEADBEEFDEADBEEF", "GET /o/{id}"),
            ("GET", b"/o/deadbeefdeadbee", "GET /o/deadbeefdeadbee"),
            ("GET", b"/o/deadbeef", "GET /o/deadbeef"),
            // Tokens from 20 characters, with letters and digits.
            ("GET", b"/t/dGhpcyBpcyBhIHRva2VuMTI", "GET /t/{id}"),
            ("GET", b"/t/aGVsbG8-d29ybGQ_MTIzNA==", "GET /t/{id}"),
            ("GET", b"/t/aGVsbG8%2Bd29ybGQ%3D%3D1234", "GET /t/{id}"),
            (
                "GET",
                b"/t/dGhpcyBpcyBhIHRva2V",
                "GET /t/dGhpcyBpcyBhIHRva2V",
            ),
            (
                "GET",
                b"/t/abcdefghijklmnopqrstuvwxyz",
                "GET /t/abcdefghijklmnopqrstuvwxyz",
            ),
            (
                "GET",
                b"/t/a1b2c3d4e5f6g7h8i9j",
                "GET /t/a1b2c3d4e5f6g7h8i9j",
            ),
            ("GET", b"/t/a1b2c3d4e5f6g7h8i9j0", "GET /t/{id}"),
            (
                "GET",
                b"/t/a1b2c3d4e5f6g7h8i9.0",
                "GET /t/a1b2c3d4e5f6g7h8i9.0",
            ),
            // Query and fragment dropped, trailing and double slashes kept.
            ("GET", b"/a/7?x=1&y=2", "GET /a/{id}"),
            ("GET", b"/a/7#top", "GET /a/{id}"),
            ("GET", b"/a/?", "GET /a/"),
            ("GET", b"?q", "GET "),
            ("GET", b"/a/7/", "GET /a/{id}/"),
            ("GET", b"//a//7", "GET //a//{id}"),
            // Percent-encoding: decoded to classify, kept as sent in the label.
            ("GET", b"/f/caf%C3%A9", "GET /f/caf%C3%A9"),
            ("GET", b"/n/%31%32", "GET /n/{id}"),
            ("GET", b"/n/%", "GET /n/%"),
            ("GET", b"/n/%4", "GET /n/%4"),
            ("GET", b"/n/%zz1", "GET /n/%zz1"),
            // Bytes a label cannot carry.
            ("GET", b"/a;b/c\"d\\e", "GET /a_b/c_d_e"),
            ("GET", b"/a\x00b\x1fc\x7f", "GET /a_b_c_"),
            (
                "GET",
                b"/caf\xc3\xa9/\xff\xfe",
                "GET /caf\u{e9}/\u{fffd}\u{fffd}",
            ),
            ("G;T", b"/", "G_T /"),
            ("GET", b"/a=.=b;.;kind=.=x", "GET /a=_=b_._kind=_=x"),
            ("OPTIONS", b"*", "OPTIONS *"),
            // Cut at the cap, never inside a character.
            ("GET", long_path.as_bytes(), &long_want),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                automatic_label(method.as_bytes(), path),
                *want,
                "{method} {}",
                String::from_utf8_lossy(path)
            );
        }
        let multibyte = format!("/{}", "é".repeat(100));
        let got = automatic_label(b"GET", multibyte.as_bytes());
        assert_eq!(got, format!("GET /{}", "é".repeat(57)));
        assert_eq!(got.len(), 119);
    }

    fn templates(specs: &[(&str, &str)]) -> Templates {
        Templates::compile(specs.iter().copied()).unwrap()
    }

    #[test]
    fn configured() {
        let t = templates(&[
            ("balance", "/api/accounts/{id}/balance"),
            ("account", "/api/accounts/{account}"),
            ("accounts", "/api/accounts"),
            ("root", "/"),
            ("first wins", "/api/accounts/me"),
            ("pair", "/p/{a}/{b}"),
            ("trailing", "/t/"),
            ("encoded", "/caf%C3%A9"),
        ]);
        let cases: &[(&str, &[u8], &str)] = &[
            ("GET", b"/api/accounts/42/balance", "balance"),
            ("DELETE", b"/api/accounts/abc/balance?x=1", "balance"),
            ("GET", b"/api/accounts/42", "account"),
            // First match wins, in config order.
            ("GET", b"/api/accounts/me", "account"),
            ("GET", b"/api/accounts", "accounts"),
            ("GET", b"/", "root"),
            ("GET", b"/?q=1", "root"),
            ("GET", b"/p/1/2", "pair"),
            ("GET", b"/t/", "trailing"),
            ("GET", b"/caf%C3%A9", "encoded"),
            // A parameter takes exactly one non-empty segment.
            (
                "GET",
                b"/api/accounts//balance",
                "GET /api/accounts//balance",
            ),
            ("GET", b"/api/accounts/", "GET /api/accounts/"),
            (
                "GET",
                b"/api/accounts/1/2/balance",
                "GET /api/accounts/{id}/{id}/balance",
            ),
            ("GET", b"/p/1", "GET /p/{id}"),
            ("GET", b"/p/1/2/3", "GET /p/{id}/{id}/{id}"),
            // Literals match as sent: case, trailing slash and encoding count.
            ("GET", b"/API/accounts", "GET /API/accounts"),
            ("GET", b"/api/accounts/", "GET /api/accounts/"),
            ("GET", b"/t", "GET /t"),
            ("GET", b"/caf\xc3\xa9", "GET /caf\u{e9}"),
            ("GET", b"", "GET "),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                t.label(method.as_bytes(), path),
                *want,
                "{method} {}",
                String::from_utf8_lossy(path)
            );
        }
        assert_eq!(t.len(), 8);
        assert!(Templates::default().is_empty());
    }

    #[test]
    fn compile_errors() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [(usize, &'a str, &'a str)]);
        let long = "n".repeat(MAX_LABEL_BYTES + 1);
        let cases: &[Case] = &[
            (
                &[("a", "api")],
                &[(0, "path", r#""api" must start with '/' (e.g. "/api")"#)],
            ),
            (
                &[("a", "")],
                &[(0, "path", r#""" must start with '/' (e.g. "/")"#)],
            ),
            (
                &[("a", "/x?y=1")],
                &[(
                    0,
                    "path",
                    r#""/x?y=1" has a query or fragment; a template matches the path only"#,
                )],
            ),
            (
                &[("a", "/x#y")],
                &[(
                    0,
                    "path",
                    r#""/x#y" has a query or fragment; a template matches the path only"#,
                )],
            ),
            (
                &[("a", "/x/{id")],
                &[(0, "path", r#""/x/{id" has unbalanced braces in "{id""#)],
            ),
            (
                &[("a", "/x/id}")],
                &[(0, "path", r#""/x/id}" has unbalanced braces in "id}""#)],
            ),
            (
                &[("a", "/x/{{id}}")],
                &[(
                    0,
                    "path",
                    r#""/x/{{id}}" has unbalanced braces in "{{id}}""#,
                )],
            ),
            (
                &[("a", "/x/}id{")],
                &[(0, "path", r#""/x/}id{" has unbalanced braces in "}id{""#)],
            ),
            (
                &[("a", "/x/v{id}")],
                &[(
                    0,
                    "path",
                    r#""/x/v{id}" has "v{id}": a '{...}' must be a whole segment, as in /items/{id}"#,
                )],
            ),
            (
                &[("a", "/x/{a}{b}")],
                &[(
                    0,
                    "path",
                    r#""/x/{a}{b}" has "{a}{b}": a '{...}' must be a whole segment, as in /items/{id}"#,
                )],
            ),
            (
                &[("", "/x")],
                &[(
                    0,
                    "name",
                    r#""" is empty; a name is the endpoint's metric label"#,
                )],
            ),
            (
                &[(" ", "/x")],
                &[(
                    0,
                    "name",
                    r#"" " is empty; a name is the endpoint's metric label"#,
                )],
            ),
            (
                &[("other", "/x")],
                &[(
                    0,
                    "name",
                    r#""other" is reserved for endpoints past the per-worker cap"#,
                )],
            ),
            (
                &[("a;b", "/x")],
                &[(
                    0,
                    "name",
                    r#""a;b" cannot be a metric label: it has ';', '"', '\' or a control character"#,
                )],
            ),
            (
                &[("a\nb", "/x")],
                &[(
                    0,
                    "name",
                    r#""a\nb" cannot be a metric label: it has ';', '"', '\' or a control character"#,
                )],
            ),
            (
                &[(&long, "/x")],
                &[(
                    0,
                    "name",
                    &format!("{long:?} is 121 bytes, over the 120 of a metric label"),
                )],
            ),
            // Every problem, in order; a duplicate is the later one.
            (
                &[("a", "/x"), ("b", "y"), ("a", "/z"), ("", "{")],
                &[
                    (1, "path", r#""y" must start with '/' (e.g. "/y")"#),
                    (2, "name", r#""a" is the name of an earlier template too"#),
                    (
                        3,
                        "name",
                        r#""" is empty; a name is the endpoint's metric label"#,
                    ),
                    (3, "path", r#""{" must start with '/' (e.g. "/{")"#),
                ],
            ),
        ];
        for (specs, want) in cases {
            let got = Templates::compile(specs.iter().copied()).unwrap_err();
            let got: Vec<(usize, &str, &str)> = got
                .iter()
                .map(|e| (e.index, e.field, e.message.as_str()))
                .collect();
            assert_eq!(got, *want, "{specs:?}");
        }
        let ok = ["/", "//", "/{}", "/a/{id}/b/{x y}", "/~!$&'()*+,=:@%20"];
        for path in ok {
            assert!(Templates::compile([("n", path)]).is_ok(), "{path}");
        }
        let e = &Templates::compile([("a", "x")]).unwrap_err()[0];
        assert_eq!(
            e.to_string(),
            r#"[0].path: "x" must start with '/' (e.g. "/x")"#
        );
    }

    #[test]
    fn label_values() {
        let (long, cut) = ("é".repeat(100), "é".repeat(60));
        let cases: &[(&str, &str)] = &[
            ("/a b/*/x{y}", "/a b/*/x{y}"),
            ("/s;t/u\"v/w\\z", "/s_t/u_v/w_z"),
            ("/k=.=v;.;kind=.=noise", "/k=_=v_._kind=_=noise"),
            ("/a\nb", "/a_b"),
            (&long, &cut),
        ];
        for (text, want) in cases {
            assert_eq!(label_value(text), *want, "{text:?}");
        }
    }

    #[test]
    fn table_cap() {
        let t = templates(&[("balance", "/accounts/{id}/balance")]);
        let mut table = EndpointTable::new(t, 2);
        let steps: &[(&str, &str, &str, bool, usize, u64)] = &[
            // method, path, label, first_overflow, len, overflowed
            ("GET", "/a/1", "GET /a/{id}", false, 1, 0),
            ("GET", "/a/2", "GET /a/{id}", false, 1, 0),
            ("PUT", "/a/2", "PUT /a/{id}", false, 2, 0),
            ("GET", "/b", OTHER, true, 2, 1),
            ("GET", "/c", OTHER, false, 2, 2),
            // Known labels and configured templates still have their own.
            ("GET", "/a/3?x", "GET /a/{id}", false, 2, 2),
            ("GET", "/accounts/7/balance", "balance", false, 2, 2),
            ("GET", "/b", OTHER, false, 2, 3),
        ];
        for (method, path, label, first, len, overflowed) in steps {
            let got = table.attribute(method.as_bytes(), path.as_bytes());
            assert_eq!(
                got,
                Attribution {
                    label,
                    first_overflow: *first
                },
                "{method} {path}"
            );
            assert_eq!(table.len(), *len, "{method} {path}");
            assert_eq!(table.overflowed(), *overflowed, "{method} {path}");
        }
        assert_eq!(table.templates().len(), 1);

        let mut empty = EndpointTable::new(Templates::default(), 0);
        assert!(empty.is_empty());
        let got = empty.attribute(b"GET", b"/");
        assert_eq!((got.label, got.first_overflow), (OTHER, true));
    }

    #[test]
    fn many_paths_stay_bounded() {
        let mut table = EndpointTable::new(Templates::default(), 100);
        let mut firsts = 0;
        for i in 0..10_000 {
            let path = format!("/word{}x/{i}", i * 7919 % 10_007);
            let got = table.attribute(b"GET", path.as_bytes());
            firsts += usize::from(got.first_overflow);
        }
        assert_eq!(table.len(), 100);
        assert_eq!(table.overflowed(), 9_900);
        assert_eq!(firsts, 1);
        // Ids alone never grow the table.
        let mut ids = EndpointTable::new(Templates::default(), 100);
        for i in 0..10_000 {
            let path = format!("/items/{i}/{:032x}", i * 31);
            assert_eq!(
                ids.attribute(b"GET", path.as_bytes()).label,
                "GET /items/{id}/{id}"
            );
        }
        assert_eq!((ids.len(), ids.overflowed()), (1, 0));
    }
}
