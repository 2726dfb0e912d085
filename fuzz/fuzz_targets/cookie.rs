//! `Cookie` header parsing on any bytes, non-UTF-8 included. The input's first line is the
//! cookie name looked up, every further line one `Cookie` header.
//!
//! `cookie::find` jumps from ';' to ';' eight bytes at a time and matches the name in place;
//! `cookie::pairs` splits every pair the plain way. They must agree on every input: the first
//! pair with that name, across the headers in order, is the answer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use progressive_delivery::cookie;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let name = lines.next().unwrap_or_default();
    let headers: Vec<&[u8]> = lines.collect();

    let found = cookie::find(headers.iter().copied(), name);
    let want = headers
        .iter()
        .find_map(|h| cookie::pairs(h).find(|(n, _)| *n == name).map(|(_, v)| v));
    assert_eq!(found, want, "find and pairs disagree on {name:?}");

    if let Some(v) = found {
        // A value is a piece of one header, never a copy or a stretch across a ';'.
        let inside = headers.iter().any(|h| {
            let range = h.as_ptr_range();
            range.start <= v.as_ptr() && v.as_ptr_range().end <= range.end
        });
        assert!(inside, "value {v:?} is not a slice of a header");
        assert!(!v.contains(&b';'));
    }
    for h in &headers {
        // The first pairs suffice: past them this is quadratic, and slow inputs find less.
        for (n, v) in cookie::pairs(h).take(64) {
            assert!(!n.is_empty() && !n.contains(&b';') && !n.contains(&b'='));
            assert!(!v.contains(&b';'));
            // Every pair a header has is found by its name, unless an earlier pair of that
            // name shadows it: then find returns that one's value.
            let first = cookie::pairs(h).find(|(m, _)| *m == n).map(|(_, v)| v);
            assert_eq!(cookie::find([*h], n), first, "pair {n:?} of {h:?}");
        }
    }
});
