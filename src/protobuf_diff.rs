//! Structural comparison of a primary's and a canary's protobuf messages, without their
//! schema (`compare.body: protobuf`).
//!
//! The filter has no `.proto` files, only the wire format: each field is a number, a wire type
//! and a value (a varint, 64 or 32 fixed bits, or a length-delimited run of bytes). So:
//!
//! - A place in a message is a path of field numbers, `/1/3/2`, and the root is `/`.
//! - A field number that occurs more than once on either side is a repeated field: its values
//!   are indexed like JSON array items, `/2/0/1`, in the order sent. One that occurs once on
//!   both sides has no index, since nothing on the wire says it is repeated: a list of one item
//!   reads `/2/1`. To make one ignore pattern work for both, a pattern's index `0` or `*` may
//!   also match the missing index of such a field: `/2/*/1` ignores `/2/1` too.
//! - Fields compare by number, whatever order they were sent in; varints and fixed values by
//!   their bits.
//! - A length-delimited value is compared, when the two differ, as what both sides make of it,
//!   decided for each side alone (so the verdict does not depend on which side is which):
//!   1. a message, if it parses as one to its last byte and is not printable text (a short
//!      string such as `hi` is also a valid message: field 13, varint 105; text is never
//!      taken apart, and a message practically always has a byte below 0x20 among its tags
//!      and lengths);
//!   2. else text, if it is valid UTF-8 without control characters;
//!   3. else packed varints (a proto3 `repeated int32`), if it is a run of whole varints:
//!      their items are indexed, `/4/2`, as the same field's items are when not packed;
//!   4. else bytes.
//!
//!   An empty value is all of these at once and goes with the other side. Two messages, or
//!   two packed runs, are compared item by item; any other pair differs as a whole, at its
//!   path. Packed fixed-width values (`float`, `double`, `fixed32` ...) cannot be told from
//!   bytes without the schema: they compare as bytes, or as varints if they happen to be.
//! - Groups (wire types 3 and 4, deprecated since proto2) and wire types 6 and 7 make a value
//!   not a message, so it compares as text or bytes.
//! - A map field is a repeated field of key/value messages, compared by index: a server that
//!   writes a map in a different order (Go's default marshalling does) differs from itself.
//!   `ignore` is the way out for such a field.
//!
//! Work is bounded: messages nest at most [`MAX_DEPTH`] deep, and a comparison parses at most
//! [`PARSE_BUDGET`] bytes; past either, values compare as bytes. Nothing here panics.

use std::fmt::{self, Write as _};
use std::ops::ControlFlow;

/// Deeper values compare as bytes. protobuf's own parsers stop at 100; real messages nest a
/// handful of levels.
pub const MAX_DEPTH: usize = 32;

/// Bytes parsed as messages or varint runs in one comparison. A value nested `d` deep is
/// parsed once per level above it, so without a bound a deeply nested body costs its size
/// times its depth.
pub const PARSE_BUDGET: usize = 4 << 20;

/// Bytes parsed to render one value of a difference.
const RENDER_BUDGET: usize = 64 << 10;

/// Rendered values are cut so one huge field cannot flood the log line.
const MAX_RENDERED_BYTES: usize = 80;

const ABSENT: &str = "(absent)";

/// The largest field number the wire format allows (2^29 - 1).
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// A field-number pointer from `compare.ignore`: `/1/3/2`, where each segment is a field
/// number or a repeated field's index, or `*` for any one of either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePattern {
    text: String,
    segments: Vec<PatternSegment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternSegment {
    Any,
    Number(u64),
}

impl PatternSegment {
    fn matches(self, n: u64) -> bool {
        match self {
            PatternSegment::Any => true,
            PatternSegment::Number(k) => k == n,
        }
    }
}

impl IgnorePattern {
    /// Errors are a message without the field path, which the caller prefixes.
    pub fn parse(pointer: &str) -> Result<IgnorePattern, String> {
        if pointer.is_empty() || pointer == "/" {
            return Err(format!(
                "{pointer:?} would ignore the whole body; use compare.body \"none\" to skip body comparison"
            ));
        }
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(format!(
                "{pointer:?} is not a field-number pointer: it must start with '/' (e.g. {:?})",
                format!("/{pointer}")
            ));
        };
        let segments = rest
            .split('/')
            .map(|raw| match raw {
                "*" => Ok(PatternSegment::Any),
                _ => parse_number(raw).map(PatternSegment::Number).ok_or_else(|| {
                    format!(
                        "{pointer:?} is not a field-number pointer: {raw:?} is not a field number, an index or '*'"
                    )
                }),
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(IgnorePattern {
            text: pointer.to_string(),
            segments,
        })
    }

    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern matches `path` as a whole, with a single field's missing index
    /// matched or skipped. The set of pattern positions reachable after each segment is
    /// tracked, so optional indices cost no backtracking.
    fn matches(&self, path: &[Segment]) -> bool {
        let n = self.segments.len();
        let mut reach = vec![false; n.saturating_add(1)];
        let mut next = reach.clone();
        if let Some(r) = reach.first_mut() {
            *r = true;
        }
        for segment in path {
            next.iter_mut().for_each(|r| *r = false);
            for (i, (pattern, &here)) in self.segments.iter().zip(&reach).enumerate() {
                if here && pattern.matches(segment.number()) {
                    if let Some(r) = next.get_mut(i.saturating_add(1)) {
                        *r = true;
                    }
                }
            }
            if let Segment::Field { single: true, .. } = segment {
                // The implicit index 0 after a field sent once, taken or not.
                let taken: Vec<bool> = next.clone();
                for (i, (pattern, &here)) in self.segments.iter().zip(&taken).enumerate() {
                    if here && pattern.matches(0) {
                        if let Some(r) = next.get_mut(i.saturating_add(1)) {
                            *r = true;
                        }
                    }
                }
            }
            std::mem::swap(&mut reach, &mut next);
            if !reach.contains(&true) {
                return false;
            }
        }
        reach.get(n).copied().unwrap_or(false)
    }
}

/// Decimal digits without a leading zero (but `0` itself), as the pointers print them.
fn parse_number(raw: &str) -> Option<u64> {
    let digits = raw.as_bytes();
    let canonical = match digits {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => digits.iter().all(u8::is_ascii_digit),
    };
    if canonical {
        raw.parse().ok()
    } else {
        None
    }
}

/// A difference between the two sides, ready for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Which message of a stream, when either side has other than exactly one.
    pub message: Option<usize>,
    /// Field numbers and indices, `/1/3/2`; the root is `/`.
    pub pointer: String,
    /// The value, cut to 80 bytes, or `(absent)`: a number, a JSON string, `0x` and hex
    /// bytes, `[1,2]` for packed varints, `{1:5 2:"x"}` for a message.
    pub primary: String,
    /// As `primary`.
    pub canary: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.message {
            write!(f, "message {i} ")?;
        }
        write!(f, "{}: {} vs {}", self.pointer, self.primary, self.canary)
    }
}

