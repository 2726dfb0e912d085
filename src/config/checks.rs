//! The checks more than one section makes: names of headers, cookies and classes, body
//! limits, percentages, and the bucket key. Each records what is wrong at the path it is
//! given and hands back the value in the form the request path uses.

use serde::Deserialize;

use crate::http_syntax::{is_cookie_name, is_header_name};
use crate::request::BucketKey;

use super::error::ConfigErrors;

/// Longest class name: it becomes a header value and a metric label.
pub const MAX_CLASS_LEN: usize = 64;
/// Ceiling of every body limit: each pending mirror may hold this much per worker.
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Headers the filter must not overwrite with a class or features: the request would break.
const RESERVED_OUTPUT_HEADERS: [&str; 12] = [
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) const TOKEN_CHARS: &str = "letters, digits and !#$%&'*+-.^_`|~ only";

pub(super) fn bad_header_name(name: &str) -> String {
    format!("{name:?} is not a valid HTTP header name ({TOKEN_CHARS})")
}

pub(super) fn bad_cookie_name(name: &str) -> String {
    format!("{name:?} is not a valid cookie name (RFC 6265 token: {TOKEN_CHARS})")
}

/// An Envoy cluster the filter sends copies to; `of` says whose it is, for the hint.
pub(super) fn cluster_name(path: &str, name: &str, of: &str, errors: &mut ConfigErrors) -> bool {
    let ok = !name.is_empty() && !name.bytes().any(|b| b.is_ascii_control());
    if !ok {
        errors.add(
            path,
            format!(
                "{name:?} is not a cluster name; name the Envoy cluster of {of} (in Istio: outbound|PORT||HOST)"
            ),
        );
    }
    ok
}

/// A request header name, lowercased.
pub(super) fn header_name(path: &str, name: &str, errors: &mut ConfigErrors) -> String {
    if !is_header_name(name) {
        errors.add(path, bad_header_name(name));
    }
    name.to_ascii_lowercase()
}

/// A cookie name, as written: cookie names are case-sensitive.
pub(super) fn cookie_name(path: &str, name: String, errors: &mut ConfigErrors) -> String {
    if !is_cookie_name(&name) {
        errors.add(path, bad_cookie_name(&name));
    }
    name
}

/// A header the filter writes on the request, lowercased.
pub(super) fn output_header(path: &str, name: &str, errors: &mut ConfigErrors) -> String {
    let lower = name.to_ascii_lowercase();
    if !is_header_name(name) {
        errors.add(path, bad_header_name(name));
    } else if RESERVED_OUTPUT_HEADERS.contains(&lower.as_str()) {
        errors.add(
            path,
            format!("{name:?} would overwrite a header the request needs; use a header of your own such as x-user-class"),
        );
    }
    lower
}

/// Header names, lowercased; pseudo-headers and duplicates refused.
pub(super) fn header_list(path: &str, names: &[String], errors: &mut ConfigErrors) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let lower = name.to_ascii_lowercase();
        if !is_header_name(name) {
            errors.add(format!("{path}[{i}]"), bad_header_name(name));
        } else if out.contains(&lower) {
            errors.add(format!("{path}[{i}]"), format!("{name:?} is listed twice"));
        } else {
            out.push(lower);
        }
    }
    out
}

/// A class is a header value, a metric label and part of a metric name: keep it plain.
pub fn check_class_name(name: &str) -> Result<(), String> {
    let hint = format!(
        "a class is 1 to {MAX_CLASS_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit"
    );
    if name.is_empty() {
        return Err(format!("\"\" is empty; {hint}"));
    }
    let plain = name.len() <= MAX_CLASS_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid class name; {hint}"))
    }
}

/// A section naming a class no rule produces.
pub(super) fn unknown_class(name: &str) -> String {
    format!("no rule or default_class produces class {name:?}")
}

pub(super) fn body_limit(path: &str, value: usize, errors: &mut ConfigErrors) {
    if value > MAX_BODY_LIMIT {
        errors.add(
            path,
            format!("{value} is over the ceiling of {MAX_BODY_LIMIT} bytes (16 MiB)"),
        );
    }
}

/// `percent` (0 to 100, at most two decimals) as basis points, 0 when it is not one.
pub(super) fn basis_points(path: &str, percent: f64, errors: &mut ConfigErrors) -> u32 {
    percent_to_basis_points(percent)
        .map_err(|why| errors.add(path, why))
        .unwrap_or_default()
}

fn percent_to_basis_points(percent: f64) -> Result<u32, String> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(format!("{percent} is not between 0 and 100"));
    }
    let scaled = percent * 100.0;
    let rounded = scaled.round();
    // JSON numbers like 0.29 are not exact in binary; anything closer than this to a whole
    // number of basis points was written with two decimals.
    if (scaled - rounded).abs() > 1e-6 {
        return Err(format!(
            "{percent} has more than two decimals (the finest step is 0.01)"
        ));
    }
    // In 0..=10000 after the range check above.
    Ok(rounded as u32)
}

/// Where a bucket reads the user's id: exactly one of a cookie and a header. It is the
/// `mirror.sample_key` object, and the same two fields of a rule's `bucket`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBucketKey {
    pub cookie: Option<String>,
    pub header: Option<String>,
}

/// The key of the bucket at `path`; `None` when it names neither or both.
pub(super) fn bucket_key(
    path: &str,
    raw: RawBucketKey,
    errors: &mut ConfigErrors,
) -> Option<BucketKey> {
    match (raw.cookie, raw.header) {
        (Some(cookie), None) => Some(BucketKey::Cookie(cookie_name(
            &format!("{path}.cookie"),
            cookie,
            errors,
        ))),
        (None, Some(header)) => Some(BucketKey::Header(header_name(
            &format!("{path}.header"),
            &header,
            errors,
        ))),
        (Some(_), Some(_)) => {
            errors.add(
                path,
                "sets both cookie and header; give exactly one of them as the key",
            );
            None
        }
        (None, None) => {
            errors.add(path, "has no key; give exactly one of cookie, header");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn percent_parsing() {
        let cases: &[(f64, Result<u32, &str>)] = &[
            (0.0, Ok(0)),
            (5.0, Ok(500)),
            (0.29, Ok(29)),
            (12.34, Ok(1234)),
            (33.33, Ok(3333)),
            (99.99, Ok(9999)),
            (100.0, Ok(10_000)),
            (120.0, Err("120 is not between 0 and 100")),
            (-1.0, Err("-1 is not between 0 and 100")),
            (
                5.125,
                Err("5.125 has more than two decimals (the finest step is 0.01)"),
            ),
            (f64::NAN, Err("NaN is not between 0 and 100")),
        ];
        for (percent, want) in cases {
            assert_eq!(
                percent_to_basis_points(*percent),
                want.map_err(str::to_string),
                "{percent}"
            );
        }
    }
}
