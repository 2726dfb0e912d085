//! The `mirror.compare` section: what of the canary's answer is compared with the primary's.

use serde::Deserialize;
use smart_default::SmartDefault;

use crate::compare::{BodyMode, CompareSpec};
use crate::endpoint::Templates;
use crate::json_diff::IgnorePattern;

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
    if raw.body != BodyMode::Json && !raw.ignore.is_empty() {
        errors.add(
            format!("{path}.ignore"),
            "applies only to JSON bodies; set compare.body to \"json\"",
        );
    }
    let ignore = (raw.ignore.iter().enumerate())
        .filter_map(|(i, p)| {
            IgnorePattern::parse(p)
                .map_err(|why| errors.add(format!("{path}.ignore[{i}]"), why))
                .ok()
        })
        .collect();
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
        max_body_bytes: raw.max_body_bytes,
        endpoints,
    }
}
