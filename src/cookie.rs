//! Reading one cookie out of `Cookie` request headers, per RFC 6265 section 5.4 and 4.2.1.
//!
//! Never a regex over the whole header: `type=insider` must not match `subtype=insider` or a
//! value that merely contains it. The parser allocates nothing and never fails: malformed
//! pairs are skipped, so any byte string has a defined outcome.

/// The value of the first cookie named `name` across `headers` (the values of every `Cookie`
/// header, in order). The first occurrence wins, as RFC 6265 section 5.4 orders cookies and
/// as most servers read them. A value in double quotes is returned without the quotes.
pub fn find<'a, I>(headers: I, name: &[u8]) -> Option<&'a [u8]>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    // No pair's name is empty, holds ';' or '=', or starts or ends with a space or tab (see
    // `pairs`), so such a name is never found. Ruling it out here also lets `find_in` match
    // the name in place without crossing a pair's boundaries.
    if name.is_empty()
        || name.iter().any(|&b| b == b';' || b == b'=')
        || trim(name).len() != name.len()
    {
        return None;
    }
    headers.into_iter().find_map(|h| find_in(h, name))
}

/// `find` on one header: the value of the first of `pairs(header)` named `name`, without
/// splitting every pair. Rules look up cookies one by one in headers of several KB, mostly
/// long values, so a pair whose name does not match is skipped by jumping to the next ';'.
fn find_in<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut rest = header;
    loop {
        // A pair is "name = value" with optional blanks; `name` has no '=', ';' or blanks at
        // its ends, so the first '=' of a pair that starts with it is the one after it.
        let piece = trim_start(rest);
        if piece.first() == name.first() {
            if let Some(after) = piece.strip_prefix(name) {
                if let [b'=', value @ ..] = trim_start(after) {
                    let value = value.get(..find_semicolon(value).unwrap_or(value.len()));
                    return value.map(|v| unquote(trim(v)));
                }
            }
        }
        rest = rest.get(find_semicolon(rest)?.saturating_add(1)..)?;
    }
}

/// Position of the first ';' in `s`, eight bytes at a time (SWAR: a byte equal to ';' is a
/// zero byte of `word ^ ";;;;;;;;"`, and `(x - 0x01..) & !x & 0x80..` is non-zero exactly when
/// `x` has a zero byte). Cookie values are long runs without ';' (session tokens, consent
/// strings), and a byte-by-byte search was most of the time spent classifying.
fn find_semicolon(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const SEMICOLONS: u64 = u64::from_ne_bytes([b';'; 8]);
    let mut skipped: usize = 0;
    for chunk in s.chunks_exact(8) {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_ne_bytes(bytes) ^ SEMICOLONS;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            break;
        }
        skipped = skipped.saturating_add(8);
    }
    let tail = s.get(skipped..)?;
    tail.iter()
        .position(|&b| b == b';')
        .map(|i| skipped.saturating_add(i))
}

/// The `name=value` pairs of one `Cookie` header, trimmed, quotes removed. A piece without `=`
/// or with an empty name is not a cookie and is skipped.
pub fn pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|&b| b == b';').filter_map(|piece| {
        let eq = piece.iter().position(|&b| b == b'=')?;
        let (name, rest) = piece.split_at(eq);
        let name = trim(name);
        if name.is_empty() {
            return None;
        }
        let value = trim(rest.get(1..).unwrap_or_default());
        Some((name, unquote(value)))
    })
}

