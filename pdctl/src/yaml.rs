//! YAML documents as JSON values, the way Kubernetes and Envoy read YAML: as JSON with another
//! syntax (sigs.k8s.io/yaml converts to JSON first; Envoy converts YAML to a protobuf through
//! JSON as well). Map keys become strings; integers stay integers here, and `struct_json`
//! turns numbers into doubles where the protobuf on the way does.

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Every document of `text`, in order, empty documents as `Null`.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    docs.iter()
        .enumerate()
        .map(|(i, doc)| {
            to_json(doc, &mut String::new())
                .map_err(|e| format!("document {}: {e}", i.saturating_add(1)))
        })
        .collect()
}

fn to_json(y: &Yaml, path: &mut String) -> Result<Value, String> {
    let at = |path: &str| {
        if path.is_empty() {
            ".".to_string()
        } else {
            path.to_string()
        }
    };
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Number(Number::from(*i)),
        Yaml::Real(text) => {
            let f = y
                .as_f64()
                .ok_or_else(|| format!("{}: {text:?} is not a number", at(path)))?;
            Value::Number(Number::from_f64(f).ok_or_else(|| {
                format!(
                    "{}: {text} has no JSON form (Kubernetes and Envoy refuse it)",
                    at(path)
                )
            })?)
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(to_json(item, path)?);
                path.truncate(len);
            }
            Value::Array(out)
        }
        Yaml::Hash(hash) => {
            let mut out = Map::new();
            for (k, v) in hash {
                let key = key_text(k).ok_or_else(|| {
                    format!("{}: a map key that is not a string or a number", at(path))
                })?;
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                let value = to_json(v, path)?;
                path.truncate(len);
                out.insert(key, value);
            }
            Value::Object(out)
        }
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err(format!("{}: a value YAML cannot resolve", at(path)))
        }
    })
}

/// A scalar map key as the text it stands for, as a YAML-to-JSON conversion keys it.
fn key_text(k: &Yaml) -> Option<String> {
    match k {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        Yaml::Null => Some("null".to_string()),
        _ => None,
    }
}

/// The JSON text a `google.protobuf.Struct` holding `v` is written as by protojson, which is
/// what Istio hands the filter for a WasmPlugin's `pluginConfig`: every number is a double,
/// written without a fraction when it is whole (`5` and `5.0` both become `5`), and object
/// keys come out sorted.
pub fn struct_json(v: &Value) -> String {
    let mut out = String::new();
    write_struct_json(v, &mut out);
    out
}

fn write_struct_json(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&v.to_string()),
        Value::Number(n) => out.push_str(&double_text(n.as_f64().unwrap_or(f64::NAN))),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_struct_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // serde_json's map (without `preserve_order`) iterates in byte order of the keys,
            // the order protojson writes a map in.
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_struct_json(item, out);
            }
            out.push('}');
        }
    }
}

/// A double as protojson writes it: plain digits, an exponent only below 1e-6 or from 1e21 up.
/// Rust's shortest round-trip digits are the same value as Go's, which is what the filter reads.
fn double_text(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_json_is_what_protojson_writes() {
        let cases = [
            ("a: 5", r#"{"a":5}"#),
            ("a: 5.0", r#"{"a":5}"#),
            ("a: 1.5", r#"{"a":1.5}"#),
            ("a: -0.25", r#"{"a":-0.25}"#),
            ("a: 4294967296", r#"{"a":4294967296}"#),
            ("a: 100000000000000000000", r#"{"a":100000000000000000000}"#),
            ("a: 1.0e21", r#"{"a":1e21}"#),
            ("a: 0.0000001", r#"{"a":1e-7}"#),
            (
                "b: [1, x, true, null]\na: {d: 2, c: 3}",
                r#"{"a":{"c":3,"d":2},"b":[1,"x",true,null]}"#,
            ),
            ("a: \"quote\\\" and \\u00e9\"", r#"{"a":"quote\" and é"}"#),
            ("1: x\ntrue: y", r#"{"1":"x","true":"y"}"#),
        ];
        for (yaml, want) in cases {
            let docs = documents(yaml).unwrap();
            assert_eq!(struct_json(&docs[0]), want, "{yaml}");
        }
    }

    #[test]
    fn documents_and_their_errors() {
        let docs = documents("a: 1\n---\n---\nb: [2]\n").unwrap();
        assert_eq!(docs.len(), 3, "{docs:?}");
        assert_eq!(docs[2]["b"][0], 2);
        let cases = [
            (
                "a: {b: [1, .inf]}",
                "document 1: a.b[1]: .inf has no JSON form (Kubernetes and Envoy refuse it)",
            ),
            (
                "x: 1\n---\n[1, 2]: x",
                "document 2: .: a map key that is not a string or a number",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(documents(yaml).unwrap_err(), want, "{yaml}");
        }
        assert!(documents("a: [1").is_err());
    }
}
