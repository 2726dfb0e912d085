//! Compiled string matchers, the Istio `StringMatch` / Envoy `StringMatcher` vocabulary:
//! `exact`, `prefix`, `suffix`, `contains`, `regex`, plus `present`.

use regex_lite::Regex;

/// One compiled matcher. Values are bytes: headers may carry any octet, and a non-UTF-8
/// value must have a defined outcome rather than an error.
#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
    Contains(Vec<u8>),
    /// Anchored at both ends (RE2 full-match, as Istio and Envoy match). A non-UTF-8 value
    /// never matches a regex. `required`: bytes every match contains (see
    /// [`required_literal`]); a value without them is rejected before the regex runs.
    Regex {
        re: Regex,
        required: Vec<u8>,
    },
    /// `true`: the value is there (even empty). `false`: it is absent.
    Present(bool),
}

/// A matcher and whether letters compare ASCII case-insensitively.
#[derive(Debug, Clone)]
pub struct Matcher {
    kind: StringMatch,
    ignore_case: bool,
}

impl Matcher {
    /// `ignore_case` folds ASCII letters on both sides when comparing; a regex gets it as
    /// its own `i` flag when `config` compiles it.
    pub fn new(kind: StringMatch, ignore_case: bool) -> Self {
        Matcher { kind, ignore_case }
    }

    pub fn kind(&self) -> &StringMatch {
        &self.kind
    }

    pub fn ignore_case(&self) -> bool {
        self.ignore_case
    }

    /// Whether the matcher holds for a value that may be absent.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        match (&self.kind, value) {
            (StringMatch::Present(want), v) => *want == v.is_some(),
            (_, None) => false,
            (_, Some(v)) => self.matches_value(v),
        }
    }

    /// Whether the matcher holds for a header that may appear several times: `present` looks
    /// at whether any value is there, the others hold when any one value matches.
    pub fn matches_any<'a>(&self, mut values: impl Iterator<Item = &'a [u8]>) -> bool {
        match &self.kind {
            StringMatch::Present(want) => *want == values.next().is_some(),
            _ => values.any(|v| self.matches_value(v)),
        }
    }

    fn matches_value(&self, v: &[u8]) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match &self.kind {
            StringMatch::Exact(p) => eq(v, p),
            StringMatch::Prefix(p) => v.get(..p.len()).is_some_and(|head| eq(head, p)),
            StringMatch::Suffix(p) => v
                .len()
                .checked_sub(p.len())
                .and_then(|start| v.get(start..))
                .is_some_and(|tail| eq(tail, p)),
            StringMatch::Contains(p) => p.is_empty() || v.windows(p.len()).any(|w| eq(w, p)),
            StringMatch::Regex { re, required } => {
                (required.is_empty() || v.windows(required.len()).any(|w| w == required.as_slice()))
                    && std::str::from_utf8(v).is_ok_and(|s| re.is_match(s))
            }
            StringMatch::Present(_) => true,
        }
    }
}