/// One of [`all_differences`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementDifference {
    pub difference: Difference,
    /// The pointer with every index as `*` and without the message's place in a stream
    /// (`/2/3/1` of message 4 is `/2/*/1`): the same field of every item is one element.
    pub element: String,
}

/// Every difference, up to a bound.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Differences {
    /// In walk order: the first is the one [`first_difference`] reports.
    pub differences: Vec<ElementDifference>,
    /// There were more than the bound; the rest are not listed.
    pub cut: bool,
}

/// The first difference between two bodies' messages (each a serialized message, as
/// `grpc::decoded_messages` gives them), skipping whatever `ignore` matches. Fields are walked
/// in ascending number, the items of a repeated field in order, messages of a stream in order.
pub fn first_difference<M: AsRef<[u8]>>(
    primary: &[M],
    canary: &[M],
    ignore: &[IgnorePattern],
) -> Option<Difference> {
    let mut first = None;
    let mut walker = Walker::new(ignore, |message, path: &[Segment], p, c| {
        first = Some(difference(message, path, p, c));
        ControlFlow::Break(())
    });
    let _ = walker.stream(primary, canary);
    first
}

/// Every difference, at most `max` of them, with the rules of [`first_difference`]. A value
/// absent on one side, or compared as a whole, is one difference, not one per field in it.
pub fn all_differences<M: AsRef<[u8]>>(
    primary: &[M],
    canary: &[M],
    ignore: &[IgnorePattern],
    max: usize,
) -> Differences {
    let mut out = Differences::default();
    let mut walker = Walker::new(ignore, |message, path: &[Segment], p, c| {
        if out.differences.len() >= max {
            out.cut = true;
            return ControlFlow::Break(());
        }
        out.differences.push(ElementDifference {
            difference: difference(message, path, p, c),
            element: pointer(path, Indices::AsWildcard),
        });
        ControlFlow::Continue(())
    });
    let _ = walker.stream(primary, canary);
    out
}

/// A field's value as the wire format holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    number: u32,
    value: Value<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// `single`: sent once on both sides, so shown without an index.
    Field {
        number: u32,
        single: bool,
    },
    Index(usize),
}

impl Segment {
    fn number(self) -> u64 {
        match self {
            Segment::Field { number, .. } => u64::from(number),
            Segment::Index(i) => u64::try_from(i).unwrap_or(u64::MAX),
        }
    }
}

/// Reads a varint at `*pos`: at most 10 bytes, and a value that fits in 64 bits.
fn read_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *data.get(*pos)?;
        *pos = pos.saturating_add(1);
        if shift == 63 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(data: &'a [u8], pos: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = pos.checked_add(len)?;
    let out = data.get(*pos..end)?;
    *pos = end;
    Some(out)
}

/// The fields of `data` if it is a message to its last byte, in the order sent.
fn parse_message(data: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let tag = read_varint(data, &mut pos)?;
        let number = tag >> 3;
        if number == 0 || number > MAX_FIELD_NUMBER {
            return None;
        }
        let value = match tag & 7 {
            0 => Value::Varint(read_varint(data, &mut pos)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                take(data, &mut pos, 8)?.try_into().ok()?,
            )),
            2 => {
                let len = usize::try_from(read_varint(data, &mut pos)?).ok()?;
                Value::Bytes(take(data, &mut pos, len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                take(data, &mut pos, 4)?.try_into().ok()?,
            )),
            _ => return None,
        };
        fields.push(Field {
            number: u32::try_from(number).ok()?,
            value,
        });
    }
    Some(fields)
}

/// `data` as whole varints, if it is a run of them.
fn parse_packed(data: &[u8]) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        out.push(read_varint(data, &mut pos)?);
    }
    Some(out)
}

/// Valid UTF-8 without control characters: never taken apart as a message, which practically
/// always has a byte below 0x20 among its tags and lengths.
fn printable(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|t| !t.chars().any(char::is_control))
}

/// Valid UTF-8 whose only control characters are whitespace: text with line breaks, which is
/// also a run of one-byte varints.
fn text(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|t| {
        !t.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    })
}

/// What one side's length-delimited value is, per the module's rules.
enum Kind<'a> {
    Empty,
    Message(Vec<Field<'a>>),
    Text,
    Packed(Vec<u64>),
    Bytes,
}

fn classify(data: &[u8]) -> Kind<'_> {
    if data.is_empty() {
        return Kind::Empty;
    }
    if printable(data) {
        return Kind::Text;
    }
    if let Some(fields) = parse_message(data) {
        return Kind::Message(fields);
    }
    if text(data) {
        return Kind::Text;
    }
    match parse_packed(data) {
        Some(items) => Kind::Packed(items),
        None => Kind::Bytes,
    }
}

struct Walker<'i, F> {
    ignore: &'i [IgnorePattern],
    budget: usize,
    message: Option<usize>,
    path: Vec<Segment>,
    found: F,
}

