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
    headers
        .into_iter()
        .find_map(|h| pairs(h).find(|(n, _)| *n == name).map(|(_, v)| v))
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

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
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
}
