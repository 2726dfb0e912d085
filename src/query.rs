//! Reading one query parameter out of the request's `:path`.

use std::borrow::Cow;

/// The value of the first query parameter named `name` in `path` (`/p?a=1&b=2`), after
/// percent-decoding name and value. A parameter without `=` (`?preview`) is present with an
/// empty value. `+` is kept as is: Envoy's own query matchers do not read it as a space.
pub fn find<'a>(path: &'a [u8], name: &[u8]) -> Option<Cow<'a, [u8]>> {
    let start = path.iter().position(|&b| b == b'?')?;
    let query = path.get(start.saturating_add(1)..)?;
    let query = match query.iter().position(|&b| b == b'#') {
        Some(end) => query.get(..end)?,
        None => query,
    };
    query.split(|&b| b == b'&').find_map(|pair| {
        let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (pair.get(..eq)?, pair.get(eq.saturating_add(1)..)?),
            None => (pair, &b""[..]),
        };
        if raw_name.is_empty() || percent_decode(raw_name).as_ref() != name {
            return None;
        }
        Some(percent_decode(raw_value))
    })
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as data.
/// Borrows when there is nothing to decode, which is the common case.
pub fn percent_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            if let [h, l, after @ ..] = tail {
                if let (Some(h), Some(l)) = (hex(*h), hex(*l)) {
                    out.push(h << 4 | l);
                    rest = after;
                    continue;
                }
            }
        }
        out.push(b);
        rest = tail;
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(b.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Some(b.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("/p?preview=1", "preview", Some("1")),
            ("/p?a=1&preview=yes&b=2", "preview", Some("yes")),
            ("/p?preview", "preview", Some("")),
            ("/p?preview=", "preview", Some("")),
            ("/p?preview&x=1", "preview", Some("")),
            ("/p?previews=1", "preview", None),
            ("/p?xpreview=1", "preview", None),
            ("/p", "preview", None),
            ("/p?", "preview", None),
            ("/preview", "preview", None),
            ("/p?a=1&&preview=2", "preview", Some("2")),
            // First occurrence wins, as for cookies.
            ("/p?preview=1&preview=2", "preview", Some("1")),
            // Percent-decoding of names and values; invalid escapes stay as data.
            ("/p?pre%76iew=a%20b", "preview", Some("a b")),
            ("/p?preview=%zz%4", "preview", Some("%zz%4")),
            ("/p?preview=a+b", "preview", Some("a+b")),
            ("/p?preview=1#frag", "preview", Some("1")),
            ("/p?x=1#preview=1", "preview", None),
            ("/p?k=a=b", "k", Some("a=b")),
        ];
        for (path, name, want) in cases {
            let got = find(path.as_bytes(), name.as_bytes())
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            assert_eq!(got.as_deref(), *want, "path {path:?} name {name:?}");
        }
    }

    #[test]
    fn decoding_borrows_when_clean() {
        assert!(matches!(percent_decode(b"abc"), Cow::Borrowed(_)));
        assert_eq!(percent_decode(b"%41%62").as_ref(), b"Ab");
        assert_eq!(percent_decode(b"%ff").as_ref(), b"\xff");
        assert_eq!(percent_decode(b"%").as_ref(), b"%");
    }
}