impl<'i, F> Walker<'i, F>
where
    F: FnMut(Option<usize>, &[Segment], Option<&Value<'_>>, Option<&Value<'_>>) -> ControlFlow<()>,
{
    fn new(ignore: &'i [IgnorePattern], found: F) -> Self {
        Walker {
            ignore,
            budget: PARSE_BUDGET,
            message: None,
            path: Vec::new(),
            found,
        }
    }

    fn found(&mut self, p: Option<&Value<'_>>, c: Option<&Value<'_>>) -> ControlFlow<()> {
        (self.found)(self.message, &self.path, p, c)
    }

    /// Spends `cost` bytes of the parse budget if there are that many left.
    fn spend(&mut self, cost: usize) -> bool {
        match self.budget.checked_sub(cost) {
            Some(left) => {
                self.budget = left;
                true
            }
            None => false,
        }
    }

    fn stream<M: AsRef<[u8]>>(&mut self, primary: &[M], canary: &[M]) -> ControlFlow<()> {
        let stream = primary.len() != 1 || canary.len() != 1;
        for i in 0..primary.len().max(canary.len()) {
            self.message = stream.then_some(i);
            let p = primary.get(i).map(|m| Value::Bytes(m.as_ref()));
            let c = canary.get(i).map(|m| Value::Bytes(m.as_ref()));
            match (p, c) {
                (Some(Value::Bytes(a)), Some(Value::Bytes(b))) => self.top(a, b)?,
                (None, None) => {}
                _ => self.found(p.as_ref(), c.as_ref())?,
            }
        }
        ControlFlow::Continue(())
    }

    /// Two whole messages: they are meant to be messages, so no text or packed reading.
    fn top(&mut self, a: &[u8], b: &[u8]) -> ControlFlow<()> {
        if a == b {
            return ControlFlow::Continue(());
        }
        let cost = a.len().saturating_add(b.len());
        if self.spend(cost) {
            if let (Some(x), Some(y)) = (parse_message(a), parse_message(b)) {
                return self.messages(&x, &y, 0);
            }
        }
        self.found(Some(&Value::Bytes(a)), Some(&Value::Bytes(b)))
    }

    fn ignored(&self) -> bool {
        self.ignore.iter().any(|p| p.matches(&self.path))
    }

    fn messages(&mut self, a: &[Field<'_>], b: &[Field<'_>], depth: usize) -> ControlFlow<()> {
        let (a, b) = (by_number(a), by_number(b));
        let (mut i, mut j) = (0, 0);
        loop {
            let number = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.number.min(y.number),
                (Some(x), None) => x.number,
                (None, Some(y)) => y.number,
                (None, None) => return ControlFlow::Continue(()),
            };
            let xs = run(&a, &mut i, number);
            let ys = run(&b, &mut j, number);
            let single = xs.len() <= 1 && ys.len() <= 1;
            self.path.push(Segment::Field { number, single });
            let flow = if single {
                self.values(
                    xs.first().map(|f| &f.value),
                    ys.first().map(|f| &f.value),
                    depth,
                )
            } else if self.ignored() {
                ControlFlow::Continue(())
            } else {
                self.items(xs, ys, depth)
            };
            self.path.pop();
            flow?;
        }
    }

    fn items(&mut self, xs: &[&Field<'_>], ys: &[&Field<'_>], depth: usize) -> ControlFlow<()> {
        for k in 0..xs.len().max(ys.len()) {
            self.path.push(Segment::Index(k));
            let flow = self.values(
                xs.get(k).map(|f| &f.value),
                ys.get(k).map(|f| &f.value),
                depth,
            );
            self.path.pop();
            flow?;
        }
        ControlFlow::Continue(())
    }

    fn values(
        &mut self,
        p: Option<&Value<'_>>,
        c: Option<&Value<'_>>,
        depth: usize,
    ) -> ControlFlow<()> {
        if self.ignored() {
            return ControlFlow::Continue(());
        }
        match (p, c) {
            (None, None) => ControlFlow::Continue(()),
            (Some(Value::Bytes(x)), Some(Value::Bytes(y))) => self.bytes(x, y, depth),
            (Some(x), Some(y)) if x == y => ControlFlow::Continue(()),
            _ => self.found(p, c),
        }
    }

    fn bytes(&mut self, x: &[u8], y: &[u8], depth: usize) -> ControlFlow<()> {
        if x == y {
            return ControlFlow::Continue(());
        }
        let whole = |w: &mut Self| w.found(Some(&Value::Bytes(x)), Some(&Value::Bytes(y)));
        if depth >= MAX_DEPTH || !self.spend(x.len().saturating_add(y.len())) {
            return whole(self);
        }
        match (classify(x), classify(y)) {
            (Kind::Message(a), Kind::Message(b)) => self.messages(&a, &b, depth.saturating_add(1)),
            (Kind::Message(a), Kind::Empty) => self.messages(&a, &[], depth.saturating_add(1)),
            (Kind::Empty, Kind::Message(b)) => self.messages(&[], &b, depth.saturating_add(1)),
            (Kind::Packed(a), Kind::Packed(b)) => self.packed(&a, &b),
            (Kind::Packed(a), Kind::Empty) => self.packed(&a, &[]),
            (Kind::Empty, Kind::Packed(b)) => self.packed(&[], &b),
            (Kind::Empty | Kind::Message(_) | Kind::Text | Kind::Packed(_) | Kind::Bytes, _) => {
                whole(self)
            }
        }
    }

    fn packed(&mut self, a: &[u64], b: &[u64]) -> ControlFlow<()> {
        for k in 0..a.len().max(b.len()) {
            self.path.push(Segment::Index(k));
            let p = a.get(k).map(|&v| Value::Varint(v));
            let c = b.get(k).map(|&v| Value::Varint(v));
            let flow = if self.ignored() || p == c {
                ControlFlow::Continue(())
            } else {
                self.found(p.as_ref(), c.as_ref())
            };
            self.path.pop();
            flow?;
        }
        ControlFlow::Continue(())
    }
}

/// The fields sorted by number, keeping the order sent among those of one number.
fn by_number<'a, 'b>(fields: &'b [Field<'a>]) -> Vec<&'b Field<'a>> {
    let mut sorted: Vec<&Field<'a>> = fields.iter().collect();
    sorted.sort_by_key(|f| f.number);
    sorted
}

/// The fields of `number` starting at `*at`, moving `*at` past them.
fn run<'s, 'b, 'a>(
    sorted: &'s [&'b Field<'a>],
    at: &mut usize,
    number: u32,
) -> &'s [&'b Field<'a>] {
    let start = *at;
    let rest = sorted.get(start..).unwrap_or_default();
    let len = rest.iter().take_while(|f| f.number == number).count();
    *at = start.saturating_add(len);
    rest.get(..len).unwrap_or_default()
}

