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

use std::borrow::Cow;
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

/// Ordered as the walk visits: keys in byte order, indices in number order (a level holds
/// only one of the two), which is how the lockstep walk puts what it found back in that order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PathSegment<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

impl PathSegment<'_> {
    fn is(&self, want: &str) -> bool {
        match self {
            PathSegment::Key(k) => k == want,
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

/// Every difference between two bodies, exactly as [`all_differences`] lists them for the
/// two parsed documents; `None` when either body is not JSON (as `serde_json` reads it).
///
/// Most canaries answer in the primary's shape, keys in the same order: then both bodies are
/// read side by side, token by token, without building either tree, and equal tokens are
/// equal values. Where the two part ways (keys in another order or missing, arrays of other
/// lengths, another type), that one object or array is parsed on both sides and compared as
/// trees, order-insensitively, and the side-by-side reading resumes after it. Whatever the
/// side-by-side reading cannot vouch for (a body it does not accept, more differences than it
/// keeps) is answered by [`tree_differences`] instead, so the answer never depends on which
/// path produced it.
pub fn body_differences(
    primary: &[u8],
    canary: &[u8],
    ignore: &[IgnorePattern],
    max: usize,
) -> Option<Differences> {
    let limit = max.saturating_add(1).saturating_add(SLACK);
    let mut side_by_side = Lockstep::new(primary, canary, ignore, limit);
    if side_by_side.document().is_ok() {
        return Some(side_by_side.finish(max));
    }
    // The whole bodies as trees, walked as `all_differences` walks them (and with its code),
    // up to one past the bound: reaching that ends the walk early, and means `cut`.
    let (a, b) = (parse(Some(primary)).ok()?, parse(Some(canary)).ok()?);
    let mut trees = Lockstep::new(primary, canary, ignore, max.saturating_add(1));
    let _ = trees.compare_trees(&a, &b);
    Some(trees.finish(max))
}

/// Both bodies parsed into trees, then [`all_differences`]: the comparison as it was before
/// the side-by-side reading, and the reference the tests and the `json_compare` fuzz target
/// hold [`body_differences`] to.
pub fn tree_differences(
    primary: &[u8],
    canary: &[u8],
    ignore: &[IgnorePattern],
    max: usize,
) -> Option<Differences> {
    let primary = serde_json::from_slice::<Value>(primary).ok()?;
    let canary = serde_json::from_slice::<Value>(canary).ok()?;
    Some(all_differences(&primary, &canary, ignore, max))
}

/// serde_json refuses a document nested 128 arrays or objects deep (its recursion limit);
/// the side-by-side reading gives up at the same depth and leaves the verdict to it.
const MAX_NESTING: usize = 127;

/// Differences kept beyond the bound before the side-by-side reading gives up. It cannot stop
/// at the bound as the tree walk does: it finds them in document order, not in key order, and
/// an object re-read as trees replaces what was found inside it.
const SLACK: usize = 32;

/// The side-by-side reading cannot answer; the tree comparison will.
#[derive(Debug)]
struct Bail;

#[cfg(test)]
fn lockstep(
    primary: &[u8],
    canary: &[u8],
    ignore: &[IgnorePattern],
    max: usize,
) -> Result<Differences, Bail> {
    let limit = max.saturating_add(1).saturating_add(SLACK);
    let mut walk = Lockstep::new(primary, canary, ignore, limit);
    walk.document()?;
    Ok(walk.finish(max))
}

struct Lockstep<'a, 'i> {
    p: Lexer<'a>,
    c: Lexer<'a>,
    ignore: &'i [IgnorePattern],
    path: Vec<PathSegment<'a>>,
    /// Where the keys of the objects being read start in the primary, for duplicates: a
    /// parsed object keeps the last value of a key, the side-by-side reading sees every one.
    keys: Vec<usize>,
    /// Kept in the tree walk's order, by path (`found_at`, in step): paths are unique and none
    /// lies under another. Inserted in place rather than sorted at the end, which would bring
    /// a sort's code into the module for a list this short.
    found: Vec<ElementDifference>,
    found_at: Vec<Vec<PathSegment<'static>>>,
    /// Counts every difference recorded, so an object can tell whether any was found in it.
    recorded: usize,
    limit: usize,
}

impl<'a, 'i> Lockstep<'a, 'i> {
    fn new(primary: &'a [u8], canary: &'a [u8], ignore: &'i [IgnorePattern], limit: usize) -> Self {
        Lockstep {
            p: Lexer::new(primary),
            c: Lexer::new(canary),
            ignore,
            path: Vec::new(),
            keys: Vec::new(),
            found: Vec::new(),
            found_at: Vec::new(),
            recorded: 0,
            limit,
        }
    }

    /// Both whole bodies, nothing but whitespace around their one value.
    fn document(&mut self) -> Result<(), Bail> {
        self.p.skip_ws();
        self.c.skip_ws();
        self.value(0)?;
        self.p.skip_ws();
        self.c.skip_ws();
        if self.p.peek().is_some() || self.c.peek().is_some() {
            return Err(Bail);
        }
        Ok(())
    }

    fn finish(self, max: usize) -> Differences {
        let mut differences = self.found;
        let cut = differences.len() > max;
        differences.truncate(max);
        Differences { differences, cut }
    }

    /// Past one value of `side`, checked with the same rules: the value is read beside itself.
    fn skip(side: &mut Lexer<'a>, nesting: usize) -> Result<(), Bail> {
        let mut alone = Lockstep::new(side.bytes, side.bytes, &[], 0);
        alone.p.pos = side.pos;
        alone.c.pos = side.pos;
        alone.value(nesting)?;
        side.pos = alone.p.pos;
        Ok(())
    }

    /// Both sides at the first byte of a value under `nesting` arrays and objects.
    fn value(&mut self, nesting: usize) -> Result<(), Bail> {
        if self.ignore.iter().any(|p| p.matches(&self.path)) {
            Self::skip(&mut self.p, nesting)?;
            return Self::skip(&mut self.c, nesting);
        }
        let start = (self.p.pos, self.c.pos);
        match (self.p.kind()?, self.c.kind()?) {
            (Kind::Object, Kind::Object) => self.container(nesting, b'{'),
            (Kind::Array, Kind::Array) => self.container(nesting, b'['),
            // The same text is the same value.
            (Kind::Scalar, Kind::Scalar) if self.p.scalar()? == self.c.scalar()? => Ok(()),
            // Two other scalars, or another type: compared as values.
            _ => self.diverged(start, nesting, self.keys.len()),
        }
    }

    /// An object or an array on both sides, the first byte of which is `open`.
    fn container(&mut self, nesting: usize, open: u8) -> Result<(), Bail> {
        let (object, close) = (open == b'{', if open == b'{' { b'}' } else { b']' });
        let inner = deeper(nesting)?;
        let start = (self.p.pos, self.c.pos);
        let (keys, recorded) = (self.keys.len(), self.recorded);
        self.p.eat(open)?;
        self.c.eat(open)?;
        let mut index = 0usize;
        loop {
            self.p.skip_ws();
            self.c.skip_ws();
            match (self.p.peek() == Some(close), self.c.peek() == Some(close)) {
                (true, true) => break,
                (false, false) => {}
                // One side has more keys or items.
                _ => return self.diverged(start, nesting, keys),
            }
            if index > 0 {
                self.p.eat(b',')?;
                self.c.eat(b',')?;
                self.p.skip_ws();
                self.c.skip_ws();
            }
            let segment = if object {
                let at = self.p.pos;
                let (a, b) = (self.p.key()?, self.c.key()?);
                if a != b {
                    return self.diverged(start, nesting, keys);
                }
                self.keys.push(at);
                PathSegment::Key(a)
            } else {
                PathSegment::Index(index)
            };
            self.path.push(segment);
            let flow = self.value(inner);
            self.path.pop();
            flow?;
            index = index.checked_add(1).ok_or(Bail)?;
        }
        self.p.eat(close)?;
        self.c.eat(close)?;
        if object && self.recorded != recorded && self.has_duplicates(keys) {
            return self.diverged(start, nesting, keys);
        }
        self.keys.truncate(keys);
        Ok(())
    }

    /// Whether the object being read repeats a key (from `keys` on); only asked when
    /// differences were found in it, so it may allocate, in serde_json's own map type, whose
    /// code the module has anyway.
    fn has_duplicates(&self, keys: usize) -> bool {
        let mut seen = serde_json::Map::new();
        self.keys.iter().skip(keys).any(|&at| {
            let key = Lexer {
                bytes: self.p.bytes,
                pos: at,
            }
            .string();
            key.map_or(true, |k| seen.insert(k.into_owned(), Value::Null).is_some())
        })
    }

    /// The value that began at `start` on each side is compared as two trees, replacing
    /// whatever the side-by-side reading found in it; both sides end after it.
    fn diverged(&mut self, start: (usize, usize), nesting: usize, keys: usize) -> Result<(), Bail> {
        self.keys.truncate(keys);
        self.p.pos = start.0;
        self.c.pos = start.1;
        if nesting > 0 {
            // The value is read once more, with the same rules, so the depth it reaches counts
            // from the root as the parser of the whole body would count it. A byte is re-read
            // at most once per object or array around it that diverges: bounded by the
            // nesting limit.
            Self::skip(&mut self.p, nesting)?;
            Self::skip(&mut self.c, nesting)?;
        } else {
            // The whole body (a canary that orders its keys otherwise parts here): serde_json
            // checks all of it, and that nothing but whitespace follows.
            self.p.pos = self.p.bytes.len();
            self.c.pos = self.c.bytes.len();
        }
        let (a, b) = (parse(self.p.since(start.0))?, parse(self.c.since(start.1))?);
        let here = &self.path;
        let mut i = 0;
        while let Some(at) = self.found_at.get(i) {
            if at.starts_with(here) {
                self.found_at.remove(i);
                self.found.remove(i);
            } else {
                i = i.saturating_add(1);
            }
        }
        self.compare_trees(&a, &b)
    }

    /// The tree walk over two values at the current path, recording what it finds.
    fn compare_trees(&mut self, a: &Value, b: &Value) -> Result<(), Bail> {
        let mut path: Vec<PathSegment<'_>> = self.path.clone();
        let (found, found_at, limit) = (&mut self.found, &mut self.found_at, self.limit);
        let recorded = &mut self.recorded;
        let flow = walk(
            Some(a),
            Some(b),
            self.ignore,
            &mut path,
            &mut |path, x, y| {
                if found.len() >= limit {
                    return ControlFlow::Break(());
                }
                let owned_path: Vec<PathSegment<'static>> = path.iter().map(owned).collect();
                let at = found_at.partition_point(|p| *p < owned_path);
                found_at.insert(at, owned_path);
                found.insert(
                    at,
                    ElementDifference {
                        difference: difference(path, x, y),
                        element: pointer(path, Indices::AsWildcard),
                    },
                );
                *recorded = recorded.wrapping_add(1);
                ControlFlow::Continue(())
            },
        );
        match flow {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(Bail),
        }
    }
}

fn owned(segment: &PathSegment<'_>) -> PathSegment<'static> {
    match segment {
        PathSegment::Key(k) => PathSegment::Key(Cow::Owned(k.to_string())),
        PathSegment::Index(i) => PathSegment::Index(*i),
    }
}

fn deeper(nesting: usize) -> Result<usize, Bail> {
    nesting
        .checked_add(1)
        .filter(|n| *n <= MAX_NESTING)
        .ok_or(Bail)
}

fn parse(bytes: Option<&[u8]>) -> Result<Value, Bail> {
    serde_json::from_slice(bytes.ok_or(Bail)?).map_err(|_| Bail)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    Scalar,
}

/// Reads one body's JSON tokens, accepting no more than serde_json does: what it accepts,
/// serde_json parses to the same values, and where it is unsure it asks serde_json itself
/// (strings with escapes, numbers that might be out of range).
struct Lexer<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Lexer { bytes, pos: 0 }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline(always)]
    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    fn since(&self, start: usize) -> Option<&'a [u8]> {
        self.bytes.get(start..self.pos)
    }

    fn skip_ws(&mut self) {
        let ws = |b| matches!(b, b' ' | b'\n' | b'\t' | b'\r');
        // Compact JSON has none: one test, not a loop's set-up, between most tokens.
        if self.peek().is_some_and(ws) {
            self.skip_while(ws);
        }
    }

    /// Over the bytes `want` accepts; one loop over the slice, not a call per byte.
    #[inline(always)]
    fn skip_while(&mut self, want: impl Fn(u8) -> bool) {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let n = rest.iter().take_while(|b| want(**b)).count();
        self.pos = self.pos.saturating_add(n);
    }

    fn eat(&mut self, byte: u8) -> Result<(), Bail> {
        if self.peek() != Some(byte) {
            return Err(Bail);
        }
        self.bump();
        Ok(())
    }

    fn kind(&self) -> Result<Kind, Bail> {
        match self.peek() {
            Some(b'{') => Ok(Kind::Object),
            Some(b'[') => Ok(Kind::Array),
            Some(b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => Ok(Kind::Scalar),
            _ => Err(Bail),
        }
    }

    /// A string, number or literal, checked; its text as written.
    fn scalar(&mut self) -> Result<&'a [u8], Bail> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            Some(b't') => self.literal(b"true")?,
            Some(b'f') => self.literal(b"false")?,
            Some(b'n') => self.literal(b"null")?,
            _ => self.number()?,
        }
        self.since(start).ok_or(Bail)
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Bail> {
        let end = self.pos.checked_add(word.len()).ok_or(Bail)?;
        if self.bytes.get(self.pos..end) != Some(word) {
            return Err(Bail);
        }
        self.pos = end;
        Ok(())
    }

    fn key(&mut self) -> Result<Cow<'a, str>, Bail> {
        let key = self.string()?;
        self.skip_ws();
        self.eat(b':')?;
        self.skip_ws();
        Ok(key)
    }

    /// A string, decoded.
    fn string(&mut self) -> Result<Cow<'a, str>, Bail> {
        let start = self.pos;
        self.eat(b'"')?;
        let body = self.bytes.get(self.pos..).unwrap_or_default();
        let (mut len, mut escaped) = (0usize, false);
        loop {
            match body.get(len) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    len = len.saturating_add(2);
                }
                // Control characters must be escaped.
                Some(0..=0x1f) | None => return Err(Bail),
                Some(_) => len = len.saturating_add(1),
            }
        }
        let inner = body.get(..len).ok_or(Bail)?;
        self.pos = self.pos.saturating_add(len).saturating_add(1);
        if escaped {
            // serde_json decodes escapes and judges surrogates, exactly as in the whole body
            // (into a `Value`, whose parser the module has anyway).
            return match parse(self.since(start))? {
                Value::String(s) => Ok(Cow::Owned(s)),
                _ => Err(Bail),
            };
        }
        std::str::from_utf8(inner)
            .map(Cow::Borrowed)
            .map_err(|_| Bail)
    }

    /// RFC 8259's number grammar. One without an exponent and with at most 300 integer
    /// digits is below f64's range; any other is parsed once, since serde_json refuses one
    /// that overflows.
    fn number(&mut self) -> Result<(), Bail> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.bump();
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.bump(),
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Bail),
        }
        let mut in_range = self.pos.saturating_sub(int_start) <= 300;
        if self.peek() == Some(b'.') {
            self.bump();
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.bump();
            if let Some(b'+' | b'-') = self.peek() {
                self.bump();
            }
            self.some_digits()?;
            in_range = false;
        }
        if !in_range && !matches!(parse(self.since(start))?, Value::Number(_)) {
            return Err(Bail);
        }
        Ok(())
    }

    fn digits(&mut self) {
        self.skip_while(|b| b.is_ascii_digit());
    }

    fn some_digits(&mut self) -> Result<(), Bail> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            return Err(Bail);
        }
        Ok(())
    }
}

