//! The plugin configuration: JSON read by serde into raw structs, one per object of the
//! config, then validated and compiled into the immutable form the request path uses.
//!
//! Each section has its module: the raw structs (`#[derive(Deserialize)]`, unknown fields
//! refused, defaults filled in) next to the validation that compiles them. What more than one
//! section checks is in `checks`. Every error names the field path and the bad value, and
//! validation goes on after a problem so a user fixes everything in one round trip.

mod checks;
mod classification;
mod compare;
mod error;
mod mirror;
mod object;

use serde::Deserialize;

use crate::classify::Classification;
use crate::mirror_policy::Mirror;

pub use checks::{check_class_name, MAX_BODY_LIMIT, MAX_CLASS_LEN};
pub use classification::{
    DEFAULT_CLASS, DEFAULT_CLASS_HEADER, DEFAULT_FEATURES_HEADER, REGEX_SIZE_LIMIT,
};
pub use compare::DEFAULT_COMPARE_MAX_BODY_BYTES;
pub use error::{ConfigError, ConfigErrors};
pub use mirror::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT_MS, MAX_IN_FLIGHT,
    MAX_TIMEOUT_MS,
};

use classification::RawClassification;
use mirror::RawMirror;
use object::Object;

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub classification: Classification,
    /// `None` when the config has no `mirror` section: nothing is mirrored.
    pub mirror: Option<Mirror>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    classification: Object<RawClassification>,
    mirror: Option<Object<RawMirror>>,
}

/// Parses and validates a plugin configuration. Empty input is the empty config `{}`,
/// because Envoy passes nothing when `configuration` is left out.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigErrors> {
    let raw = if bytes.iter().all(u8::is_ascii_whitespace) {
        RawConfig::default()
    } else {
        deserialize(bytes).map_err(|e| ConfigErrors(vec![e]))?
    };
    let mut errors = ConfigErrors(Vec::new());
    let classification = classification::compile(raw.classification.0, &mut errors);
    let mirror = raw
        .mirror
        .map(|Object(m)| mirror::compile(m, &classification, &mut errors));
    if errors.is_empty() {
        Ok(Config {
            classification,
            mirror,
        })
    } else {
        Err(errors)
    }
}

fn deserialize(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Object(raw) = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            // Where the text stops being JSON, a field path means little: line and column do.
            ConfigError::new("config", format!("invalid JSON: {inner}"))
        } else if path == "." {
            ConfigError::new("config", inner.to_string())
        } else {
            ConfigError::new(path, inner.to_string())
        }
    })?;
    de.end()
        .map_err(|e| ConfigError::new("config", format!("invalid JSON: {e}")))?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn errors_of(json: &str) -> Vec<String> {
        match parse(json.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    fn rule(r: &str) -> String {
        format!(r#"{{"classification": {{"rules": [{r}]}}}}"#)
    }

    /// Where serde's errors point: the paths `serde_path_to_error` gives, rules of its own
    /// (unknown field: the key; duplicate or missing field: the object; an enum given as an
    /// object: the variant).
    #[test]
    fn json_error_paths() {
        let cases = [
            // A duplicate or missing field is the object's error; an unknown one the key's.
            (r#"{"classification": {"rules": [{"class": "x", "class": "y"}]}}"#,
             "classification.rules[0]: duplicate field `class` at line 1 column 52"),
            (r#"{"classification": {"rules": [{"class": "b", "bucket": {"cookie": "u", "seed": "s"}}]}}"#,
             "classification.rules[0].bucket: missing field `percent` at line 1 column 83"),
            (r#"{"classification": {"rules": [{"class": "b", "cookie": {"exact": "x"}}]}}"#,
             "classification.rules[0].cookie: missing field `name` at line 1 column 69"),
            // Map keys and list indices, escaped keys as decoded.
            (r#"{"classification": {"features": {"stable": ["ok"], "beta": [1]}}}"#,
             "classification.features.beta[0]: invalid type: integer `1`, expected a string at line 1 column 61"),
            (r#"{"cla\u0073sification": {"rules": [{"class": "b", "h\u0065ader": {"name": "x", "present": "yes"}}]}}"#,
             "classification.rules[0].header.present: invalid type: string \"yes\", expected a boolean at line 1 column 95"),
            (r#"{"mirror": {"classes": ["stable", [2]]}}"#,
             "mirror.classes[1]: invalid type: sequence, expected a string at line 1 column 34"),
            // An enum variant given as an object names the variant.
            (r#"{"mirror": {"compare": {"body": {"json": 1}}}}"#,
             "mirror.compare.body.json: invalid type: integer `1`, expected unit at line 1 column 42"),
            (r#"{"mirror": {"compare": {"body": 5}}}"#,
             "config: invalid JSON: expected value at line 1 column 33"),
            (r#"{"mirror": {"max_in_flight": 1.5}}"#,
             "mirror.max_in_flight: invalid type: floating point `1.5`, expected usize at line 1 column 32"),
            (r#"{"mirror": {"timeout_ms": 4294967296}}"#,
             "mirror.timeout_ms: invalid value: integer `4294967296`, expected u32 at line 1 column 36"),
            // The empty key's path is empty, not the document's.
            (r#"{"": 1}"#,
             ": unknown field ``, expected `classification` or `mirror` at line 1 column 3"),
        ];
        for (json, want) in cases {
            assert_eq!(errors_of(json), [want], "{json}");
        }
    }

    #[test]
    fn nulls_and_repeated_keys() {
        // `null` is an absent optional field; of a key given twice in a map the last wins.
        let json = r#"{"classification": {
            "rules": [{"class": "b", "cookie": {"name": "t", "exact": null, "prefix": "a"}}],
            "features": {"b": ["x"], "b": ["y", "z"]}},
            "mirror": {"methods": null, "sample_key": null}}"#;
        let c = parse(json.as_bytes()).unwrap();
        assert_eq!(c.classification.classes[1].features.as_deref(), Some("y,z"));
        assert!(c.mirror.unwrap().sample_key.is_none());
        assert!(parse(br#"{"mirror": null}"#).unwrap().mirror.is_none());
    }

    #[test]
    fn errors_display_as_one_line() {
        let e = parse(rule(r#"{"class": "y"}, {"class": "z"}"#).as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "classification.rules[0]: rule for class \"y\" has no condition; give at least one of header, cookie, query, bucket; \
             classification.rules[1]: rule for class \"z\" has no condition; give at least one of header, cookie, query, bucket"
        );
    }
}