fn difference(
    message: Option<usize>,
    path: &[Segment],
    primary: Option<&Value<'_>>,
    canary: Option<&Value<'_>>,
) -> Difference {
    // The root is a whole message: rendered as one if it parses, never as text.
    let top = path.is_empty();
    Difference {
        message,
        pointer: pointer(path, Indices::AsNumbers),
        primary: render(primary, top),
        canary: render(canary, top),
    }
}

#[derive(Clone, Copy)]
enum Indices {
    AsNumbers,
    AsWildcard,
}

fn pointer(path: &[Segment], indices: Indices) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let mut out = String::new();
    for segment in path {
        let _ = match (segment, indices) {
            (Segment::Field { number, .. }, _) => write!(out, "/{number}"),
            (Segment::Index(i), Indices::AsNumbers) => write!(out, "/{i}"),
            (Segment::Index(_), Indices::AsWildcard) => write!(out, "/*"),
        };
    }
    out
}

fn render(value: Option<&Value<'_>>, top: bool) -> String {
    let Some(value) = value else {
        return ABSENT.to_string();
    };
    let mut out = String::new();
    let mut budget = RENDER_BUDGET;
    match (value, top) {
        (Value::Bytes(data), true) => match parse_message(data) {
            Some(fields) if spend(&mut budget, data.len()) => {
                write_message(&mut out, &fields, 0, &mut budget)
            }
            _ => write_raw(&mut out, data),
        },
        _ => write_value(&mut out, value, 0, &mut budget),
    }
    cut(out)
}

fn spend(budget: &mut usize, cost: usize) -> bool {
    match budget.checked_sub(cost) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}

/// Whether enough is written that the rest would be cut anyway.
fn full(out: &str) -> bool {
    out.len() > MAX_RENDERED_BYTES
}

fn write_value(out: &mut String, value: &Value<'_>, depth: usize, budget: &mut usize) {
    if full(out) {
        return;
    }
    let _ = match *value {
        Value::Varint(v) => write_integer(out, v, 64),
        Value::Fixed64(bits) => {
            let f = f64::from_bits(bits);
            if f.is_normal() || f == 0.0 {
                write!(out, "{f:?}")
            } else {
                write_integer(out, bits, 64)
            }
        }
        Value::Fixed32(bits) => {
            let f = f32::from_bits(bits);
            if f.is_normal() || f == 0.0 {
                // As the f64 it is exactly: 12.5 reads 12.5, 0.1 its true value
                // 0.10000000149011612. Formatting f32 itself would link a second copy of
                // core's float formatting, 4 KB of the module's size budget, for log text.
                write!(out, "{:?}", f64::from(f))
            } else {
                write_integer(out, u64::from(bits), 32)
            }
        }
        Value::Bytes(data) => {
            write_bytes(out, data, depth, budget);
            Ok(())
        }
    };
}

/// Unsigned, and signed too when the top bit is set: `int64 -1` is a 10-byte varint whose
/// unsigned value hides it.
fn write_integer(out: &mut String, v: u64, bits: u32) -> fmt::Result {
    write!(out, "{v}")?;
    let negative = match bits {
        32 => u32::try_from(v).ok().map(|v| i64::from(v as i32)),
        _ => Some(v as i64),
    }
    .filter(|s| *s < 0);
    match negative {
        Some(s) => write!(out, " ({s})"),
        None => Ok(()),
    }
}

fn write_bytes(out: &mut String, data: &[u8], depth: usize, budget: &mut usize) {
    let parseable = depth < MAX_DEPTH && spend(budget, data.len());
    match (parseable, data.is_empty()) {
        (_, true) => out.push_str("\"\""),
        (false, _) => write_raw(out, data),
        (true, false) => match classify(data) {
            Kind::Message(fields) => write_message(out, &fields, depth, budget),
            Kind::Packed(items) => {
                out.push('[');
                for (k, v) in items.iter().enumerate() {
                    if full(out) {
                        break;
                    }
                    if k > 0 {
                        out.push(',');
                    }
                    let _ = write_integer(out, *v, 64);
                }
                out.push(']');
            }
            Kind::Empty | Kind::Text | Kind::Bytes => write_raw(out, data),
        },
    }
}

