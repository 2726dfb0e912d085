//! The `mirror.compare` section: what of the canary's answer is compared with the primary's.

use serde::Deserialize;
use smart_default::SmartDefault;

use crate::compare::{BodyMode, CompareSpec};
use crate::json_diff::IgnorePattern;

use super::checks::{body_limit, header_list};
use super::error::ConfigErrors;

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
    CompareSpec {
        headers,
        body: raw.body,
        ignore,
        max_body_bytes: raw.max_body_bytes,
    }
}
