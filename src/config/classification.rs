//! The `classification` section: raw structs as written, and their validation and compile
//! into [`Classification`] (regexes compiled, percentages in basis points, header names
//! lowercased).

use std::collections::BTreeMap;

use regex_lite::RegexBuilder;
use serde::Deserialize;
use smart_default::SmartDefault;

use crate::classify::{Bucket, Class, ClassId, Classification, Condition, Part, Rule};
use crate::http_syntax::{is_header_name, is_safe_header_value, PSEUDO_HEADERS};
use crate::request::BucketKey;
use crate::string_match::{required_literal, Matcher, StringMatch};

use super::checks::{
    self, check_class_name, output_header, unknown_class, RawBucketKey, TOKEN_CHARS,
};
use super::error::ConfigErrors;
use super::object::Object;

pub const DEFAULT_CLASS_HEADER: &str = "x-user-class";
pub const DEFAULT_CLASS: &str = "stable";
pub const DEFAULT_FEATURES_HEADER: &str = "x-features";
/// Compiled size limit of one regex, so a config cannot make a matcher that eats the VM.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

#[derive(Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawClassification {
    #[default(DEFAULT_CLASS_HEADER.into())]
    header: String,
    #[default(DEFAULT_CLASS.into())]
    default_class: String,
    trust_incoming_header: bool,
    rules: Vec<Object<RawRule>>,
    #[default(DEFAULT_FEATURES_HEADER.into())]
    features_header: String,
    /// In class name order, each class once (of a class given twice, the last list).
    features: BTreeMap<String, Vec<String>>,
    #[default(true)]
    reroute: bool,
}

/// A rule: its class and its conditions, each under its own key. A new condition is a field
/// here and its line in [`RawRule::conditions`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    class: String,
    header: Option<Object<RawStringCondition>>,
    cookie: Option<Object<RawStringCondition>>,
    query: Option<Object<RawStringCondition>>,
    bucket: Option<Object<RawBucket>>,
}

enum RawCondition {
    Match(Part, RawStringCondition),
    Bucket(RawBucket),
}