/// What the walk calls with each difference. dyn: one copy of the walk in the module for all
/// its callers.
type Found<'a, 'f> =
    dyn FnMut(&[PathSegment<'a>], Option<&Value>, Option<&Value>) -> ControlFlow<()> + 'f;

/// Calls `found` with each difference in walk order, until it breaks.
fn walk<'a>(
    primary: Option<&'a Value>,
    canary: Option<&'a Value>,
    ignore: &[IgnorePattern],
    path: &mut Vec<PathSegment<'a>>,
    found: &mut Found<'a, '_>,
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
                path.push(PathSegment::Key(Cow::Borrowed(k)));
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
            (PathSegment::Key(k), _) => {
                for c in k.chars() {
                    match c {
                        '~' => out.push_str("~0"),
                        '/' => out.push_str("~1"),
                        c => out.push(c),
                    }
                }
            }
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

fn cut(mut json: String) -> String {
    if json.len() <= MAX_RENDERED_BYTES {
        return json;
    }
    // The longest run of whole characters that fits.
    let mut end = MAX_RENDERED_BYTES;
    while !json.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    json.truncate(end);
    json.push('…');
    json
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
        let ignore = patterns(ignore);
        first_difference(&primary, &canary, &ignore).map(|d| d.to_string())
    }

    fn patterns(ignore: &[&str]) -> Vec<IgnorePattern> {
        ignore
            .iter()
            .map(|p| IgnorePattern::parse(p).unwrap())
            .collect()
    }

    /// The tree walk's answer, after checking that the side-by-side reading of the same
    /// texts gives it too.
    fn all(primary: &str, canary: &str, ignore: &[&str], max: usize) -> Differences {
        let ignore = patterns(ignore);
        let (p, c) = (primary.as_bytes(), canary.as_bytes());
        let want = all_differences(
            &serde_json::from_slice(p).unwrap(),
            &serde_json::from_slice(c).unwrap(),
            &ignore,
            max,
        );
        assert_eq!(
            body_differences(p, c, &ignore, max).as_ref(),
            Some(&want),
            "{primary} vs {canary}, max {max}"
        );
        want
    }

    /// The side-by-side reading: what it lists (`None`: not JSON), whether it answered on
    /// its own or handed the whole comparison to the trees, and always the trees' answer.
    #[test]
    fn lockstep_table() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let (deep_ok, deep_bad) = (nested(MAX_NESTING), nested(MAX_NESTING + 1));
        let many_a = format!("[{}]", vec!["1"; 40].join(","));
        let many_b = format!("[{}]", vec!["2"; 40].join(","));
        // primary, canary, ignore, max, differences (None: not JSON), cut, answered alone
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [&'a str],
            usize,
            Option<&'a [&'a str]>,
            bool,
            bool,
        );
        let cases: &[Case] = &[
            // Same keys in the same order: differences in the walk's (key) order.
            (
                r#"{"b":1,"a":2}"#,
                r#"{"b":3,"a":4}"#,
                &[],
                10,
                Some(&["/a: 2 vs 4", "/b: 1 vs 3"]),
                false,
                true,
            ),
            (
                r#"{"b":1,"a":2}"#,
                r#"{"b":3,"a":4}"#,
                &[],
                1,
                Some(&["/a: 2 vs 4"]),
                true,
                true,
            ),
            (" [1, 2] ", "[1,2]\n", &[], 10, Some(&[]), false, true),
            // Ignored fields, the common canary.
            (
                r#"{"ts":1,"items":[{"id":1,"v":1},{"id":2,"v":"x"}],"n":null}"#,
                r#"{"ts":2,"items":[{"id":7,"v":1},{"id":8,"v":"x"}],"n":null}"#,
                &["/ts", "/items/*/id"],
                10,
                Some(&[]),
                false,
                true,
            ),
            // Keys in another order or missing: that object compared as trees.
            (
                r#"{"x":{"a":1,"b":2},"y":1}"#,
                r#"{"x":{"b":2,"a":1},"y":2}"#,
                &[],
                10,
                Some(&["/y: 1 vs 2"]),
                false,
                true,
            ),
            (
                r#"{"x":{"a":1,"b":2},"y":1}"#,
                r#"{"x":{"a":1},"y":1}"#,
                &[],
                10,
                Some(&["/x/b: 2 vs (absent)"]),
                false,
                true,
            ),
            (
                r#"{"x":{"a":9},"y":1}"#,
                r#"{"x":{"a":8,"b":2},"y":1}"#,
                &[],
                10,
                Some(&["/x/a: 9 vs 8", "/x/b: (absent) vs 2"]),
                false,
                true,
            ),
            (
                r#"{}"#,
                r#"{"a":1}"#,
                &[],
                10,
                Some(&["/a: (absent) vs 1"]),
                false,
                true,
            ),
            // Arrays of other lengths; another type.
            (
                r#"{"x":[1,2,{"k":1}],"y":1}"#,
                r#"{"x":[1,5],"y":2}"#,
                &[],
                10,
                Some(&["/x/1: 2 vs 5", r#"/x/2: {"k":1} vs (absent)"#, "/y: 1 vs 2"]),
                false,
                true,
            ),
            (
                r#"{"a":[1],"b":1}"#,
                r#"{"a":{"0":1},"b":2}"#,
                &[],
                10,
                Some(&[r#"/a: [1] vs {"0":1}"#, "/b: 1 vs 2"]),
                false,
                true,
            ),
            (
                r#"[{"a":1}]"#,
                r#"["x"]"#,
                &[],
                10,
                Some(&[r#"/0: {"a":1} vs "x""#]),
                false,
                true,
            ),
            // Duplicate keys: a parsed object keeps the last one.
            (
                r#"{"a":1,"a":2}"#,
                r#"{"a":2,"a":2}"#,
                &[],
                10,
                Some(&[]),
                false,
                true,
            ),
            (
                r#"{"a":1,"a":2}"#,
                r#"{"a":1,"a":3}"#,
                &[],
                10,
                Some(&["/a: 2 vs 3"]),
                false,
                true,
            ),
            (
                r#"{"x":{"a":1},"x":{"a":2}}"#,
                r#"{"x":{"a":2},"x":{"a":2}}"#,
                &[],
                10,
                Some(&[]),
                false,
                true,
            ),
            // Equal values written differently.
            (
                r#"{"\u0061":"\u00e9\n"}"#,
                "{\"a\":\"\u{e9}\\n\"}",
                &[],
                10,
                Some(&[]),
                false,
                true,
            ),
            (
                "[1, 1.0, -0, 1e2, 0.5]",
                "[1.0, 1, 0, 100, 5e-1]",
                &[],
                10,
                Some(&[]),
                false,
                true,
            ),
            (
                "[1e308, 123456789012345678901234567890]",
                "[1E+308, 1.2345678901234568e29]",
                &[],
                10,
                Some(&[]),
                false,
                true,
            ),
            (&deep_ok, &deep_ok, &[], 10, Some(&[]), false, true),
            // More differences than it keeps: the trees answer.
            (&many_a, &many_b, &[], 1, Some(&["/0: 1 vs 2"]), true, false),
            // Not JSON, as serde_json reads it, on either side.
            (r#"{"a":1,}"#, r#"{"a":1,}"#, &[], 10, None, false, false),
            ("[1,]", "[1]", &[], 10, None, false, false),
            ("[01]", "[1]", &[], 10, None, false, false),
            ("[1.]", "[1]", &[], 10, None, false, false),
            ("[1e309]", "[1]", &[], 10, None, false, false),
            (
                r#"["\ud800"]"#,
                r#"["\ud800"]"#,
                &[],
                10,
                None,
                false,
                false,
            ),
            (r#"["\udc00x"]"#, r#"["x"]"#, &[], 10, None, false, false),
            (r#"["\q"]"#, r#"["q"]"#, &[], 10, None, false, false),
            ("[\"a\tb\"]", r#"["a\tb"]"#, &[], 10, None, false, false),
            ("1 x", "1", &[], 10, None, false, false),
            ("", "1", &[], 10, None, false, false),
            (r#"{"a" 1}"#, r#"{"a":1}"#, &[], 10, None, false, false),
            ("[tru]", "[true]", &[], 10, None, false, false),
            (&deep_bad, &deep_bad, &[], 10, None, false, false),
            // Not JSON inside an ignored field is still not JSON.
            (
                r#"{"ts":[1,],"a":1}"#,
                r#"{"ts":[1],"a":1}"#,
                &["/ts"],
                10,
                None,
                false,
                false,
            ),
        ];
        for (primary, canary, ignore, max, want, cut, alone) in cases {
            let ignore = patterns(ignore);
            let (p, c) = (primary.as_bytes(), canary.as_bytes());
            let got = body_differences(p, c, &ignore, *max);
            assert_eq!(
                got,
                tree_differences(p, c, &ignore, *max),
                "{primary} vs {canary}"
            );
            let listed: Option<Vec<String>> = got.as_ref().map(|d| {
                d.differences
                    .iter()
                    .map(|e| e.difference.to_string())
                    .collect()
            });
            let want: Option<Vec<String>> = want.map(|w| w.iter().map(|s| s.to_string()).collect());
            assert_eq!(listed, want, "{primary} vs {canary}");
            assert_eq!(
                got.map(|d| d.cut),
                want.map(|_| *cut),
                "{primary} vs {canary}"
            );
            assert_eq!(
                lockstep(p, c, &ignore, *max).is_ok(),
                *alone,
                "{primary} vs {canary}"
            );
        }
        // Invalid UTF-8 in a string.
        let bad = b"[\"\xff\"]";
        assert_eq!(body_differences(bad, bad, &[], 10), None);
        assert!(lockstep(bad, bad, &[], 10).is_err());
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
