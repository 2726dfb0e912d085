//! The classifier on arbitrary header maps, under each of the realistic configs.
//!
//! Input (see `src/lib.rs`): control line `CONFIG [NEW_ID]`, CONFIG an index into
//! `CONFIGS`, NEW_ID the id a first-time visitor is given (none when absent: the host's random
//! source failed); then one header per line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use progressive_delivery::classify::Source;
use progressive_delivery::cookie;
use progressive_delivery_fuzz::{configs, Input};

fuzz_target!(|data: &[u8]| {
    let input = Input::decode(data);
    let cl = &input.pick(0, configs()).classification;
    let new_id = input.text(1);
    let headers = &input.headers;

    let out = cl.classify(headers, || new_id.clone());
    assert!(out.class < cl.classes.len());
    assert_eq!(
        out,
        cl.classify(headers, || new_id.clone()),
        "not deterministic"
    );

    let sent: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| *n == cl.header)
        .map(|(_, v)| v.as_slice())
        .collect();
    let known = |v: &[u8]| cl.classes.iter().position(|c| c.name.as_bytes() == v);
    // Trusted only as exactly one header naming a known class.
    let trusted = match sent.as_slice() {
        [one] if cl.trust_incoming_header => known(one),
        _ => None,
    };
    match out.source {
        Source::Incoming => {
            assert_eq!(Some(out.class), trusted);
            assert!(out.assigned.is_empty());
        }
        Source::Rule(i) => {
            assert_eq!(trusted, None);
            assert_eq!(cl.rules[i].class, out.class);
        }
        Source::Default => {
            assert_eq!(trusted, None);
            assert_eq!(out.class, cl.default_class);
        }
    }

    if out.source != Source::Incoming {
        // A cookie is assigned exactly when the visitor has none (or an empty one) and the
        // host gave an id.
        let cookies = || {
            headers
                .iter()
                .filter(|(n, _)| n == "cookie")
                .map(|(_, v)| v.as_slice())
        };
        let want: Vec<(String, String)> = match &new_id {
            None => Vec::new(),
            Some(id) => cl
                .assign_cookies
                .iter()
                .filter(|name| {
                    cookie::find(cookies(), name.as_bytes()).is_none_or(<[u8]>::is_empty)
                })
                .map(|name| (name.clone(), id.clone()))
                .collect(),
        };
        assert_eq!(out.assigned, want);

        // Whatever the client put in the class header cannot change an untrusted
        // classification: not by naming a class, not through a rule that reads that header.
        let without: Vec<(String, Vec<u8>)> = headers
            .iter()
            .filter(|(n, _)| *n != cl.header)
            .cloned()
            .collect();
        assert_eq!(
            out,
            cl.classify(&without, || new_id.clone()),
            "the class header leaked in"
        );
    }
});