impl RawRule {
    /// Every condition key of a rule, in the order they are checked and messages list
    /// them, with the condition given under it.
    fn conditions(self) -> (String, Vec<(&'static str, Option<RawCondition>)>) {
        let on = |part: Part, c: Option<Object<RawStringCondition>>| {
            (part.key(), c.map(|Object(c)| RawCondition::Match(part, c)))
        };
        let conditions = vec![
            on(Part::Header, self.header),
            on(Part::Cookie, self.cookie),
            on(Part::Query, self.query),
            (
                "bucket",
                self.bucket.map(|Object(b)| RawCondition::Bucket(b)),
            ),
        ];
        (self.class, conditions)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStringCondition {
    name: String,
    exact: Option<String>,
    prefix: Option<String>,
    suffix: Option<String>,
    contains: Option<String>,
    regex: Option<String>,
    present: Option<bool>,
    #[serde(default)]
    ignore_case: bool,
}

/// A matcher as given, before it is compiled.
enum RawMatcher {
    Literal(fn(Vec<u8>) -> StringMatch, String),
    Regex(String),
    Present(bool),
}

impl RawStringCondition {
    /// Every matcher key, in the order messages list them, with the matcher given under it.
    fn matchers(self) -> [(&'static str, Option<RawMatcher>); 6] {
        let literal = |kind: fn(Vec<u8>) -> StringMatch, s: Option<String>| {
            s.map(|s| RawMatcher::Literal(kind, s))
        };
        [
            ("exact", literal(StringMatch::Exact, self.exact)),
            ("prefix", literal(StringMatch::Prefix, self.prefix)),
            ("suffix", literal(StringMatch::Suffix, self.suffix)),
            ("contains", literal(StringMatch::Contains, self.contains)),
            ("regex", self.regex.map(RawMatcher::Regex)),
            ("present", self.present.map(RawMatcher::Present)),
        ]
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucket {
    cookie: Option<String>,
    header: Option<String>,
    percent: f64,
    #[serde(default)]
    seed: String,
    #[serde(default)]
    assign_cookie: bool,
}

pub(super) fn compile(raw: RawClassification, errors: &mut ConfigErrors) -> Classification {
    let header = output_header("classification.header", &raw.header, errors);
    let features_header = output_header(
        "classification.features_header",
        &raw.features_header,
        errors,
    );
    if !header.is_empty() && header == features_header {
        errors.add(
            "classification.features_header",
            format!(
                "{:?} is also classification.header; give them different names",
                raw.features_header
            ),
        );
    }

    let mut classes: Vec<Class> = Vec::new();
    let default_class = intern_class(
        "classification.default_class",
        &raw.default_class,
        &mut classes,
        errors,
    );

    let mut rules = Vec::with_capacity(raw.rules.len());
    let mut assign_cookies: Vec<String> = Vec::new();
    for (i, Object(rule)) in raw.rules.into_iter().enumerate() {
        let path = format!("classification.rules[{i}]");
        if let Some(rule) = compile_rule(&path, rule, &mut classes, &mut assign_cookies, errors) {
            rules.push(rule);
        }
    }

    for (class, flags) in raw.features {
        let path = format!("classification.features.{class}");
        let Some(entry) = classes.iter_mut().find(|c| c.name == class) else {
            errors.add(path, unknown_class(&class));
            continue;
        };
        for (j, flag) in flags.iter().enumerate() {
            if let Err(why) = check_feature(flag, flags.get(..j).unwrap_or_default()) {
                errors.add(format!("{path}[{j}]"), why);
            }
        }
        entry.features = (!flags.is_empty()).then(|| flags.join(","));
    }

    Classification {
        header,
        trust_incoming_header: raw.trust_incoming_header,
        features_header,
        default_class,
        classes,
        rules,
        assign_cookies,
        reroute: raw.reroute,
    }
}

/// The rule, or `None` when anything in it is wrong (each problem recorded).
fn compile_rule(
    path: &str,
    raw: RawRule,
    classes: &mut Vec<Class>,
    assign_cookies: &mut Vec<String>,
    errors: &mut ConfigErrors,
) -> Option<Rule> {
    let (class_name, given) = raw.conditions();
    let class = intern_class(&format!("{path}.class"), &class_name, classes, errors);
    let before = errors.len();
    let mut conditions = Vec::new();
    let mut keys = Vec::with_capacity(given.len());
    for (key, condition) in given {
        keys.push(key);
        let path = format!("{path}.{key}");
        let compiled = match condition {
            None => None,
            Some(RawCondition::Match(part, c)) => compile_match(&path, part, c, errors),
            Some(RawCondition::Bucket(b)) => compile_bucket(&path, b, assign_cookies, errors),
        };
        conditions.extend(compiled);
    }
    if errors.len() > before {
        return None;
    }
    if conditions.is_empty() {
        errors.add(
            path,
            format!(
                "rule for class {class_name:?} has no condition; give at least one of {}",
                keys.join(", ")
            ),
        );
        return None;
    }
    Some(Rule { class, conditions })
}

/// The name a condition on `part` looks up, in the form the request has it.
fn part_name(path: &str, part: Part, name: String, errors: &mut ConfigErrors) -> String {
    match part {
        Part::Header => {
            let lower = name.to_ascii_lowercase();
            if !is_header_name(&name) && !PSEUDO_HEADERS.contains(&lower.as_str()) {
                errors.add(
                    path,
                    format!(
                        "{name:?} is not a valid HTTP header name ({TOKEN_CHARS}, or one of {})",
                        PSEUDO_HEADERS.join(", ")
                    ),
                );
            }
            lower
        }
        Part::Cookie => checks::cookie_name(path, name, errors),
        Part::Query => {
            if name.is_empty() {
                errors.add(path, "is empty; name the query parameter");
            }
            name
        }
    }
}

fn compile_match(
    path: &str,
    part: Part,
    mut raw: RawStringCondition,
    errors: &mut ConfigErrors,
) -> Option<Condition> {
    let before = errors.len();
    let ignore_case = raw.ignore_case;
    let name = part_name(
        &format!("{path}.name"),
        part,
        std::mem::take(&mut raw.name),
        errors,
    );
    let matchers = raw.matchers();
    let kinds = || {
        let keys: Vec<&str> = matchers.iter().map(|(key, _)| *key).collect();
        format!("give exactly one of {}", keys.join(", "))
    };
    let given: Vec<&str> = (matchers.iter())
        .filter_map(|(key, m)| m.is_some().then_some(*key))
        .collect();
    let matcher = match given.as_slice() {
        [] => {
            errors.add(path, format!("has no matcher; {}", kinds()));
            None
        }
        [_] => {
            let m = matchers.into_iter().find_map(|(_, m)| m)?;
            compile_matcher(path, m, ignore_case, errors)
        }
        [first @ .., last] => {
            let first = first.join(", ");
            errors.add(path, format!("sets {first} and {last}; {}", kinds()));
            None
        }
    };
    let matcher = matcher.filter(|_| errors.len() == before)?;
    Some(Condition::Match {
        part,
        name,
        matcher,
    })
}

fn compile_matcher(
    path: &str,
    raw: RawMatcher,
    ignore_case: bool,
    errors: &mut ConfigErrors,
) -> Option<Matcher> {
    let kind = match raw {
        RawMatcher::Literal(kind, s) => kind(s.into_bytes()),
        RawMatcher::Present(present) => StringMatch::Present(present),
        RawMatcher::Regex(p) => {
            let build = |pattern: &str| {
                RegexBuilder::new(pattern)
                    .case_insensitive(ignore_case)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
            };
            // Anchored: Istio and Envoy regex matches are full matches (RE2 FullMatch). The
            // pattern must be valid on its own first: one that closes the group it is wrapped
            // in (`a)|(b`) would escape the anchors and match part of a value, where Envoy
            // refuses it.
            match build(&p).and_then(|_| build(&format!("^(?:{p})$"))) {
                Ok(re) => StringMatch::Regex {
                    re,
                    required: required_literal(&p, ignore_case),
                },
                Err(e) => {
                    let why = e.to_string().replace('\n', " ");
                    errors.add(
                        format!("{path}.regex"),
                        format!("{p:?} is not a valid regex: {why}"),
                    );
                    return None;
                }
            }
        }
    };
    Some(Matcher::new(kind, ignore_case))
}

fn compile_bucket(
    path: &str,
    raw: RawBucket,
    assign_cookies: &mut Vec<String>,
    errors: &mut ConfigErrors,
) -> Option<Condition> {
    let before = errors.len();
    let key_fields = RawBucketKey {
        cookie: raw.cookie,
        header: raw.header,
    };
    let key = checks::bucket_key(path, key_fields, errors);
    if raw.assign_cookie && matches!(key, Some(BucketKey::Header(_))) {
        errors.add(
            format!("{path}.assign_cookie"),
            "true needs a cookie key (bucket.cookie); the filter cannot assign a header",
        );
    }
    let basis_points = checks::basis_points(&format!("{path}.percent"), raw.percent, errors);
    let key = key.filter(|_| errors.len() == before)?;
    if let (true, BucketKey::Cookie(name)) = (raw.assign_cookie, &key) {
        if !assign_cookies.contains(name) {
            assign_cookies.push(name.clone());
        }
    }
    Some(Condition::Bucket(Bucket {
        key,
        seed: raw.seed,
        basis_points,
    }))
}

/// Validates `name` as a class and returns its id, adding it on first mention.
fn intern_class(
    path: &str,
    name: &str,
    classes: &mut Vec<Class>,
    errors: &mut ConfigErrors,
) -> ClassId {
    if let Err(why) = check_class_name(name) {
        errors.add(path, why);
    }
    if let Some(id) = classes.iter().position(|c| c.name == name) {
        return id;
    }
    classes.push(Class {
        name: name.to_string(),
        features: None,
    });
    classes.len().saturating_sub(1)
}

fn check_feature(flag: &str, earlier: &[String]) -> Result<(), String> {
    let ok = !flag.is_empty()
        && is_safe_header_value(flag)
        && !flag
            .bytes()
            .any(|b| matches!(b, b',' | b' ' | b'\t' | b'"' | b';'));
    if !ok {
        return Err(format!(
            "{flag:?} is not a valid feature name (printable ASCII without spaces, ',', ';' or '\"')"
        ));
    }
    if earlier.iter().any(|e| e == flag) {
        return Err(format!("{flag:?} is listed twice"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use crate::classify::Condition;
    use crate::config::parse;
    use crate::request::BucketKey;

    fn errors_of(json: &str) -> Vec<String> {
        match parse(json.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    fn rule(r: &str) -> String {
        format!(r#"{{"classification": {{"rules": [{r}]}}}}"#)
    }

    #[test]
    fn defaults_of_the_empty_config() {
        for json in ["", "  \n", "{}", r#"{"classification": {}}"#] {
            let c = parse(json.as_bytes()).unwrap().classification;
            assert_eq!(c.header, "x-user-class");
            assert_eq!(c.features_header, "x-features");
            assert!(!c.trust_incoming_header);
            assert!(c.rules.is_empty());
            assert_eq!(c.classes.len(), 1);
            assert_eq!(c.class(c.default_class).unwrap().name, "stable");
            assert!(c.assign_cookies.is_empty());
            assert!(c.reroute);
        }
    }

    #[test]
    fn reroute_table() {
        let cases = [
            (r#"{"classification": {}}"#, true),
            (r#"{"classification": {"reroute": true}}"#, true),
            (r#"{"classification": {"reroute": false}}"#, false),
        ];
        for (json, want) in cases {
            assert_eq!(
                parse(json.as_bytes()).unwrap().classification.reroute,
                want,
                "{json}"
            );
        }
    }

    #[test]
    fn compiles_the_documented_example() {
        let json = r#"{
          "classification": {
            "header": "X-User-Class",
            "default_class": "stable",
            "trust_incoming_header": true,
            "rules": [
              {"class": "insider", "cookie": {"name": "type", "exact": "insider"}},
              {"class": "beta",    "header": {"name": "x-beta", "exact": "true"}},
              {"class": "firefox", "header": {"name": "user-agent", "regex": ".*Firefox.*"}},
              {"class": "preview", "query":  {"name": "preview", "present": true}},
              {"class": "cohort",  "bucket": {"cookie": "uid", "percent": 5, "seed": "checkout-v2", "assign_cookie": true}},
              {"class": "beta",    "bucket": {"header": "x-user-id", "percent": 0.5}}
            ],
            "features_header": "x-features",
            "features": {"beta": ["new-checkout", "dark-mode"], "stable": []}
          }
        }"#;
        let c = parse(json.as_bytes()).unwrap().classification;
        assert_eq!(c.header, "x-user-class", "header names are lowercased");
        assert!(c.trust_incoming_header);
        let names: Vec<&str> = c.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["stable", "insider", "beta", "firefox", "preview", "cohort"]
        );
        assert_eq!(c.rules.len(), 6);
        assert_eq!(c.rules[5].class, 2, "a class named twice is one class");
        assert_eq!(
            c.classes[2].features.as_deref(),
            Some("new-checkout,dark-mode")
        );
        assert_eq!(c.classes[0].features, None);
        assert_eq!(c.assign_cookies, ["uid"]);
        match &c.rules[4].conditions[0] {
            Condition::Bucket(b) => {
                assert_eq!(b.basis_points, 500);
                assert_eq!(b.seed, "checkout-v2");
                assert_eq!(b.key, BucketKey::Cookie("uid".into()));
            }
            other => panic!("{other:?}"),
        }
        match &c.rules[5].conditions[0] {
            Condition::Bucket(b) => assert_eq!(b.basis_points, 50),
            other => panic!("{other:?}"),
        }
    }

    /// Every error the validation can give, with its exact text.
    #[test]
    fn error_messages() {
        let matchers = "give exactly one of exact, prefix, suffix, contains, regex, present";
        let header_chars = "letters, digits and !#$%&'*+-.^_`|~ only";
        let class_hint =
            "a class is 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit";
        let cases: Vec<(String, Vec<String>)> = vec![
            // JSON and shape
            (r#"{"classification": {"#.into(), vec![
                "config: invalid JSON: EOF while parsing an object at line 1 column 20".into()]),
            (r#"{"classification": {}} x"#.into(), vec![
                "config: invalid JSON: trailing characters at line 1 column 24".into()]),
            ("[]".into(), vec![
                "config: invalid type: sequence, expected a JSON object at line 1 column 0".into()]),
            (rule(r#"{"class": "b", "cookie": ["type", "insider"]}"#), vec![
                "classification.rules[0].cookie: invalid type: sequence, expected a JSON object at line 1 column 55".into()]),
            (r#"{"classification": [[]]}"#.into(), vec![
                "classification: invalid type: sequence, expected a JSON object at line 1 column 19".into()]),
            (r#"{"clasification": {}}"#.into(), vec![
                "clasification: unknown field `clasification`, expected `classification` or `mirror` at line 1 column 16".into()]),
            (r#"{"classification": {"rules": [{"class": "b", "cookie": {"name": "t", "exat": "x"}}]}}"#.into(), vec![
                "classification.rules[0].cookie.exat: unknown field `exat`, expected one of `name`, `exact`, `prefix`, `suffix`, `contains`, `regex`, `present`, `ignore_case` at line 1 column 75".into()]),
            (r#"{"classification": {"trust_incoming_header": "yes"}}"#.into(), vec![
                "classification.trust_incoming_header: invalid type: string \"yes\", expected a boolean at line 1 column 50".into()]),
            (r#"{"classification": {"reroute": 0}}"#.into(), vec![
                "classification.reroute: invalid type: integer `0`, expected a boolean at line 1 column 32".into()]),
            (rule(r#"{"cookie": {"name": "t", "exact": "x"}}"#), vec![
                "classification.rules[0]: missing field `class` at line 1 column 69".into()]),
            (rule(r#"{"class": "c", "bucket": {"cookie": "uid", "percent": "5"}}"#), vec![
                "classification.rules[0].bucket.percent: invalid type: string \"5\", expected f64 at line 1 column 87".into()]),
            // Rules and conditions
            (rule(r#"{"class": "beta"}"#), vec![
                "classification.rules[0]: rule for class \"beta\" has no condition; give at least one of header, cookie, query, bucket".into()]),
            (rule(r#"{"class": "b", "header": {"name": "x-b"}}"#), vec![
                format!("classification.rules[0].header: has no matcher; {matchers}")]),
            (rule(r#"{"class": "b", "header": {"name": "x-b", "exact": "1", "regex": "1"}}"#), vec![
                format!("classification.rules[0].header: sets exact and regex; {matchers}")]),
            (rule(r#"{"class": "b", "query": {"name": "q", "prefix": "1", "suffix": "1", "present": true}}"#), vec![
                format!("classification.rules[0].query: sets prefix, suffix and present; {matchers}")]),
            (rule(r#"{"class": "f", "header": {"name": "user-agent", "regex": "(Firefox"}}"#), vec![
                "classification.rules[0].header.regex: \"(Firefox\" is not a valid regex: found open group without closing ')'".into()]),
            // Valid only inside the wrapper `^(?:...)$`, which it would escape (found by the
            // string_match fuzz target): as written it matches any value starting with "a".
            (rule(r#"{"class": "f", "header": {"name": "user-agent", "regex": "a)|(b"}}"#), vec![
                "classification.rules[0].header.regex: \"a)|(b\" is not a valid regex: found closing ')' without matching '('".into()]),
            (rule(r#"{"class": "b", "header": {"name": "x b", "present": true}}"#), vec![
                format!("classification.rules[0].header.name: \"x b\" is not a valid HTTP header name ({header_chars}, or one of :authority, :method, :path, :scheme)")]),
            (rule(r#"{"class": "b", "header": {"name": ":status", "present": true}}"#), vec![
                format!("classification.rules[0].header.name: \":status\" is not a valid HTTP header name ({header_chars}, or one of :authority, :method, :path, :scheme)")]),
            (rule(r#"{"class": "b", "cookie": {"name": "a=b", "present": true}}"#), vec![
                format!("classification.rules[0].cookie.name: \"a=b\" is not a valid cookie name (RFC 6265 token: {header_chars})")]),
            (rule(r#"{"class": "b", "query": {"name": "", "present": true}}"#), vec![
                "classification.rules[0].query.name: is empty; name the query parameter".into()]),
            // Buckets
            (rule(r#"{"class": "c", "bucket": {"cookie": "uid", "percent": 120}}"#), vec![
                "classification.rules[0].bucket.percent: 120 is not between 0 and 100".into()]),
            (rule(r#"{"class": "c", "bucket": {"cookie": "uid", "percent": -0.5}}"#), vec![
                "classification.rules[0].bucket.percent: -0.5 is not between 0 and 100".into()]),
            (rule(r#"{"class": "c", "bucket": {"cookie": "uid", "percent": 5.125}}"#), vec![
                "classification.rules[0].bucket.percent: 5.125 has more than two decimals (the finest step is 0.01)".into()]),
            (rule(r#"{"class": "c", "bucket": {"percent": 5}}"#), vec![
                "classification.rules[0].bucket: has no key; give exactly one of cookie, header".into()]),
            (rule(r#"{"class": "c", "bucket": {"cookie": "uid", "header": "x-id", "percent": 5}}"#), vec![
                "classification.rules[0].bucket: sets both cookie and header; give exactly one of them as the key".into()]),
            (rule(r#"{"class": "c", "bucket": {"header": "x-id", "percent": 5, "assign_cookie": true}}"#), vec![
                "classification.rules[0].bucket.assign_cookie: true needs a cookie key (bucket.cookie); the filter cannot assign a header".into()]),
            (rule(r#"{"class": "c", "bucket": {"cookie": "u id", "percent": 5}}"#), vec![
                format!("classification.rules[0].bucket.cookie: \"u id\" is not a valid cookie name (RFC 6265 token: {header_chars})")]),
            (rule(r#"{"class": "c", "bucket": {"header": "x id", "percent": 5}}"#), vec![
                format!("classification.rules[0].bucket.header: \"x id\" is not a valid HTTP header name ({header_chars})")]),
            // Classes
            (rule(r#"{"class": "", "header": {"name": "x", "present": true}}"#), vec![
                format!("classification.rules[0].class: \"\" is empty; {class_hint}")]),
            (rule(r#"{"class": "be ta", "header": {"name": "x", "present": true}}"#), vec![
                format!("classification.rules[0].class: \"be ta\" is not a valid class name; {class_hint}")]),
            (rule(r#"{"class": "-beta", "header": {"name": "x", "present": true}}"#), vec![
                format!("classification.rules[0].class: \"-beta\" is not a valid class name; {class_hint}")]),
            (format!(r#"{{"classification": {{"default_class": "{}"}}}}"#, "a".repeat(65)), vec![
                format!("classification.default_class: \"{}\" is not a valid class name; {class_hint}", "a".repeat(65))]),
            // Output headers
            (r#"{"classification": {"header": "x user class"}}"#.into(), vec![
                format!("classification.header: \"x user class\" is not a valid HTTP header name ({header_chars})")]),
            (r#"{"classification": {"header": ""}}"#.into(), vec![
                format!("classification.header: \"\" is not a valid HTTP header name ({header_chars})")]),
            (r#"{"classification": {"features_header": "Cookie"}}"#.into(), vec![
                "classification.features_header: \"Cookie\" would overwrite a header the request needs; use a header of your own such as x-user-class".into()]),
            (r#"{"classification": {"features_header": "X-User-Class"}}"#.into(), vec![
                "classification.features_header: \"X-User-Class\" is also classification.header; give them different names".into()]),
            // Features
            (r#"{"classification": {"features": {"betta": ["x"]}}}"#.into(), vec![
                "classification.features.betta: no rule or default_class produces class \"betta\"".into()]),
            (r#"{"classification": {"features": {"stable": ["a,b", "ok", "", "ok"]}}}"#.into(), vec![
                "classification.features.stable[0]: \"a,b\" is not a valid feature name (printable ASCII without spaces, ',', ';' or '\"')".into(),
                "classification.features.stable[2]: \"\" is not a valid feature name (printable ASCII without spaces, ',', ';' or '\"')".into(),
                "classification.features.stable[3]: \"ok\" is listed twice".into()]),
            // Several problems are all reported, in document order.
            (r#"{"classification": {"header": "a b", "rules": [
                {"class": "x", "bucket": {"cookie": "uid", "percent": 101}},
                {"class": "y"}]}}"#.into(), vec![
                format!("classification.header: \"a b\" is not a valid HTTP header name ({header_chars})"),
                "classification.rules[0].bucket.percent: 101 is not between 0 and 100".into(),
                "classification.rules[1]: rule for class \"y\" has no condition; give at least one of header, cookie, query, bucket".into()]),
        ];
        let mut failures = Vec::new();
        for (json, want) in cases {
            let got = errors_of(&json);
            if got != want {
                failures.push(format!("config {json}\n  want {want:#?}\n  got  {got:#?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