/// The literal every full match of `pattern` contains, when the pattern is the common
/// `.*LITERAL...` form (`.*Firefox/.*`, `.*Chrome/1[0-9]{2}\..*`); empty when that is not
/// certain. regex-lite has no literal prefilter, and running its engine on every user agent
/// was most of the cost of classifying a request.
///
/// Conservative: no literal for case-insensitive patterns, inline flags, alternation
/// anywhere (`.*a|b` needs no `a`), or escapes; a literal character followed by a quantifier
/// that may repeat it zero times (`*`, `?`, `{`, or `+` and another of these) is left out.
pub fn required_literal(pattern: &str, ignore_case: bool) -> Vec<u8> {
    let Some(rest) = pattern.strip_prefix(".*") else {
        return Vec::new();
    };
    if ignore_case || pattern.contains("(?") || pattern.contains('|') {
        return Vec::new();
    }
    let mut literal = Vec::new();
    let bytes = rest.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'*' | b'?' | b'{' => {
                literal.pop();
                break;
            }
            // `+` keeps its character unless another repetition follows: regex-lite reads
            // `d+*` as `(?:d+)*` and `d++*` as `(?:(?:d+)+)*`, which match without a `d`.
            b'+' => {
                let after = bytes.iter().skip(i).find(|&&c| c != b'+');
                if matches!(after, Some(b'*' | b'?' | b'{')) {
                    literal.pop();
                }
                break;
            }
            // A group closed here was opened before the `.*`, and a `?` after it would make
            // everything so far optional (`.*ab)?(` matches ""). `config` refuses patterns that
            // are unbalanced on their own, so this is for callers that do not.
            b')' => return Vec::new(),
            b'\\' | b'.' | b'(' | b'[' | b']' | b'}' | b'^' | b'$' => break,
            b if b.is_ascii_graphic() || b == b' ' => literal.push(b),
            _ => break,
        }
    }
    literal
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn re(p: &str, ignore_case: bool) -> StringMatch {
        let anchored = format!("^(?:{p})$");
        let re = regex_lite::RegexBuilder::new(&anchored)
            .case_insensitive(ignore_case)
            .build()
            .unwrap();
        StringMatch::Regex {
            re,
            required: required_literal(p, ignore_case),
        }
    }

    #[test]
    fn required_literals() {
        let cases = [
            (".*Firefox/.*", false, "Firefox/"),
            (".*Chrome/1[0-9]{2}\\..*", false, "Chrome/1"),
            (".*abc*", false, "ab"),
            (".*abc?d", false, "ab"),
            (".*ab{0,2}", false, "a"),
            (".*ab+c", false, "ab"),
            (".*a b;c=d.*", false, "a b;c=d"),
            (".*\\.x", false, ""),
            (".*Firefox.*", true, ""),
            ("(?i).*Firefox.*", false, ""),
            (".*Firefox|Chrome", false, ""),
            (".*(Firefox|Chrome)/.*", false, ""),
            ("Firefox.*", false, ""),
            (".*", false, ""),
            (".*[ab]c", false, ""),
            // Found by the string_match fuzz target: `^(?:.*ab)?()$` matches "" (the pattern
            // closes the group it is wrapped in; config now refuses such patterns).
            (".*ab)?(", false, ""),
            (".*ab)(", false, ""),
            // Found by the same target: a repetition of a `+` repetition may repeat it zero times.
            (".*d+*", false, ""),
            (".*ab+{0}", false, "a"),
            (".*ab+?c", false, "a"),
            (".*ab++", false, "ab"),
            (".*d++*", false, ""),
            (".*d+++{0}", false, ""),
        ];
        for (pattern, ignore_case, want) in cases {
            assert_eq!(
                String::from_utf8(required_literal(pattern, ignore_case)).unwrap(),
                want,
                "{pattern}"
            );
        }
    }

    #[test]
    fn prefilter_never_changes_an_answer() {
        let patterns = [
            ".*Firefox/.*",
            ".*Chrome/1[0-9]{2}\\..*",
            ".*abc*",
            ".*abc?d",
            ".*ab{0,2}",
            ".*ab+c",
            ".*a b;c=d.*",
            ".*x\ny",
            ".*ab)?(",
            ".*d+*",
            ".*d++*",
        ];
        let values: Vec<&[u8]> = vec![
            b"",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            b"Mozilla/5.0 Chrome/120.0.1 Safari",
            b"Chrome/99.0",
            b"xxab",
            b"xxabc",
            b"xxabccc",
            b"abd",
            b"abcd",
            b"a",
            b"abb",
            b"abbbc",
            b"ac",
            b"__a b;c=d__",
            b"a b;c=",
            b"x\ny",
            b"Firefox/\xff",
        ];
        for p in patterns {
            let with = re(p, false);
            let anchored = format!("^(?:{p})$");
            let bare = StringMatch::Regex {
                re: regex_lite::Regex::new(&anchored).unwrap(),
                required: Vec::new(),
            };
            for v in &values {
                assert_eq!(
                    Matcher::new(with.clone(), false).matches(Some(v)),
                    Matcher::new(bare.clone(), false).matches(Some(v)),
                    "{p} on {:?}",
                    String::from_utf8_lossy(v)
                );
            }
        }
    }

    #[test]
    fn table() {
        use StringMatch::*;
        let b = |s: &str| s.as_bytes().to_vec();
        let cases: Vec<(StringMatch, bool, Option<&[u8]>, bool)> = vec![
            (Exact(b("true")), false, Some(b"true"), true),
            (Exact(b("true")), false, Some(b"True"), false),
            (Exact(b("true")), true, Some(b"TRUE"), true),
            (Exact(b("true")), false, Some(b"true "), false),
            (Exact(b("true")), false, None, false),
            (Exact(b("")), false, Some(b""), true),
            (Prefix(b("v2")), false, Some(b"v2.1"), true),
            (Prefix(b("v2")), false, Some(b"v"), false),
            (Prefix(b("V2")), true, Some(b"v2.1"), true),
            (
                Suffix(b(".example.com")),
                false,
                Some(b"a.example.com"),
                true,
            ),
            (
                Suffix(b(".example.com")),
                false,
                Some(b"example.com"),
                false,
            ),
            (
                Suffix(b(".EXAMPLE.com")),
                true,
                Some(b"a.example.COM"),
                true,
            ),
            (
                Contains(b("Firefox")),
                false,
                Some(b"Mozilla Firefox/1"),
                true,
            ),
            (
                Contains(b("Firefox")),
                false,
                Some(b"Mozilla firefox/1"),
                false,
            ),
            (
                Contains(b("Firefox")),
                true,
                Some(b"Mozilla FIREFOX/1"),
                true,
            ),
            (Contains(b("Firefox")), false, Some(b"Fire"), false),
            (Contains(b("")), false, Some(b""), true),
            (
                re(".*Firefox.*", false),
                false,
                Some(b"Mozilla Firefox/1"),
                true,
            ),
            // Full match: a regex that would only match part of the value does not hold.
            (
                re("Firefox", false),
                false,
                Some(b"Mozilla Firefox/1"),
                false,
            ),
            (re("a|b", false), false, Some(b"ab"), false),
            (re("a|b", false), false, Some(b"b"), true),
            (re("firefox", true), true, Some(b"FireFox"), true),
            (re(".*", false), false, Some(b"\xff"), false),
            (re(".*", false), false, None, false),
            (Present(true), false, Some(b""), true),
            (Present(true), false, None, false),
            (Present(false), false, None, true),
            (Present(false), false, Some(b"x"), false),
            (Exact(b("\u{e9}")), false, Some("\u{e9}".as_bytes()), true),
            (Exact(b("a")), false, Some(b"\xff"), false),
        ];
        for (i, (kind, ignore_case, value, want)) in cases.into_iter().enumerate() {
            let m = Matcher::new(kind, ignore_case);
            assert_eq!(m.matches(value), want, "case {i}: {m:?} on {value:?}");
        }
    }

    #[test]
    fn several_values() {
        let m = Matcher::new(StringMatch::Exact(b"beta".to_vec()), false);
        let vals: [&[u8]; 2] = [b"alpha", b"beta"];
        assert!(m.matches_any(vals.iter().copied()));
        assert!(!m.matches_any(std::iter::empty()));
        let absent = Matcher::new(StringMatch::Present(false), false);
        assert!(absent.matches_any(std::iter::empty()));
        assert!(!absent.matches_any(vals.iter().copied()));
    }
}
