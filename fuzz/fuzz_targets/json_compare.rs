//! The comparison of a primary's and a canary's bodies, JSON and bytes.
//!
//! Input: `IGNORE \0 PRIMARY \0 CANARY`. IGNORE holds `compare.ignore` pointers, one per line
//! (invalid ones are left out, as the config refuses them); a missing CANARY is the PRIMARY
//! again. JSON never holds a raw NUL byte, so the split never cuts a document.
//!
//! Beyond not panicking, what a comparison must mean: a body matches itself and any other
//! formatting of itself; the verdict does not depend on which side is which; the difference
//! reported is one `ignore` does not cover, and ignoring it moves on to another; every
//! difference listed (`all_differences`) starts with that first one and stays within its bound.
//!
//! And a differential oracle: `body_differences`, which reads both bodies side by side, must
//! answer exactly as `tree_differences`, the tree comparison it replaces, for the two bodies,
//! the other way round, and for the primary beside near copies of itself (one byte changed,
//! re-serialized with sorted keys), which keep most of the shape the side-by-side reading
//! follows.

#![no_main]

use libfuzzer_sys::fuzz_target;
use progressive_delivery::compare::{
    self, Answer, Body, BodyCapture, BodyMode, CompareSpec, Outcome,
};
use progressive_delivery::json_diff::{
    all_differences, body_differences, first_difference, tree_differences, IgnorePattern,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let ignore_text = parts.next().unwrap_or_default();
    let primary = parts.next().unwrap_or_default();
    let canary = parts.next().unwrap_or(primary);
    let ignore: Vec<IgnorePattern> = String::from_utf8_lossy(ignore_text)
        .lines()
        .filter_map(|p| IgnorePattern::parse(p).ok())
        .collect();

    let mut flipped = primary.to_vec();
    if let Some(b) = flipped.get_mut(canary.len() % primary.len().max(1)) {
        *b ^= 1;
    }
    let sorted = serde_json::from_slice::<Value>(primary)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok());
    let mut pairs = vec![(primary, canary), (canary, primary), (primary, &flipped[..])];
    if let Some(sorted) = &sorted {
        pairs.push((primary, sorted));
    }
    for (a, b) in pairs {
        for max in [0, 1, 2, 32] {
            assert_eq!(
                body_differences(a, b, &ignore, max),
                tree_differences(a, b, &ignore, max),
                "side by side and as trees differ, max {max}"
            );
        }
    }

    let json = spec(BodyMode::Json, ignore.clone(), 256 * 1024);
    for body in [primary, canary] {
        assert_eq!(
            verdict(&json, body, body, 7),
            Outcome::Match,
            "a body differs from itself"
        );
    }
    let forward = verdict(&json, primary, canary, 7);
    let backward = verdict(&json, canary, primary, 5);
    assert_eq!(
        forward, backward,
        "the verdict depends on which side is the primary"
    );

    let parsed = (
        serde_json::from_slice::<Value>(primary),
        serde_json::from_slice::<Value>(canary),
    );
    if let Ok(p) = &parsed.0 {
        assert_eq!(first_difference(p, p, &[]), None);
        // Whitespace, key order and escapes are formatting, not content.
        if let Ok(pretty) = serde_json::to_vec_pretty(p) {
            assert_eq!(
                verdict(&json, primary, &pretty, 3),
                Outcome::Match,
                "reformatted: {pretty:?}"
            );
        }
    }
    if let (Ok(p), Ok(c)) = &parsed {
        let d = first_difference(p, c, &ignore);
        let back = first_difference(c, p, &ignore);
        assert_eq!(
            d.as_ref().map(|d| (&d.pointer, &d.primary, &d.canary)),
            back.as_ref().map(|d| (&d.pointer, &d.canary, &d.primary)),
            "the first difference depends on which side is the primary"
        );
        assert_eq!(forward == Outcome::Match, d.is_none());
        for max in [0, 1, 3, 64] {
            let all = all_differences(p, c, &ignore, max);
            assert!(all.differences.len() <= max, "{} over {max}", all.differences.len());
            if max > 0 {
                assert_eq!(
                    all.differences.first().map(|e| &e.difference),
                    d.as_ref(),
                    "all_differences starts elsewhere than first_difference"
                );
            }
            // Cut only when full; with no room at all, cut exactly when there is a difference.
            assert!(!all.cut || all.differences.len() == max, "cut below the bound");
            if max == 0 {
                assert_eq!(all.cut, d.is_some(), "cut with no room");
            }
        }
        if let Some(d) = d {
            for rendered in [&d.primary, &d.canary] {
                // 80 bytes, then '…' (3 bytes) when cut.
                assert!(rendered.len() <= 83, "{rendered:?} is not cut");
            }
            // The root has no pattern of its own ("/" is the key "").
            if d.pointer != "/" {
                let pattern = IgnorePattern::parse(&d.pointer).unwrap_or_else(|e| {
                    panic!("reported pointer {:?} does not parse: {e}", d.pointer)
                });
                let mut more = ignore.clone();
                more.push(pattern);
                let next = first_difference(p, c, &more);
                assert!(
                    next.as_ref().is_none_or(|n| n.pointer != d.pointer),
                    "ignoring {} does not ignore it",
                    d.pointer
                );
            }
        }
    }

    let bytes = spec(BodyMode::Bytes, Vec::new(), 256 * 1024);
    let same = primary == canary;
    assert_eq!(verdict(&bytes, primary, canary, 7) == Outcome::Match, same);
    let small = spec(BodyMode::Bytes, Vec::new(), 64);
    let over = primary.len() > 64 || canary.len() > 64;
    let outcome = verdict(&small, primary, canary, 11);
    assert_eq!(outcome == Outcome::Skipped, over, "{outcome:?}");
});

fn spec(body: BodyMode, ignore: Vec<IgnorePattern>, max_body_bytes: usize) -> CompareSpec {
    CompareSpec {
        headers: vec!["content-type".to_string()],
        body,
        ignore,
        protobuf_ignore: Vec::new(),
        max_body_bytes,
        endpoints: Default::default(),
    }
}

/// Both bodies through `BodyCapture` as the host streams them, in chunks of `chunk` bytes
/// (the canary whole), then compared.
fn verdict(spec: &CompareSpec, primary: &[u8], canary: &[u8], chunk: usize) -> Outcome {
    let mut p = BodyCapture::new(spec);
    for piece in primary.chunks(chunk) {
        if p.wants(piece.len()) {
            p.push(piece);
        } else {
            p.skip(piece.len());
        }
    }
    let mut c = BodyCapture::new(spec);
    c.push(canary);
    let (p, c) = (p.finish(), c.finish());
    if spec.body == BodyMode::Bytes && primary == canary {
        assert_eq!(p, c, "chunking changed the captured body");
    }
    if let Body::Kept(kept) = &p {
        assert_eq!(kept, primary);
    }
    let headers = vec![
        (":status".to_string(), b"200".to_vec()),
        ("content-type".to_string(), b"application/json".to_vec()),
    ];
    let a = Answer::from_headers(spec, &headers, p);
    let b = Answer::from_headers(spec, &headers, c);
    compare::compare(spec, &a, &b).outcome
}
