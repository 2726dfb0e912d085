//! The mirror decision and the copy's headers, on arbitrary requests, as the host runs them:
//! classify, decide, and for a candidate build the copy.
//!
//! Input (see `src/lib.rs`): control line `CONFIG [DRAW [NEW_ID]]`: CONFIG picks one of the
//! configs with a `mirror` section, DRAW is the random bucket the host draws (absent or not a
//! number: the host has no randomness), NEW_ID the id a first-time visitor gets; then one
//! header per line (`:method`, `:path`, method-override headers, `content-length`, cookies...).
//!
//! The decision is checked against the rules written out again from the README, the
//! idempotency rule above all: a copy runs a second time on the canary, so nothing that is not
//! known to be safe to run twice may be mirrored, whatever case, list or repetition the
//! method headers come in.

#![no_main]

use libfuzzer_sys::fuzz_target;
use progressive_delivery::config::Config;
use progressive_delivery::mirror_policy::{Decision, Method, Mirror};
use progressive_delivery_fuzz::{configs, Input};

/// Hop-by-hop headers and the ones Envoy sets afresh on the copy (README, "Mirroring").
/// Written out again from the README, not imported: the oracle must not share the list it checks.
const NOT_COPIED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

/// Headers that tunnel another method (README, "Mirroring"), written out again for the same
/// reason: an override header the filter forgot must show up here as a copied POST.
const OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The method a token names (RFC 9110: case-sensitive), read by the oracle itself rather
/// than by the parser it checks.
fn method(token: &[u8]) -> Option<Method> {
    const NAMES: [(&[u8], Method); 9] = [
        (b"GET", Method::Get),
        (b"HEAD", Method::Head),
        (b"OPTIONS", Method::Options),
        (b"TRACE", Method::Trace),
        (b"PUT", Method::Put),
        (b"DELETE", Method::Delete),
        (b"POST", Method::Post),
        (b"PATCH", Method::Patch),
        (b"CONNECT", Method::Connect),
    ];
    NAMES.iter().find(|(name, _)| *name == token).map(|(_, m)| *m)
}

fn mirroring() -> &'static [&'static Config] {
    static WITH_MIRROR: std::sync::OnceLock<Vec<&'static Config>> = std::sync::OnceLock::new();
    WITH_MIRROR.get_or_init(|| configs().iter().filter(|c| c.mirror.is_some()).collect())
}

fuzz_target!(|data: &[u8]| {
    let input = Input::decode(data);
    let config = *input.pick(0, mirroring());
    let Some(m) = &config.mirror else { return };
    let cl = &config.classification;
    let draw = input.number(1).map(|d| (d % 10_000) as u32);
    let new_id = input.text(2);
    let headers = &input.headers;

    let out = cl.classify(headers, || new_id.clone());
    let got = m.decide(headers, out.class, &out.assigned, || draw);
    let want = expected(m, headers, out.class);
    match (got, want) {
        // Sampling is the one step not written out again: it hashes the key (see bucket.rs).
        // It comes before the body limit.
        (Err(Decision::NotSampled), Ok(()) | Err(Decision::BodyTooLarge)) => {
            assert!(m.basis_points < 10_000)
        }
        (Ok(()), Ok(())) => assert!(m.basis_points > 0),
        (got, want) => assert_eq!(got, want),
    }
    if got.is_err() {
        return;
    }

    let class = &cl.classes[out.class];
    let class_headers = [
        (cl.header.as_str(), Some(class.name.as_bytes())),
        (
            cl.features_header.as_str(),
            class.features.as_deref().map(str::as_bytes),
        ),
    ];
    let copy = match m.copy_headers(headers.clone(), &class_headers) {
        Ok(copy) => copy
            .into_iter()
            .map(|(n, v)| (n, v.into_bytes()))
            .collect::<Vec<_>>(),
        Err(decision) => {
            // Only a header the copy would carry as the client sent it can be the reason.
            assert_eq!(decision, Decision::HeaderNotUtf8);
            assert!(
                kept(m, headers, &class_headers)
                    .iter()
                    .any(|(_, v)| std::str::from_utf8(v).is_err()),
                "refused a copy whose headers are all UTF-8"
            );
            return;
        }
    };
    check_copy(m, headers, &class_headers, &copy);
    // The canary's own filter must see the copy as a copy, or a shared Envoy mirrors forever.
    assert_eq!(
        m.decide(&copy, out.class, &[], || Some(0)),
        Err(Decision::IsMirror)
    );
});

