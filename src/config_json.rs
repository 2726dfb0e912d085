//! Reads the configuration JSON into a tree of known shape, for `config` and `mirror_config`
//! to take their raw structs from.
//!
//! This is what `#[derive(Deserialize)]` on those structs and `serde_path_to_error` did, with
//! the same results: it asks serde_json for each value exactly as the derived code did
//! (`deserialize_map` for an object, `String::deserialize` for a string, ...), so every error,
//! message and line/column alike, is serde_json's own; and it names the path of the value that
//! failed as `serde_path_to_error` did. But one visitor reads every object, where the derive
//! generated code per struct and field type and the path tracking doubled all of it: about
//! 30 KB of the wasm module.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, Error, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::Deserialize;

/// What a value must look like.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    Str,
    Bool,
    F64,
    U32,
    Usize,
    /// The inner shape, or `null`.
    Opt(&'static Shape),
    List(&'static Shape),
    /// A JSON object with any keys, all of one shape.
    Dict(&'static Shape),
    /// A JSON object with these fields and no others.
    Obj(&'static Fields),
    /// One of these names, as a string: what serde makes of an enum of unit variants.
    Variant(&'static [&'static str]),
}

/// The fields of a config object, in the raw struct's order: unknown-field errors list them
/// in it, and a missing-field error names the first required one missing.
pub(crate) struct Fields {
    names: &'static [&'static str],
    shapes: &'static [Shape],
    required: &'static [&'static str],
}

impl Fields {
    /// `shapes` index-aligned with `names`. Fields not `required` are `None` when absent (or
    /// `null` where their shape is `Opt`), for the raw struct to put its default in.
    pub const fn new(
        names: &'static [&'static str],
        shapes: &'static [Shape],
        required: &'static [&'static str],
    ) -> Fields {
        // Evaluated at compile time, for the statics: a mismatch does not build.
        assert!(names.len() == shapes.len(), "one shape per field name");
        Fields {
            names,
            shapes,
            required,
        }
    }
}

/// A value as read.
pub(crate) enum Node {
    Null,
    Str(String),
    Bool(bool),
    F64(f64),
    U32(u32),
    Usize(usize),
    List(Vec<Node>),
    /// In sorted key order, each key once (the last value given wins), as a `BTreeMap`.
    Dict(Vec<(String, Node)>),
    Obj(Obj),
    /// Index into the variant names.
    Variant(usize),
}

/// A config object as read: the value of each field that was there.
pub(crate) struct Obj {
    fields: &'static Fields,
    values: Vec<Option<Node>>,
}

impl Obj {
    /// Takes the value of field `name`: `None` when it was absent or `null`.
    fn take(&mut self, name: &str) -> Option<Node> {
        let i = self.fields.names.iter().position(|n| *n == name)?;
        match self.values.get_mut(i)?.take()? {
            Node::Null => None,
            node => Some(node),
        }
    }