fn trim(s: &[u8]) -> &[u8] {
    let mut s = trim_start(s);
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

fn unquote(s: &[u8]) -> &[u8] {
    match s {
        [b'"', inner @ .., b'"'] => inner,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn lookup(headers: &[&str], name: &str) -> Option<String> {
        find(headers.iter().map(|h| h.as_bytes()), name.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    #[test]
    fn table() {
        let cases: &[(&[&str], &str, Option<&str>)] = &[
            (&["type=insider"], "type", Some("insider")),
            (&["a=1; type=insider; b=2"], "type", Some("insider")),
            (&["a=1;type=insider"], "type", Some("insider")),
            (&["  type  =  insider  ; b=2"], "type", Some("insider")),
            (&["\ttype=insider\t"], "type", Some("insider")),
            // A longer name that ends with the wanted one is a different cookie.
            (&["subtype=insider"], "type", None),
            (&["type2=insider"], "type", None),
            // Names are case-sensitive (RFC 6265 section 5.4 compares them exactly).
            (&["Type=insider"], "type", None),
            // Quoted values lose their quotes; a lone quote is kept as data.
            (&["type=\"insider\""], "type", Some("insider")),
            (&["type=\"insider"], "type", Some("\"insider")),
            (&["type=\"\""], "type", Some("")),
            // Values may contain '='.
            (&["token=a=b=c"], "token", Some("a=b=c")),
            (&["type="], "type", Some("")),
            // Duplicates: the first wins, also across several Cookie headers.
            (&["type=first; type=second"], "type", Some("first")),
            (
                &["a=1", "type=second-header"],
                "type",
                Some("second-header"),
            ),
            (&["type=one", "type=two"], "type", Some("one")),
            // Malformed pairs are skipped, the rest still parse.
            (&["garbage; type=insider"], "type", Some("insider")),
            (&["=novalue; type=insider"], "type", Some("insider")),
            (&[";;; ;type=insider;;"], "type", Some("insider")),
            (&["type"], "type", None),
            (&[""], "type", None),
            (&[], "type", None),
        ];
        for (headers, name, want) in cases {
            assert_eq!(
                lookup(headers, name).as_deref(),
                *want,
                "headers {headers:?} name {name:?}"
            );
        }
    }

    #[test]
    fn non_utf8_bytes_are_data() {
        let header: &[u8] = b"bin=\xff\xfe; type=insider";
        assert_eq!(find([header], b"bin"), Some(&b"\xff\xfe"[..]));
        assert_eq!(find([header], b"type"), Some(&b"insider"[..]));
    }

    #[test]
    fn many_cookies() {
        let mut header = String::new();
        for i in 0..200 {
            header.push_str(&format!("c{i}=v{i}; "));
        }
        header.push_str("uid=last");
        assert_eq!(lookup(&[&header], "c199").as_deref(), Some("v199"));
        assert_eq!(lookup(&[&header], "uid").as_deref(), Some("last"));
        assert_eq!(lookup(&[&header], "c200"), None);
    }

    /// `find` skips from ';' to ';' eight bytes at a time and matches the name in place
    /// instead of splitting every pair; it must still answer exactly what the first of `pairs`
    /// with that name says, on any bytes and for any name, including names no pair can have.
    /// Headers come from a small alphabet so that names, separators, blanks, quotes and a
    /// non-UTF-8 byte meet in every arrangement.
    #[test]
    fn find_agrees_with_pairs() {
        let alphabet = b"ab=; \t\"\xff";
        let names: [&[u8]; 12] = [
            b"a", b"b", b"ab", b"ba", b"aa", b"a b", b"", b"a=", b"a;b", b" a", b"a\t", b"\xff",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let header: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for name in names {
                let want = pairs(&header).find(|(n, _)| *n == name).map(|(_, v)| v);
                assert_eq!(find([header.as_slice()], name), want, "{header:?} {name:?}");
            }
        }
    }

    #[test]
    fn semicolon_at_every_offset() {
        for len in 0..40 {
            let mut s = vec![b'x'; len];
            assert_eq!(find_semicolon(&s), None);
            // Bytes around ';' (0x3b) and with the high bit set must not look like it.
            for filler in [b':', b'<', 0xbb, 0x3a | 0x80, 0xff, 0] {
                s.fill(filler);
                assert_eq!(find_semicolon(&s), None, "{filler:#x} x {len}");
                for at in 0..len {
                    s[at] = b';';
                    assert_eq!(find_semicolon(&s), Some(at), "{filler:#x} at {at} of {len}");
                    if at + 1 < len {
                        s[at + 1] = b';';
                        assert_eq!(find_semicolon(&s), Some(at));
                        s[at + 1] = filler;
                    }
                    s[at] = filler;
                }
            }
        }
    }
}