fn values<'a>(headers: &'a [(String, Vec<u8>)], name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// The decision the README describes, without sampling.
fn expected(m: &Mirror, headers: &[(String, Vec<u8>)], class: usize) -> Result<(), Decision> {
    if values(headers, &m.marker_header).next().is_some() {
        return Err(Decision::IsMirror);
    }
    let keyed = m
        .idempotency_key_header
        .as_deref()
        .is_some_and(|k| values(headers, k).any(|v| v.iter().any(|b| !b.is_ascii_whitespace())));
    // POST and PATCH only with an idempotency key; the rest only as configured.
    let allowed = |method: Option<Method>| match method {
        Some(Method::Post | Method::Patch) => keyed,
        Some(other) => m.methods.contains(&other),
        None => false,
    };
    let request_method = values(headers, ":method").next().unwrap_or_default();
    // Override values compare case-insensitively: frameworks accept `post`.
    let overrides_allowed = OVERRIDE_HEADERS.iter().all(|name| {
        values(headers, name).all(|v| {
            v.split(|&b| b == b',')
                .all(|token| allowed(method(&token.trim_ascii().to_ascii_uppercase())))
        })
    });
    let upgrade = values(headers, "upgrade").next().is_some()
        || values(headers, ":protocol").next().is_some();
    if upgrade || !allowed(method(request_method)) || !overrides_allowed {
        return Err(Decision::NotIdempotent);
    }
    let path = values(headers, ":path").next().unwrap_or_default();
    let path = path
        .split(|&b| b == b'?' || b == b'#')
        .next()
        .unwrap_or_default();
    let under = |prefixes: &[String]| prefixes.iter().any(|p| path.starts_with(p.as_bytes()));
    if !(m.include_paths.is_empty() || under(&m.include_paths)) || under(&m.exclude_paths) {
        return Err(Decision::PathExcluded);
    }
    if m.classes.as_ref().is_some_and(|c| !c.contains(&class)) {
        return Err(Decision::ClassExcluded);
    }
    if m.basis_points == 0 {
        return Err(Decision::NotSampled);
    }
    let declared = values(headers, "content-length")
        .next()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > m.max_body_bytes as u64) {
        return Err(Decision::BodyTooLarge);
    }
    Ok(())
}

/// The request's own headers the copy carries, in order, minus the dropped ones and the ones
/// the filter sets, with the authority suffixed.
fn kept(
    m: &Mirror,
    headers: &[(String, Vec<u8>)],
    class_headers: &[(&str, Option<&[u8]>)],
) -> Vec<(String, Vec<u8>)> {
    let listed_in_connection: Vec<Vec<u8>> = values(headers, "connection")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| t.trim_ascii().to_ascii_lowercase())
        .collect();
    let added =
        |name: &str| name == m.marker_header || class_headers.iter().any(|(n, _)| *n == name);
    let dropped = |name: &str| {
        NOT_COPIED.contains(&name)
            || m.remove_headers.iter().any(|r| r == name)
            || listed_in_connection.iter().any(|t| t == name.as_bytes())
    };
    headers
        .iter()
        .filter(|(n, _)| !dropped(n) && !added(n))
        .map(|(n, v)| {
            let v = if n == ":authority" {
                m.shadow_authority(v)
            } else {
                v.clone()
            };
            (n.clone(), v)
        })
        .collect()
}

fn check_copy(
    m: &Mirror,
    headers: &[(String, Vec<u8>)],
    class_headers: &[(&str, Option<&[u8]>)],
    copy: &[(String, Vec<u8>)],
) {
    let added =
        |name: &str| name == m.marker_header || class_headers.iter().any(|(n, _)| *n == name);
    let kept = kept(m, headers, class_headers);
    let copied: Vec<(String, Vec<u8>)> = copy.iter().filter(|(n, _)| !added(n)).cloned().collect();
    assert_eq!(copied, kept, "the copy's headers");
    for (name, value) in class_headers {
        let got: Vec<&[u8]> = values(copy, name).collect();
        assert_eq!(
            got,
            value.iter().copied().collect::<Vec<_>>(),
            "{name} on the copy"
        );
    }
    let marker: Vec<&[u8]> = values(copy, &m.marker_header).collect();
    assert_eq!(marker, [b"1"], "the marker");

    for authority in values(headers, ":authority") {
        check_shadow_authority(m, authority);
    }
}

/// The suffix goes on the host, before the port if there is one (`:` and digits after a host
/// without ':', or after a bracketed IPv6 address), and nothing else changes.
fn check_shadow_authority(m: &Mirror, authority: &[u8]) {
    let port_at = authority.iter().rposition(|&b| b == b':').filter(|&i| {
        let (host, port) = (&authority[..i], &authority[i + 1..]);
        !port.is_empty()
            && port.iter().all(u8::is_ascii_digit)
            && (!host.contains(&b':') || host.ends_with(b"]"))
    });
    let (host, port) = authority.split_at(port_at.unwrap_or(authority.len()));
    let want = [host, m.authority_suffix.as_bytes(), port].concat();
    assert_eq!(
        m.shadow_authority(authority),
        want,
        "authority {authority:?}"
    );
}
