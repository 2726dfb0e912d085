//! Syntax checks from RFC 9110 and RFC 6265 used by config validation.

/// `tchar` of RFC 9110 section 5.6.2: the characters of a header name or cookie name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header field name is a non-empty token (RFC 9110 section 5.1).
pub fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// The pseudo-headers a condition may read. Envoy exposes them in the header map.
pub const PSEUDO_HEADERS: [&str; 4] = [":authority", ":method", ":path", ":scheme"];

/// A cookie name is a token (RFC 6265 section 4.1.1).
pub fn is_cookie_name(s: &str) -> bool {
    is_header_name(s)
}

/// A header value we write must not carry control characters (CR, LF, NUL...), or Envoy
/// would reject the header or, worse, the request.
pub fn is_safe_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn header_names() {
        for (name, ok) in [
            ("x-user-class", true),
            ("X-User-Class", true),
            ("a", true),
            ("", false),
            ("x user", false),
            ("x:user", false),
            (":path", false),
            ("x-ü", false),
            ("x\n", false),
        ] {
            assert_eq!(is_header_name(name), ok, "{name:?}");
        }
    }

    #[test]
    fn header_values() {
        for (value, ok) in [
            ("new-checkout,dark-mode", true),
            ("a\tb", true),
            ("a\r\nb", false),
            ("a\0", false),
            ("é", false),
        ] {
            assert_eq!(is_safe_header_value(value), ok, "{value:?}");
        }
    }
}
