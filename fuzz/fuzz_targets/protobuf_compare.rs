//! The schema-less comparison of protobuf messages (`compare.body: protobuf`) and the gRPC
//! framing around them, on any bytes.
//!
//! Input: `IGNORE \0 LEN PRIMARY CANARY`. IGNORE holds `compare.ignore` field-number pointers,
//! one per line (invalid ones are left out, as the config refuses them; every line is also fed
//! to the other gRPC parsers of config and header text). LEN is two bytes, big-endian: the
//! length of PRIMARY (cut to what is there); CANARY is the rest. Each body is read as a gRPC
//! body of length-prefixed messages when it is one, else as one bare message.
//!
//! Beyond not panicking, what a comparison must mean: a body matches itself; the difference
//! does not depend on which side is which; `all_differences` starts where `first_difference`
//! stops and keeps to its bound; the difference reported is one `ignore` does not cover, and
//! ignoring it moves on. Work is bounded by the module's depth and parse budget, which
//! libFuzzer's `-timeout` holds it to.

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use progressive_delivery::grpc::{self, RequestFraming, RequestShape};
use progressive_delivery::protobuf_diff::{all_differences, first_difference, IgnorePattern};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |&b| b == 0);
    let ignore_text = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    let (primary, canary) = match rest {
        [hi, lo, bodies @ ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(bodies.len());
            bodies.split_at(len)
        }
        _ => (rest, rest),
    };

    let lines = String::from_utf8_lossy(ignore_text);
    let ignore: Vec<IgnorePattern> = lines
        .lines()
        .filter_map(|p| IgnorePattern::parse(p).ok())
        .collect();
    for line in lines.lines() {
        let _ = grpc::MethodPattern::parse(line).map(|p| p.matches(primary));
        let _ = grpc::is_grpc_content_type(line.as_bytes());
        let _ = grpc::capped_timeout(Some(line.as_bytes()), 1000);
        let _ = grpc::method_name(line.as_bytes());
    }

    for body in [primary, canary] {
        framing_agrees(body);
    }
    let p = messages(primary);
    let c = messages(canary);

    for side in [&p, &c] {
        assert_eq!(first_difference(side, side, &ignore), None, "a body differs from itself");
        assert_eq!(first_difference(side, side, &[]), None, "a body differs from itself");
    }
    let forward = first_difference(&p, &c, &ignore);
    let backward = first_difference(&c, &p, &ignore);
    assert_eq!(
        forward
            .as_ref()
            .map(|d| (d.message, &d.pointer, &d.primary, &d.canary)),
        backward
            .as_ref()
            .map(|d| (d.message, &d.pointer, &d.canary, &d.primary)),
        "the first difference depends on which side is the primary"
    );
    for max in [0, 1, 3] {
        let all = all_differences(&p, &c, &ignore, max);
        assert!(all.differences.len() <= max);
        assert!(!all.cut || all.differences.len() == max);
        assert_eq!(
            all.differences.first().map(|d| &d.difference),
            if max == 0 { None } else { forward.as_ref() },
            "all_differences does not start with first_difference"
        );
        let back = all_differences(&c, &p, &ignore, max);
        assert_eq!(all.differences.len(), back.differences.len());
        assert_eq!(all.cut, back.cut);
        for (a, b) in all.differences.iter().zip(&back.differences) {
            assert_eq!(a.element, b.element);
            // The element is the pointer with some numbers (the indices) made `*`.
            let pointer = a.difference.pointer.split('/');
            let element = a.element.split('/');
            assert_eq!(pointer.clone().count(), element.clone().count(), "{a:?}");
            assert!(pointer.zip(element).all(|(p, e)| p == e || e == "*"), "{a:?}");
        }
    }
    if let Some(d) = forward {
        for rendered in [&d.primary, &d.canary] {
            // 80 bytes, then '…' (3 bytes) when cut.
            assert!(rendered.len() <= 83, "{rendered:?} is not cut");
        }
        if d.pointer != "/" {
            let pattern = IgnorePattern::parse(&d.pointer).unwrap_or_else(|e| {
                panic!("reported pointer {:?} does not parse: {e}", d.pointer)
            });
            let mut more = ignore.clone();
            more.push(pattern);
            let next = first_difference(&p, &c, &more);
            assert!(
                next.as_ref().is_none_or(|n| n.pointer != d.pointer),
                "ignoring {} does not ignore it",
                d.pointer
            );
        }
    }
});

/// A gRPC body's messages (gzip-decoded when flagged), or the whole body as one message.
fn messages(body: &[u8]) -> Vec<Cow<'_, [u8]>> {
    match grpc::decoded_messages(body, b"gzip", 64 * 1024, 64) {
        Ok(messages) if !body.is_empty() => messages,
        _ => vec![Cow::Borrowed(body)],
    }
}

/// What `RequestFraming` says of a body, fed in chunks, agrees with splitting it whole.
fn framing_agrees(body: &[u8]) {
    let mut framing = RequestFraming::new();
    for chunk in body.chunks(3) {
        framing.push(chunk);
    }
    let frames: Vec<_> = grpc::frames(body).collect();
    let want = match frames.as_slice() {
        [] => RequestShape::Empty,
        [Ok(_)] => RequestShape::Single,
        [Err(_)] => RequestShape::Malformed,
        [Ok(_), _, ..] => RequestShape::Stream,
        [Err(_), _, ..] => panic!("frames went on past an error"),
    };
    assert_eq!(framing.shape(true), want, "{body:?}");
}
