//! Any bytes as the plugin configuration: the parser and validator must answer Ok or a list of
//! config errors, never panic, and whatever they accept must be something the request path can
//! run: every id in range, every name the filter writes into a header a safe header value.
//! An accepted config then classifies and decides a few fixed requests, since a config is also
//! what makes the request path's matchers, so weird-but-valid configs meet real requests here.

#![no_main]

use libfuzzer_sys::fuzz_target;
use progressive_delivery::classify::{Condition, Part, Source};
use progressive_delivery::config::{self, check_class_name, Config};
use progressive_delivery::http_syntax::{is_cookie_name, is_header_name, is_safe_header_value};
use progressive_delivery::mirror_policy::Method;
use progressive_delivery::request::BucketKey;

fuzz_target!(|data: &[u8]| {
    let first = config::parse(data);
    // Same bytes, same answer: nothing in the parse may depend on addresses or hash seeds.
    let again = config::parse(data);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "parse is not deterministic"
    );
    match first {
        Ok(c) => {
            check_compiled(&c);
            run_requests(&c);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an Err with no error in it");
            for e in errors.iter() {
                assert!(
                    !e.message.is_empty(),
                    "an error without a message at {:?}",
                    e.path
                );
            }
        }
    }
    if data.iter().all(u8::is_ascii_whitespace) {
        assert!(
            config::parse(data).is_ok(),
            "blank config is the empty config"
        );
    }
});

fn check_compiled(c: &Config) {
    let cl = &c.classification;
    assert!(!cl.classes.is_empty());
    assert!(cl.default_class < cl.classes.len());
    for (i, class) in cl.classes.iter().enumerate() {
        // A class becomes the class header's value and a metric label.
        assert!(
            check_class_name(&class.name).is_ok(),
            "class {:?}",
            class.name
        );
        assert!(
            cl.classes.iter().skip(i + 1).all(|o| o.name != class.name),
            "class {:?} twice",
            class.name
        );
        if let Some(f) = &class.features {
            assert!(!f.is_empty() && is_safe_header_value(f), "features {f:?}");
        }
    }
    for header in [&cl.header, &cl.features_header] {
        assert!(
            is_header_name(header) && *header == header.to_ascii_lowercase(),
            "{header:?}"
        );
    }
    assert_ne!(cl.header, cl.features_header);
    for rule in &cl.rules {
        assert!(rule.class < cl.classes.len());
        assert!(!rule.conditions.is_empty());
        for cond in &rule.conditions {
            match cond {
                Condition::Match {
                    part: Part::Header,
                    name,
                    ..
                } => {
                    assert_eq!(
                        *name,
                        name.to_ascii_lowercase(),
                        "header rule names are lowercased"
                    )
                }
                Condition::Bucket(b) => {
                    assert!(b.basis_points <= 10_000);
                    if let BucketKey::Header(name) = &b.key {
                        assert_eq!(*name, name.to_ascii_lowercase());
                    }
                }
                Condition::Match {
                    part: Part::Cookie | Part::Query,
                    ..
                } => {}
            }
        }
    }
    // The filter writes these into Set-Cookie.
    for name in &cl.assign_cookies {
        assert!(is_cookie_name(name), "assign cookie {name:?}");
    }
    let Some(m) = &c.mirror else { return };
    assert!(m.basis_points <= 10_000);
    assert!(!m.methods.is_empty());
    for method in &m.methods {
        assert!(Method::IDEMPOTENT.contains(method), "{method:?} configured");
    }
    assert!(
        is_header_name(&m.marker_header) && m.marker_header == m.marker_header.to_ascii_lowercase()
    );
    assert!(m.marker_header != cl.header && m.marker_header != cl.features_header);
    if let Some(classes) = &m.classes {
        assert!(!classes.is_empty());
        for (i, id) in classes.iter().enumerate() {
            assert!(*id < cl.classes.len() && !classes[i + 1..].contains(id));
        }
    }
    for p in m.include_paths.iter().chain(&m.exclude_paths) {
        assert!(p.starts_with('/'), "path prefix {p:?}");
    }
    assert!((1..=60_000).contains(&m.timeout_ms));
    assert!((1..=10_000).contains(&m.max_in_flight));
}

/// A browser's request, a keyed POST, and one with nothing in it.
fn run_requests(c: &Config) {
    let h = |list: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    let requests = [
        h(&[
            (":authority", "shop.example.com:8443"),
            (":path", "/api/items/7?preview&ff=new%20search&v=2.1"),
            (":method", "GET"),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            ),
            ("cookie", "uid=5f3a9c21; type=insider; optin=\"beta\""),
            ("x-user-id", "4410928371"),
            ("x-user-class", "beta"),
            ("x-beta", "true"),
        ]),
        h(&[
            (":authority", "api"),
            (":path", "/api/orders"),
            (":method", "POST"),
            ("idempotency-key", "k-1"),
            ("content-length", "12"),
        ]),
        Vec::new(),
    ];
    let cl = &c.classification;
    for headers in &requests {
        let out = cl.classify(headers, || Some("fuzz-new-id".to_string()));
        assert!(out.class < cl.classes.len());
        if let Source::Rule(i) = out.source {
            assert_eq!(cl.rules[i].class, out.class);
        }
        if let Some(m) = &c.mirror {
            let _ = m.decide(headers, out.class, &out.assigned, || Some(0));
        }
    }
}
