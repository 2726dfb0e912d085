//! The `mirror.compare` section: what of the canary's answer is compared with the primary's.

use serde::Deserialize;
use smart_default::SmartDefault;

use crate::compare::{BodyMode, CompareSpec};
use crate::endpoint::Templates;
use crate::json_diff::IgnorePattern;
use crate::protobuf_diff;

use super::checks::{body_limit, header_list};
use super::error::ConfigErrors;
use super::object::Object;

pub const DEFAULT_COMPARE_MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCompare {
    headers: Vec<String>,
    #[default(BodyMode::Bytes)]
    body: BodyMode,
    ignore: Vec<String>,
    #[default(DEFAULT_COMPARE_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    endpoints: Vec<Object<RawEndpoint>>,
}

/// One of `compare.endpoints`: a path template and the endpoint label it gives.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    name: String,
    path: String,
}

/// The section found at `path`.
pub(super) fn compile(path: &str, raw: RawCompare, errors: &mut ConfigErrors) -> CompareSpec {
    let headers = header_list(&format!("{path}.headers"), &raw.headers, errors);
    if !matches!(raw.body, BodyMode::Json | BodyMode::Protobuf) && !raw.ignore.is_empty() {
        errors.add(
            format!("{path}.ignore"),
            "applies only to JSON and protobuf bodies; set compare.body to \"json\" or \"protobuf\"",
        );
    }
    // JSON Pointers for `json`, field-number pointers for `protobuf`.
    let mut ignore = Vec::new();
    let mut protobuf_ignore = Vec::new();
    for (i, p) in raw.ignore.iter().enumerate() {
        let parsed = if raw.body == BodyMode::Protobuf {
            protobuf_diff::IgnorePattern::parse(p).map(|p| protobuf_ignore.push(p))
        } else {
            IgnorePattern::parse(p).map(|p| ignore.push(p))
        };
        if let Err(why) = parsed {
            errors.add(format!("{path}.ignore[{i}]"), why);
        }
    }
    body_limit(
        &format!("{path}.max_body_bytes"),
        raw.max_body_bytes,
        errors,
    );
    let endpoints = Templates::compile(
        raw.endpoints
            .iter()
            .map(|Object(e)| (e.name.as_str(), e.path.as_str())),
    )
    .unwrap_or_else(|template_errors| {
        for e in template_errors {
            errors.add(
                format!("{path}.endpoints[{}].{}", e.index, e.field),
                e.message,
            );
        }
        Templates::default()
    });
    CompareSpec {
        headers,
        body: raw.body,
        ignore,
        protobuf_ignore,
        max_body_bytes: raw.max_body_bytes,
        endpoints,
    }
}