    pub fn string(&mut self, name: &str) -> Option<String> {
        match self.take(name)? {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn bool(&mut self, name: &str) -> Option<bool> {
        match self.take(name)? {
            Node::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn f64(&mut self, name: &str) -> Option<f64> {
        match self.take(name)? {
            Node::F64(n) => Some(n),
            _ => None,
        }
    }

    pub fn u32(&mut self, name: &str) -> Option<u32> {
        match self.take(name)? {
            Node::U32(n) => Some(n),
            _ => None,
        }
    }

    pub fn usize(&mut self, name: &str) -> Option<usize> {
        match self.take(name)? {
            Node::Usize(n) => Some(n),
            _ => None,
        }
    }

    pub fn variant(&mut self, name: &str) -> Option<usize> {
        match self.take(name)? {
            Node::Variant(i) => Some(i),
            _ => None,
        }
    }

    pub fn obj(&mut self, name: &str) -> Option<Obj> {
        match self.take(name)? {
            Node::Obj(o) => Some(o),
            _ => None,
        }
    }

    pub fn strings(&mut self, name: &str) -> Option<Vec<String>> {
        match self.take(name)? {
            Node::List(items) => Some(items.into_iter().filter_map(Node::into_string).collect()),
            _ => None,
        }
    }

    pub fn objs(&mut self, name: &str) -> Option<Vec<Obj>> {
        match self.take(name)? {
            Node::List(items) => Some(
                items
                    .into_iter()
                    .filter_map(|n| match n {
                        Node::Obj(o) => Some(o),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// A `Dict` of string lists.
    pub fn string_lists(&mut self, name: &str) -> Option<Vec<(String, Vec<String>)>> {
        match self.take(name)? {
            Node::Dict(entries) => Some(
                entries
                    .into_iter()
                    .map(|(k, v)| match v {
                        Node::List(items) => {
                            (k, items.into_iter().filter_map(Node::into_string).collect())
                        }
                        _ => (k, Vec::new()),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

impl Node {
    fn into_string(self) -> Option<String> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Reads a JSON object with `fields`. On error, the path of the value that failed in
/// `serde_path_to_error`'s notation (`rules[2].cookie`, `.` for the document itself), and the
/// error.
pub(crate) fn read<'de, D: Deserializer<'de>>(
    d: D,
    fields: &'static Fields,
) -> Result<Obj, (String, D::Error)> {
    let track = Track(Cell::new(None));
    let seed = Seed {
        shape: Shape::Obj(fields),
        at: &At::Root,
        track: &track,
    };
    match seed.deserialize(d) {
        Ok(Node::Obj(obj)) => Ok(obj),
        // An object shape only ever reads as an object.
        Ok(_) => Ok(Obj {
            fields,
            values: Vec::new(),
        }),
        Err(e) => Err((track.0.take().unwrap_or_else(|| ".".to_string()), e)),
    }
}

/// Where a value is, as a chain up to the root that lives on the stack while it is read.
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Root => Ok(()),
            At::Key(At::Root, key) => f.write_str(key),
            At::Key(parent, key) => write!(f, "{parent}.{key}"),
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// The path of the first (innermost) value an error came out of, like `serde_path_to_error`:
/// each level that sees the error passes it up, but only the first one records where.
struct Track(Cell<Option<String>>);

impl Track {
    fn trigger<E>(&self, at: &At<'_>, e: E) -> E {
        let path = self.0.take().unwrap_or_else(|| match at {
            At::Root => ".".to_string(),
            _ => at.to_string(),
        });
        self.0.set(Some(path));
        e
    }
}

#[derive(Clone, Copy)]
struct Seed<'a> {
    shape: Shape,
    at: &'a At<'a>,
    track: &'a Track,
}

impl Seed<'_> {
    fn within<'b>(&self, shape: &'static Shape, at: &'b At<'b>) -> Seed<'b>
    where
        Self: 'b,
    {
        Seed {
            shape: *shape,
            at,
            track: self.track,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        // The same calls the derived code made, so serde_json raises the same errors.
        let node = match self.shape {
            Shape::Str => String::deserialize(d).map(Node::Str),
            Shape::Bool => bool::deserialize(d).map(Node::Bool),
            Shape::F64 => f64::deserialize(d).map(Node::F64),
            Shape::U32 => u32::deserialize(d).map(Node::U32),
            Shape::Usize => usize::deserialize(d).map(Node::Usize),
            Shape::Opt(_) => d.deserialize_option(self),
            Shape::List(_) => d.deserialize_seq(self),
            Shape::Dict(_) | Shape::Obj(_) => d.deserialize_map(self),
            Shape::Variant(names) => d.deserialize_enum("", names, self),
        };
        node.map_err(|e| self.track.trigger(self.at, e))
    }
}

/// Visits every compound shape; `expecting` gives serde's words for each, which end up in
/// messages like "invalid type: sequence, expected a JSON object".
impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.shape {
            Shape::Opt(_) => "option",
            Shape::List(_) => "a sequence",
            Shape::Dict(_) => "a map",
            // Not serde's words for a struct: a derived struct also takes an array,
            // filling its fields by position, which a config object must not.
            Shape::Obj(_) => "a JSON object",
            Shape::Variant(_) => "enum",
            // Read by serde's own impls, never visited here.
            Shape::Str | Shape::Bool | Shape::F64 | Shape::U32 | Shape::Usize => "a value",
        })
    }

    fn visit_none<E: Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        match self.shape {
            Shape::Opt(inner) => self.within(inner, self.at).deserialize(d),
            _ => Err(D::Error::invalid_type(serde::de::Unexpected::Option, &self)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let Shape::List(inner) = self.shape else {
            return Err(A::Error::invalid_type(serde::de::Unexpected::Seq, &self));
        };
        let mut items = Vec::new();
        loop {
            let at = At::Index(self.at, items.len());
            match seq.next_element_seed(self.within(inner, &at))? {
                Some(item) => items.push(item),
                None => return Ok(Node::List(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        match self.shape {
            Shape::Dict(inner) => {
                let mut entries: Vec<(String, Node)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let at = At::Key(self.at, &key);
                    let value = map.next_value_seed(self.within(inner, &at))?;
                    match entries.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
                        Ok(i) => {
                            if let Some(entry) = entries.get_mut(i) {
                                entry.1 = value;
                            }
                        }
                        Err(i) => entries.insert(i, (key, value)),
                    }
                }
                Ok(Node::Dict(entries))
            }
            Shape::Obj(fields) => {
                let mut values: Vec<Option<Node>> = fields.names.iter().map(|_| None).collect();
                while let Some(key) = map.next_key::<String>()? {
                    let field = (fields.names.iter().zip(fields.shapes))
                        .zip(values.iter_mut())
                        .find(|((name, _), _)| **name == key);
                    let Some(((&name, shape), slot)) = field else {
                        // This fails while the key is read, so (as with
                        // serde_path_to_error) the path ends in the key; a duplicate or
                        // missing field is the object's own error.
                        let e = A::Error::unknown_field(&key, fields.names);
                        return Err(self.track.trigger(&At::Key(self.at, &key), e));
                    };
                    if slot.is_some() {
                        return Err(A::Error::duplicate_field(name));
                    }
                    let at = At::Key(self.at, name);
                    *slot = Some(map.next_value_seed(self.within(shape, &at))?);
                }
                for (name, value) in fields.names.iter().zip(&values) {
                    if value.is_none() && fields.required.contains(name) {
                        return Err(A::Error::missing_field(name));
                    }
                }
                Ok(Node::Obj(Obj { fields, values }))
            }
            _ => Err(A::Error::invalid_type(serde::de::Unexpected::Map, &self)),
        }
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        let Shape::Variant(names) = self.shape else {
            return Err(A::Error::invalid_type(serde::de::Unexpected::Enum, &self));
        };
        let (i, variant) = data.variant_seed(VariantName(names))?;
        let name = names.get(i).copied().unwrap_or_default();
        variant
            .unit_variant()
            .map_err(|e| self.track.trigger(&At::Key(self.at, name), e))?;
        Ok(Node::Variant(i))
    }
}

/// A variant's name, read as serde's derived enums read it.
struct VariantName(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for VariantName {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for VariantName {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("variant identifier")
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|n| *n == v)
            .ok_or_else(|| E::unknown_variant(v, self.0))
    }
}