fn write_message(out: &mut String, fields: &[Field<'_>], depth: usize, budget: &mut usize) {
    out.push('{');
    for (k, field) in fields.iter().enumerate() {
        if full(out) {
            break;
        }
        if k > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{}:", field.number);
        write_value(out, &field.value, depth.saturating_add(1), budget);
    }
    out.push('}');
}

/// A JSON string when the bytes are UTF-8, else `0x` and hex; only as much as can be shown.
fn write_raw(out: &mut String, data: &[u8]) {
    // A little more than is shown, so a value that is cut always ends past the cut.
    const SHOWN: usize = MAX_RENDERED_BYTES.saturating_add(4);
    match std::str::from_utf8(data) {
        Ok(text) => {
            let mut end = text.len().min(SHOWN);
            while !text.is_char_boundary(end) {
                end = end.saturating_sub(1);
            }
            let shown = text.get(..end).unwrap_or_default();
            out.push_str(&serde_json::to_string(shown).unwrap_or_default());
        }
        Err(_) => {
            out.push_str("0x");
            for b in data.iter().take(SHOWN / 2) {
                let _ = write!(out, "{b:02x}");
            }
        }
    }
}

fn cut(text: String) -> String {
    if text.len() <= MAX_RENDERED_BYTES {
        return text;
    }
    let mut end = MAX_RENDERED_BYTES;
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let mut out = text.get(..end).unwrap_or_default().to_string();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    /// A field of the wire format, to build messages from.
    enum F<'a> {
        V(u32, u64),
        D(u32, f64),
        S(u32, f32),
        B(u32, &'a [u8]),
        M(u32, Vec<u8>),
    }

    fn msg(fields: &[F]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in fields {
            match f {
                F::V(n, v) => {
                    out.extend(varint(u64::from(*n) << 3));
                    out.extend(varint(*v));
                }
                F::D(n, v) => {
                    out.extend(varint(u64::from(*n) << 3 | 1));
                    out.extend(v.to_le_bytes());
                }
                F::S(n, v) => {
                    out.extend(varint(u64::from(*n) << 3 | 5));
                    out.extend(v.to_le_bytes());
                }
                F::B(n, b) => {
                    out.extend(varint(u64::from(*n) << 3 | 2));
                    out.extend(varint(b.len() as u64));
                    out.extend_from_slice(b);
                }
                F::M(n, b) => {
                    out.extend(varint(u64::from(*n) << 3 | 2));
                    out.extend(varint(b.len() as u64));
                    out.extend_from_slice(b);
                }
            }
        }
        out
    }

    fn packed(items: &[u64]) -> Vec<u8> {
        items.iter().flat_map(|&v| varint(v)).collect()
    }

    fn patterns(ignore: &[&str]) -> Vec<IgnorePattern> {
        ignore
            .iter()
            .map(|p| IgnorePattern::parse(p).unwrap())
            .collect()
    }

    fn diff(p: &[Vec<u8>], c: &[Vec<u8>], ignore: &[&str]) -> Option<String> {
        first_difference(p, c, &patterns(ignore)).map(|d| d.to_string())
    }

    #[test]
    fn first_difference_table() {
        use F::*;
        let item = |id: u64, price: u64| msg(&[V(1, id), V(2, price)]);
        let long = "x".repeat(100);
        let long_want = format!(r#"/1: "{}… vs "y""#, "x".repeat(79));
        let group = [0x0b, 0x08, 0x96]; // field 1 start-group, then a varint cut short
        let minus_one = msg(&[V(1, u64::MAX)]);
        // primary, canary, ignore, first difference
        type Case<'a> = (Vec<Vec<u8>>, Vec<Vec<u8>>, &'a [&'a str], Option<&'a str>);
        let one = |m: Vec<u8>| vec![m];
        let cases: Vec<Case> = vec![
            (one(msg(&[V(1, 5)])), one(msg(&[V(1, 5)])), &[], None),
            (one(vec![]), one(vec![]), &[], None),
            (vec![], vec![], &[], None),
            // Field order is not content.
            (
                one(msg(&[V(1, 5), B(2, b"x")])),
                one(msg(&[B(2, b"x"), V(1, 5)])),
                &[],
                None,
            ),
            // Non-canonical varint: the same number.
            (
                one(vec![0x08, 0x85, 0x00]),
                one(vec![0x08, 0x05]),
                &[],
                None,
            ),
            (
                one(msg(&[M(2, msg(&[V(1, 100)]))])),
                one(msg(&[M(2, msg(&[V(1, 90)]))])),
                &[],
                Some("/2/1: 100 vs 90"),
            ),
            (
                one(msg(&[
                    V(1, 1),
                    M(3, msg(&[V(7, 1), M(2, msg(&[V(1, 4)]))])),
                ])),
                one(msg(&[
                    V(1, 1),
                    M(3, msg(&[V(7, 1), M(2, msg(&[V(1, 5)]))])),
                ])),
                &[],
                Some("/3/2/1: 4 vs 5"),
            ),
            (
                one(msg(&[V(1, 5)])),
                one(msg(&[V(1, 5), V(3, 7)])),
                &[],
                Some("/3: (absent) vs 7"),
            ),
            (
                one(msg(&[V(1, 5), V(3, 7)])),
                one(msg(&[V(1, 5)])),
                &[],
                Some("/3: 7 vs (absent)"),
            ),
            // Repeated: indexed.
            (
                one(msg(&[M(2, item(1, 10)), M(2, item(2, 20))])),
                one(msg(&[M(2, item(1, 10)), M(2, item(2, 25))])),
                &[],
                Some("/2/1/2: 20 vs 25"),
            ),
            (
                one(msg(&[M(2, item(1, 10)), M(2, item(2, 20))])),
                one(msg(&[M(2, item(1, 10))])),
                &[],
                Some("/2/1: {1:2 2:20} vs (absent)"),
            ),
            (
                one(msg(&[M(2, item(1, 10))])),
                one(msg(&[M(2, item(1, 11))])),
                &[],
                Some("/2/2: 10 vs 11"),
            ),
            // The items of one field stay in the order sent, other fields between them or not.
            (
                one(msg(&[M(2, item(1, 10)), V(1, 0), M(2, item(2, 20))])),
                one(msg(&[M(2, item(1, 10)), M(2, item(2, 20)), V(1, 0)])),
                &[],
                None,
            ),
            (
                one(msg(&[V(4, 1), V(4, 2)])),
                one(msg(&[V(4, 2), V(4, 1)])),
                &[],
                Some("/4/0: 1 vs 2"),
            ),
            // Packed varints: indexed as the same field unpacked would be.
            (
                one(msg(&[B(4, &packed(&[1, 2, 3]))])),
                one(msg(&[B(4, &packed(&[1, 2, 4]))])),
                &[],
                Some("/4/2: 3 vs 4"),
            ),
            (
                one(msg(&[B(4, &packed(&[1, 2, 3]))])),
                one(msg(&[B(4, &packed(&[1, 2]))])),
                &[],
                Some("/4/2: 3 vs (absent)"),
            ),
            (
                one(msg(&[B(4, &packed(&[300]))])),
                one(msg(&[B(4, b"")])),
                &[],
                Some("/4/0: 300 vs (absent)"),
            ),
            // An empty value goes with a message on the other side.
            (
                one(msg(&[M(3, vec![])])),
                one(msg(&[M(3, msg(&[V(1, 5)]))])),
                &[],
                Some("/3/1: (absent) vs 5"),
            ),
            // Text is never taken apart: "hi" would parse as field 13 = 105.
            (
                one(msg(&[B(1, b"hi")])),
                one(msg(&[B(1, b"ho")])),
                &[],
                Some(r#"/1: "hi" vs "ho""#),
            ),
            (
                one(msg(&[B(1, "café".as_bytes())])),
                one(msg(&[B(1, b"cafe")])),
                &[],
                Some(r#"/1: "café" vs "cafe""#),
            ),
            // Text with line breaks is also a varint run; it stays text.
            (
                one(msg(&[B(1, b"a\nb")])),
                one(msg(&[B(1, b"a\nc")])),
                &[],
                Some(r#"/1: "a\nb" vs "a\nc""#),
            ),
            (
                one(msg(&[B(1, long.as_bytes())])),
                one(msg(&[B(1, b"y")])),
                &[],
                Some(&long_want),
            ),
            (
                one(msg(&[B(1, b"")])),
                one(msg(&[B(1, b"x")])),
                &[],
                Some(r#"/1: "" vs "x""#),
            ),
            // Bytes: neither message, text nor varints.
            (
                one(msg(&[B(1, &[0xff, 0xff])])),
                one(msg(&[B(1, &[0xff, 0xfe])])),
                &[],
                Some("/1: 0xffff vs 0xfffe"),
            ),
            // A message on one side, text on the other: compared whole.
            (
                one(msg(&[M(5, msg(&[V(1, 1)]))])),
                one(msg(&[B(5, b"one")])),
                &[],
                Some(r#"/5: {1:1} vs "one""#),
            ),
            // Wire types differ.
            (
                one(msg(&[V(1, 5)])),
                one(msg(&[B(1, b"5")])),
                &[],
                Some(r#"/1: 5 vs "5""#),
            ),
            (
                one(msg(&[V(1, 5)])),
                one(msg(&[D(1, 5.0)])),
                &[],
                Some("/1: 5 vs 5.0"),
            ),
            // Fixed values, as floats when they read as one.
            (
                one(msg(&[D(5, 3.5)])),
                one(msg(&[D(5, 4.25)])),
                &[],
                Some("/5: 3.5 vs 4.25"),
            ),
            (
                one(msg(&[S(5, 1.5)])),
                one(msg(&[S(5, -2.5)])),
                &[],
                Some("/5: 1.5 vs -2.5"),
            ),
            (
                one(msg(&[D(5, f64::from_bits(100))])),
                one(msg(&[D(5, f64::from_bits(u64::MAX))])),
                &[],
                Some("/5: 100 vs 18446744073709551615 (-1)"),
            ),
            (
                one(msg(&[S(5, f32::from_bits(7))])),
                one(msg(&[S(5, f32::from_bits(u32::MAX))])),
                &[],
                Some("/5: 7 vs 4294967295 (-1)"),
            ),
            (
                one(minus_one.clone()),
                one(msg(&[V(1, 1)])),
                &[],
                Some("/1: 18446744073709551615 (-1) vs 1"),
            ),
            // Groups are not decoded: the value is compared whole.
            (
                one(msg(&[B(2, &group)])),
                one(msg(&[B(2, &[0x0b, 0x08, 0x97])])),
                &[],
                Some("/2: 0x0b0896 vs 0x0b0897"),
            ),
            (
                one(vec![0x0b, 0x0c]),
                one(vec![0x0b, 0x0c, 0x08, 0x01]),
                &[],
                Some(r#"/: "\u000b\f" vs "\u000b\f\b\u0001""#),
            ),
            // Unknown wire types 6 and 7.
            (
                one(vec![0x0e, 0x01]),
                one(vec![0x0f, 0x01]),
                &[],
                Some(r#"/: "\u000e\u0001" vs "\u000f\u0001""#),
            ),
            // Truncated, or not protobuf at all: compared whole at the root.
            (
                one(vec![0x08]),
                one(msg(&[V(1, 1)])),
                &[],
                Some(r#"/: "\b" vs {1:1}"#),
            ),
            (
                one(msg(&[B(1, b"abc")])[..4].to_vec()),
                one(msg(&[B(1, b"abd")])),
                &[],
                Some(r#"/: "\n\u0003ab" vs {1:"abd"}"#),
            ),
            (
                one(br#"{"a":1}"#.to_vec()),
                one(br#"{"a":2}"#.to_vec()),
                &[],
                Some(r#"/: "{\"a\":1}" vs "{\"a\":2}""#),
            ),
            (
                one(vec![0xff; 3]),
                one(vec![0xfe; 3]),
                &[],
                Some("/: 0xffffff vs 0xfefefe"),
            ),
            // Field 0, and field numbers past 2^29 - 1, are not valid.
            (
                one(vec![0x00, 0x01]),
                one(vec![0x00, 0x02]),
                &[],
                Some(r#"/: "\u0000\u0001" vs "\u0000\u0002""#),
            ),
            // A varint past 64 bits is not valid.
            (
                one(vec![
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                ]),
                one(vec![
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ]),
                &[],
                Some("/: 0x08ffffffffffffffffff02 vs {1:18446744073709551615 (-1)}"),
            ),
            // Ignore patterns.
            (
                one(msg(&[V(1, 1), V(9, 100)])),
                one(msg(&[V(1, 1), V(9, 200)])),
                &["/9"],
                None,
            ),
            (
                one(msg(&[M(2, item(1, 10)), M(2, item(2, 20))])),
                one(msg(&[M(2, item(7, 10)), M(2, item(8, 20))])),
                &["/2/*/1"],
                None,
            ),
            (
                one(msg(&[M(2, item(1, 10)), M(2, item(2, 20))])),
                one(msg(&[M(2, item(7, 10)), M(2, item(8, 21))])),
                &["/2/*/1"],
                Some("/2/1/2: 20 vs 21"),
            ),
            // A field sent once matches a pattern for a list's items too.
            (
                one(msg(&[M(2, item(1, 10))])),
                one(msg(&[M(2, item(7, 10))])),
                &["/2/*/1"],
                None,
            ),
            (
                one(msg(&[M(2, item(1, 10))])),
                one(msg(&[M(2, item(7, 10))])),
                &["/2/0/1"],
                None,
            ),
            (
                one(msg(&[M(2, item(1, 10))])),
                one(msg(&[M(2, item(7, 10))])),
                &["/2/1/1"],
                Some("/2/1: 1 vs 7"),
            ),
            // Ignored even when absent on one side.
            (
                one(msg(&[V(1, 1), V(9, 1)])),
                one(msg(&[V(1, 1)])),
                &["/9"],
                None,
            ),
            (
                one(msg(&[V(4, 1), V(4, 2)])),
                one(msg(&[V(4, 1), V(4, 2), V(4, 3)])),
                &["/4/2"],
                None,
            ),
            (
                one(msg(&[B(4, &packed(&[1, 2, 3]))])),
                one(msg(&[B(4, &packed(&[1, 9, 3]))])),
                &["/4/1"],
                None,
            ),
            // A pattern longer or shorter than the path does not match it.
            (
                one(msg(&[M(3, msg(&[V(1, 1)]))])),
                one(msg(&[M(3, msg(&[V(1, 2)]))])),
                &["/3/1/1", "/1"],
                Some("/3/1: 1 vs 2"),
            ),
            // Streams: the message's place is named.
            (
                vec![msg(&[V(1, 1)]), msg(&[V(1, 2)])],
                vec![msg(&[V(1, 1)]), msg(&[V(1, 3)])],
                &[],
                Some("message 1 /1: 2 vs 3"),
            ),
            (
                vec![msg(&[V(1, 1)])],
                vec![msg(&[V(1, 1)]), msg(&[V(1, 2)])],
                &[],
                Some("message 1 /: (absent) vs {1:2}"),
            ),
            (
                vec![msg(&[V(1, 1)]), msg(&[V(1, 2)])],
                vec![msg(&[V(1, 1)]), msg(&[V(1, 3)])],
                &["/1"],
                None,
            ),
            (
                vec![],
                vec![vec![]],
                &[],
                Some("message 0 /: (absent) vs {}"),
            ),
        ];
        for (i, (primary, canary, ignore, want)) in cases.iter().enumerate() {
            assert_eq!(diff(primary, canary, ignore).as_deref(), *want, "case {i}");
            // The same difference with the sides swapped.
            let back = first_difference(canary, primary, &patterns(ignore));
            let forward = first_difference(primary, canary, &patterns(ignore));
            assert_eq!(
                back.map(|d| (d.message, d.pointer, d.canary, d.primary)),
                forward.map(|d| (d.message, d.pointer, d.primary, d.canary)),
                "case {i} swapped"
            );
            for side in [primary, canary] {
                assert_eq!(diff(side, side, &[]), None, "case {i} against itself");
            }
            // all_differences' first is first_difference, whatever the bound past 0.
            for max in [1, 2, 100] {
                let all = all_differences(primary, canary, &patterns(ignore), max);
                let first = all.differences.first().map(|d| d.difference.to_string());
                assert_eq!(first.as_deref(), *want, "case {i}, max {max}");
            }
        }
    }

    #[test]
    fn all_table() {
        use F::*;
        let item = |id: u64, price: u64| msg(&[V(1, id), V(2, price)]);
        let a = msg(&[
            M(2, item(1, 10)),
            M(2, item(2, 20)),
            M(2, item(3, 30)),
            V(9, 1),
        ]);
        let b = msg(&[
            M(2, item(7, 10)),
            M(2, item(8, 21)),
            M(2, item(9, 30)),
            V(9, 2),
        ]);
        // primary, canary, ignore, max, (difference, element) in order, cut
        type Case<'a> = (
            Vec<Vec<u8>>,
            Vec<Vec<u8>>,
            &'a [&'a str],
            usize,
            &'a [(&'a str, &'a str)],
            bool,
        );
        let cases: Vec<Case> = vec![
            (vec![a.clone()], vec![a.clone()], &[], 10, &[], false),
            (vec![a.clone()], vec![b.clone()], &[], 0, &[], true),
            (
                vec![a.clone()],
                vec![b.clone()],
                &[],
                100,
                &[
                    ("/2/0/1: 1 vs 7", "/2/*/1"),
                    ("/2/1/1: 2 vs 8", "/2/*/1"),
                    ("/2/1/2: 20 vs 21", "/2/*/2"),
                    ("/2/2/1: 3 vs 9", "/2/*/1"),
                    ("/9: 1 vs 2", "/9"),
                ],
                false,
            ),
            // Exactly as many as the bound: not cut.
            (
                vec![a.clone()],
                vec![b.clone()],
                &["/2/*/1"],
                2,
                &[("/2/1/2: 20 vs 21", "/2/*/2"), ("/9: 1 vs 2", "/9")],
                false,
            ),
            (
                vec![a.clone()],
                vec![b.clone()],
                &[],
                2,
                &[("/2/0/1: 1 vs 7", "/2/*/1"), ("/2/1/1: 2 vs 8", "/2/*/1")],
                true,
            ),
            (
                vec![a.clone()],
                vec![b.clone()],
                &["/2", "/9"],
                100,
                &[],
                false,
            ),
            // Packed items and stream messages: the element has neither index.
            (
                vec![msg(&[B(4, &packed(&[1, 2]))]), msg(&[V(1, 1)])],
                vec![msg(&[B(4, &packed(&[1, 3, 5]))]), msg(&[V(1, 2)])],
                &[],
                100,
                &[
                    ("message 0 /4/1: 2 vs 3", "/4/*"),
                    ("message 0 /4/2: (absent) vs 5", "/4/*"),
                    ("message 1 /1: 1 vs 2", "/1"),
                ],
                false,
            ),
            (
                vec![vec![0xff]],
                vec![vec![0xfe]],
                &[],
                100,
                &[("/: 0xff vs 0xfe", "/")],
                false,
            ),
        ];
        for (i, (primary, canary, ignore, max, want, cut)) in cases.iter().enumerate() {
            let got = all_differences(primary, canary, &patterns(ignore), *max);
            let pairs: Vec<(String, &str)> = got
                .differences
                .iter()
                .map(|d| (d.difference.to_string(), d.element.as_str()))
                .collect();
            let want: Vec<(String, &str)> = want.iter().map(|(d, e)| (d.to_string(), *e)).collect();
            assert_eq!(pairs, want, "case {i}");
            assert_eq!(got.cut, *cut, "case {i}");
        }
    }

    #[test]
    fn ignore_pattern_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "",
                r#""" would ignore the whole body; use compare.body "none" to skip body comparison"#,
            ),
            (
                "/",
                r#""/" would ignore the whole body; use compare.body "none" to skip body comparison"#,
            ),
            (
                "1/2",
                r#""1/2" is not a field-number pointer: it must start with '/' (e.g. "/1/2")"#,
            ),
            (
                "/items/0",
                r#""/items/0" is not a field-number pointer: "items" is not a field number, an index or '*'"#,
            ),
            (
                "/01",
                r#""/01" is not a field-number pointer: "01" is not a field number, an index or '*'"#,
            ),
            (
                "/1//2",
                r#""/1//2" is not a field-number pointer: "" is not a field number, an index or '*'"#,
            ),
            (
                "/1/",
                r#""/1/" is not a field-number pointer: "" is not a field number, an index or '*'"#,
            ),
            (
                "/-1",
                r#""/-1" is not a field-number pointer: "-1" is not a field number, an index or '*'"#,
            ),
            (
                "/1*",
                r#""/1*" is not a field-number pointer: "1*" is not a field number, an index or '*'"#,
            ),
            (
                "/99999999999999999999",
                r#""/99999999999999999999" is not a field-number pointer: "99999999999999999999" is not a field number, an index or '*'"#,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                IgnorePattern::parse(input).err().as_deref(),
                Some(*want),
                "{input:?}"
            );
        }
        for ok in [
            "/1",
            "/*",
            "/0",
            "/2/*/1",
            "/536870911/18446744073709551615",
        ] {
            assert_eq!(IgnorePattern::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn pattern_matching() {
        let f = |number: u32| Segment::Field {
            number,
            single: false,
        };
        let s = |number: u32| Segment::Field {
            number,
            single: true,
        };
        let x = Segment::Index;
        // pattern, path, matches
        let cases: Vec<(&str, Vec<Segment>, bool)> = vec![
            ("/1", vec![s(1)], true),
            ("/1", vec![s(2)], false),
            ("/*", vec![s(2)], true),
            ("/*", vec![f(2), x(0)], false),
            ("/*/*", vec![f(2), x(0)], true),
            ("/2/0", vec![f(2), x(0)], true),
            ("/2/1", vec![f(2), x(0)], false),
            // The implicit index of a field sent once: matched or skipped.
            ("/2/0", vec![s(2)], true),
            ("/2/*", vec![s(2)], true),
            ("/2/1", vec![s(2)], false),
            ("/2/*/1", vec![s(2), s(1)], true),
            ("/2/0/1", vec![s(2), s(1)], true),
            ("/2/1", vec![s(2), s(1)], true),
            ("/2/*/*/1", vec![s(2), s(1)], false),
            ("/*/*/*/*", vec![s(2), s(1)], true),
            ("/*/*/*/*/*", vec![s(2), s(1)], false),
            ("/2/*/1", vec![f(2), x(3), s(1)], true),
            ("/2/*/1", vec![f(2), x(3), s(2)], false),
            ("/3", vec![], false),
            ("/3", vec![s(3), s(1)], false),
        ];
        for (pattern, path, want) in cases {
            let p = IgnorePattern::parse(pattern).unwrap();
            assert_eq!(p.matches(&path), want, "{pattern} vs {path:?}");
        }
    }

    #[test]
    fn deep_messages_stop_recursing() {
        let nest = |leaf: u64, depth: usize| {
            (0..depth).fold(msg(&[F::V(1, leaf)]), |inner, _| msg(&[F::M(1, inner)]))
        };
        let a = vec![nest(1, 100)];
        let b = vec![nest(2, 100)];
        assert_eq!(first_difference(&a, &a.clone(), &[]), None);
        let d = first_difference(&a, &b, &[]).unwrap();
        // Messages within MAX_DEPTH are taken apart; below, the value is compared whole.
        assert_eq!(d.pointer, "/1".repeat(MAX_DEPTH + 1));
        assert!(d.primary.starts_with("{1:{1:"), "{}", d.primary);
        assert!(d.primary.ends_with('…'), "{}", d.primary);
        let all = all_differences(&a, &b, &[], 10);
        assert_eq!(all.differences.len(), 1);
    }

    #[test]
    fn budget_ends_parsing() {
        // Two sides over the parse budget together: their field 1 is compared whole.
        let big = |leaf: u64| {
            let inner = msg(&[F::B(1, &vec![7u8; PARSE_BUDGET / 2]), F::V(2, leaf)]);
            vec![msg(&[F::M(1, inner)])]
        };
        let (a, b) = (big(1), big(2));
        let d = first_difference(&a, &b, &[]).unwrap();
        assert_eq!(d.pointer, "/");
        // Within the budget it is taken apart.
        let small = |leaf: u64| {
            let inner = msg(&[F::B(1, &vec![7u8; PARSE_BUDGET / 8]), F::V(2, leaf)]);
            vec![msg(&[F::M(1, inner)])]
        };
        let d = first_difference(&small(1), &small(2), &[]).unwrap();
        assert_eq!(d.to_string(), "/1/2: 1 vs 2");
    }

    #[test]
    fn rendering() {
        use F::*;
        let cases: Vec<(Value, &str)> = vec![
            (Value::Varint(0), "0"),
            (
                Value::Varint(1 << 63),
                "9223372036854775808 (-9223372036854775808)",
            ),
            (Value::Fixed64(0), "0.0"),
            (Value::Fixed64(1e300f64.to_bits()), "1e300"),
            (Value::Fixed64(f64::NAN.to_bits()), "9221120237041090560"),
            (Value::Fixed32(0x8000_0000), "-0.0"),
            (Value::Fixed32(1), "1"),
            (Value::Bytes(b""), "\"\""),
            (Value::Bytes(b"\xe2\x82"), "0xe282"),
            (Value::Bytes(&[1, 2, 0x96, 0x01]), "[1,2,150]"),
        ];
        for (value, want) in &cases {
            assert_eq!(render(Some(value), false), *want, "{value:?}");
        }
        let nested = msg(&[
            V(1, 1),
            B(2, b"name"),
            M(3, msg(&[D(1, 2.5)])),
            B(4, &packed(&[1, 2])),
        ]);
        assert_eq!(
            render(Some(&Value::Bytes(&nested)), true),
            r#"{1:1 2:"name" 3:{1:2.5} 4:[1,2]}"#
        );
        let many = msg(&(1..60).map(|n| V(n, 1)).collect::<Vec<_>>());
        let shown = render(Some(&Value::Bytes(&many)), true);
        assert!(shown.ends_with('…'));
        assert_eq!(shown.len(), MAX_RENDERED_BYTES + '…'.len_utf8());
        let euros = "€".repeat(40);
        let shown = render(Some(&Value::Bytes(euros.as_bytes())), false);
        assert_eq!(shown, format!("\"{}…", "€".repeat(26)));
        assert_eq!(render(None, false), "(absent)");
    }
}
