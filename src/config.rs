//! The plugin configuration: JSON read into raw structs (by `config_json`), then validated and
//! compiled into the immutable form the request path uses (regexes compiled, percentages in
//! basis points, header names lowercased).
//!
//! Unknown fields are errors. Every error names the field path and the bad value.

use regex_lite::RegexBuilder;

use crate::bucket;
use crate::classify::{Bucket, BucketKey, Class, ClassId, Classification, Condition, Rule};
use crate::config_error::{ConfigError, ConfigErrors};
use crate::config_json::{self, Fields, Obj, Shape};
use crate::http_syntax::{is_cookie_name, is_header_name, is_safe_header_value, PSEUDO_HEADERS};
use crate::mirror_config::{compile_mirror, ClassificationFacts, RawMirror, MIRROR};
use crate::mirror_policy::Mirror;
use crate::string_match::{Matcher, StringMatch};

pub const DEFAULT_CLASS_HEADER: &str = "x-user-class";
pub const DEFAULT_CLASS: &str = "stable";
pub const DEFAULT_FEATURES_HEADER: &str = "x-features";
/// Longest class name: it becomes a header value and a metric label.
pub const MAX_CLASS_LEN: usize = 64;
/// Compiled size limit of one regex, so a config cannot make a matcher that eats the VM.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Headers the filter must not overwrite with a class or features: the request would break.
const RESERVED_OUTPUT_HEADERS: [&str; 12] = [
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub classification: Classification,
    /// `None` when the config has no `mirror` section: nothing is mirrored.
    pub mirror: Option<Mirror>,
}

// The raw structs: the config as written, defaults filled in. `config_json` reads them by
// these field lists, which are in struct order (unknown-field errors list them in it).

static CONFIG: Fields = Fields::new(
    &["classification", "mirror"],
    &[
        Shape::Obj(&CLASSIFICATION),
        Shape::Opt(&Shape::Obj(&MIRROR)),
    ],
    &[],
);

#[derive(Default)]
struct RawConfig {
    classification: RawClassification,
    mirror: Option<RawMirror>,
}

impl RawConfig {
    fn from(mut o: Obj) -> Self {
        RawConfig {
            classification: o
                .obj("classification")
                .map_or_else(RawClassification::default, RawClassification::from),
            mirror: o.obj("mirror").map(RawMirror::from),
        }
    }
}

static CLASSIFICATION: Fields = Fields::new(
    &[
        "header",
        "default_class",
        "trust_incoming_header",
        "rules",
        "features_header",
        "features",
    ],
    &[
        Shape::Str,
        Shape::Str,
        Shape::Bool,
        Shape::List(&Shape::Obj(&RULE)),
        Shape::Str,
        Shape::Dict(&Shape::List(&Shape::Str)),
    ],
    &[],
);

struct RawClassification {
    header: String,
    default_class: String,
    trust_incoming_header: bool,
    rules: Vec<RawRule>,
    features_header: String,
    /// In class name order, each class once.
    features: Vec<(String, Vec<String>)>,
}

impl Default for RawClassification {
    fn default() -> Self {
        RawClassification {
            header: DEFAULT_CLASS_HEADER.to_string(),
            default_class: DEFAULT_CLASS.to_string(),
            trust_incoming_header: false,
            rules: Vec::new(),
            features_header: DEFAULT_FEATURES_HEADER.to_string(),
            features: Vec::new(),
        }
    }
}

impl RawClassification {
    fn from(mut o: Obj) -> Self {
        let d = RawClassification::default();
        RawClassification {
            header: o.string("header").unwrap_or(d.header),
            default_class: o.string("default_class").unwrap_or(d.default_class),
            trust_incoming_header: o
                .bool("trust_incoming_header")
                .unwrap_or(d.trust_incoming_header),
            rules: o.objs("rules").map_or(d.rules, |rules| {
                rules.into_iter().map(RawRule::from).collect()
            }),
            features_header: o.string("features_header").unwrap_or(d.features_header),
            features: o.string_lists("features").unwrap_or(d.features),
        }
    }
}

static RULE: Fields = Fields::new(
    &["class", "header", "cookie", "query", "bucket"],
    &[
        Shape::Str,
        Shape::Opt(&Shape::Obj(&STRING_CONDITION)),
        Shape::Opt(&Shape::Obj(&STRING_CONDITION)),
        Shape::Opt(&Shape::Obj(&STRING_CONDITION)),
        Shape::Opt(&Shape::Obj(&BUCKET)),
    ],
    &["class"],
);

struct RawRule {
    class: String,
    header: Option<RawStringCondition>,
    cookie: Option<RawStringCondition>,
    query: Option<RawStringCondition>,
    bucket: Option<RawBucket>,
}

impl RawRule {
    fn from(mut o: Obj) -> Self {
        RawRule {
            class: o.string("class").unwrap_or_default(),
            header: o.obj("header").map(RawStringCondition::from),
            cookie: o.obj("cookie").map(RawStringCondition::from),
            query: o.obj("query").map(RawStringCondition::from),
            bucket: o.obj("bucket").map(RawBucket::from),
        }
    }
}

static STRING_CONDITION: Fields = Fields::new(
    &[
        "name",
        "exact",
        "prefix",
        "suffix",
        "contains",
        "regex",
        "present",
        "ignore_case",
    ],
    &[
        Shape::Str,
        Shape::Opt(&Shape::Str),
        Shape::Opt(&Shape::Str),
        Shape::Opt(&Shape::Str),
        Shape::Opt(&Shape::Str),
        Shape::Opt(&Shape::Str),
        Shape::Opt(&Shape::Bool),
        Shape::Bool,
    ],
    &["name"],
);

struct RawStringCondition {
    name: String,
    exact: Option<String>,
    prefix: Option<String>,
    suffix: Option<String>,
    contains: Option<String>,
    regex: Option<String>,
    present: Option<bool>,
    ignore_case: bool,
}

impl RawStringCondition {
    fn from(mut o: Obj) -> Self {
        RawStringCondition {
            name: o.string("name").unwrap_or_default(),
            exact: o.string("exact"),
            prefix: o.string("prefix"),
            suffix: o.string("suffix"),
            contains: o.string("contains"),
            regex: o.string("regex"),
            present: o.bool("present"),
            ignore_case: o.bool("ignore_case").unwrap_or_default(),
        }
    }
}

static BUCKET: Fields = Fields::new(
    &["cookie", "header", "percent", "seed", "assign_cookie"],
    &[
        Shape::Opt(&Shape::Str),
        Shape::Opt(&Shape::Str),
        Shape::F64,
        Shape::Str,
        Shape::Bool,
    ],
    &["percent"],
);

struct RawBucket {
    cookie: Option<String>,
    header: Option<String>,
    percent: f64,
    seed: String,
    assign_cookie: bool,
}

impl RawBucket {
    fn from(mut o: Obj) -> Self {
        RawBucket {
            cookie: o.string("cookie"),
            header: o.string("header"),
            percent: o.f64("percent").unwrap_or_default(),
            seed: o.string("seed").unwrap_or_default(),
            assign_cookie: o.bool("assign_cookie").unwrap_or_default(),
        }
    }
}

/// Parses and validates a plugin configuration. Empty input is the empty config `{}`,
/// because Envoy passes nothing when `configuration` is left out.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigErrors> {
    let raw = if bytes.iter().all(u8::is_ascii_whitespace) {
        RawConfig::default()
    } else {
        deserialize(bytes).map_err(|e| ConfigErrors(vec![e]))?
    };
    let mut errors = Vec::new();
    let classification = compile_classification(raw.classification, &mut errors);
    let mirror = raw.mirror.map(|m| {
        let facts = ClassificationFacts {
            classes: &classification.classes,
            class_header: &classification.header,
            features_header: &classification.features_header,
        };
        compile_mirror(m, &facts, &mut errors)
    });
    if errors.is_empty() {
        Ok(Config {
            classification,
            mirror,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn deserialize(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let raw = config_json::read(&mut de, &CONFIG).map_err(|(path, e)| {
        if e.is_syntax() || e.is_eof() {
            // Where the text stops being JSON, a field path means little: line and column do.
            ConfigError::new("config", format!("invalid JSON: {e}"))
        } else if path == "." {
            ConfigError::new("config", e.to_string())
        } else {
            ConfigError::new(path, e.to_string())
        }
    })?;
    de.end()
        .map_err(|e| ConfigError::new("config", format!("invalid JSON: {e}")))?;
    Ok(RawConfig::from(raw))
}

const CONDITION_KINDS: &str = "header, cookie, query, bucket";
const MATCHER_KINDS: &str = "exact, prefix, suffix, contains, regex, present";

fn compile_classification(raw: RawClassification, errors: &mut Vec<ConfigError>) -> Classification {
    let header = output_header("classification.header", &raw.header, errors);
    let features_header = output_header(
        "classification.features_header",
        &raw.features_header,
        errors,
    );
    if !header.is_empty() && header == features_header {
        errors.push(ConfigError::new(
            "classification.features_header",
            format!(
                "{:?} is also classification.header; give them different names",
                raw.features_header
            ),
        ));
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
    for (i, rule) in raw.rules.into_iter().enumerate() {
        let path = format!("classification.rules[{i}]");
        if let Some(rule) = compile_rule(&path, rule, &mut classes, &mut assign_cookies, errors) {
            rules.push(rule);
        }
    }

    for (class, flags) in raw.features {
        let path = format!("classification.features.{class}");
        let Some(entry) = classes.iter_mut().find(|c| c.name == class) else {
            errors.push(ConfigError::new(
                path,
                format!("no rule or default_class produces class {class:?}"),
            ));
            continue;
        };
        for (j, flag) in flags.iter().enumerate() {
            if let Err(why) = check_feature(flag, flags.get(..j).unwrap_or_default()) {
                errors.push(ConfigError::new(format!("{path}[{j}]"), why));
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
    }
}

fn compile_rule(
    path: &str,
    raw: RawRule,
    classes: &mut Vec<Class>,
    assign_cookies: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Rule> {
    let class = intern_class(&format!("{path}.class"), &raw.class, classes, errors);
    let mut conditions = Vec::new();
    let mut ok = true;
    let string_conditions = [
        (Field::Header, raw.header),
        (Field::Cookie, raw.cookie),
        (Field::Query, raw.query),
    ];
    for (kind, cond) in string_conditions {
        let Some(cond) = cond else { continue };
        match compile_string_condition(&format!("{path}.{}", kind.key()), kind, cond) {
            Ok(c) => conditions.push(c),
            Err(mut e) => {
                ok = false;
                errors.append(&mut e);
            }
        }
    }
    if let Some(b) = raw.bucket {
        match compile_bucket(&format!("{path}.bucket"), b) {
            Ok((bucket, assign)) => {
                if let (true, BucketKey::Cookie(name)) = (assign, &bucket.key) {
                    if !assign_cookies.contains(name) {
                        assign_cookies.push(name.clone());
                    }
                }
                conditions.push(Condition::Bucket(bucket));
            }
            Err(mut e) => {
                ok = false;
                errors.append(&mut e);
            }
        }
    }
    if ok && conditions.is_empty() {
        errors.push(ConfigError::new(
            path,
            format!(
                "rule for class {:?} has no condition; give at least one of {CONDITION_KINDS}",
                raw.class
            ),
        ));
        return None;
    }
    ok.then_some(Rule { class, conditions })
}

/// Where a string condition reads its value.
#[derive(Clone, Copy)]
enum Field {
    Header,
    Cookie,
    Query,
}

impl Field {
    fn key(self) -> &'static str {
        match self {
            Field::Header => "header",
            Field::Cookie => "cookie",
            Field::Query => "query",
        }
    }
}

fn compile_string_condition(
    path: &str,
    kind: Field,
    raw: RawStringCondition,
) -> Result<Condition, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let name = match kind {
        Field::Header => {
            let lower = raw.name.to_ascii_lowercase();
            if !is_header_name(&raw.name) && !PSEUDO_HEADERS.contains(&lower.as_str()) {
                errors.push(ConfigError::new(
                    format!("{path}.name"),
                    format!(
                        "{:?} is not a valid HTTP header name ({TOKEN_CHARS}, or one of {})",
                        raw.name,
                        PSEUDO_HEADERS.join(", ")
                    ),
                ));
            }
            lower
        }
        Field::Cookie => {
            if !is_cookie_name(&raw.name) {
                errors.push(ConfigError::new(
                    format!("{path}.name"),
                    bad_cookie_name(&raw.name),
                ));
            }
            raw.name.clone()
        }
        Field::Query => {
            if raw.name.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.name"),
                    "is empty; name the query parameter",
                ));
            }
            raw.name.clone()
        }
    };

    let given: Vec<&str> = [
        ("exact", raw.exact.is_some()),
        ("prefix", raw.prefix.is_some()),
        ("suffix", raw.suffix.is_some()),
        ("contains", raw.contains.is_some()),
        ("regex", raw.regex.is_some()),
        ("present", raw.present.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, set)| set.then_some(n))
    .collect();
    let matcher = match given.as_slice() {
        [] => {
            errors.push(ConfigError::new(
                path,
                format!("has no matcher; give exactly one of {MATCHER_KINDS}"),
            ));
            None
        }
        [_] => compile_matcher(path, &raw, &mut errors),
        [first @ .., last] => {
            errors.push(ConfigError::new(
                path,
                format!(
                    "sets {} and {last}; give exactly one of {MATCHER_KINDS}",
                    first.join(", ")
                ),
            ));
            None
        }
    };
    match matcher {
        Some(matcher) if errors.is_empty() => Ok(match kind {
            Field::Header => Condition::Header { name, matcher },
            Field::Cookie => Condition::Cookie { name, matcher },
            Field::Query => Condition::Query { name, matcher },
        }),
        _ => Err(errors),
    }
}

fn compile_matcher(
    path: &str,
    raw: &RawStringCondition,
    errors: &mut Vec<ConfigError>,
) -> Option<Matcher> {
    let bytes = |s: &String| s.as_bytes().to_vec();
    let kind = if let Some(s) = &raw.exact {
        StringMatch::Exact(bytes(s))
    } else if let Some(s) = &raw.prefix {
        StringMatch::Prefix(bytes(s))
    } else if let Some(s) = &raw.suffix {
        StringMatch::Suffix(bytes(s))
    } else if let Some(s) = &raw.contains {
        StringMatch::Contains(bytes(s))
    } else if let Some(p) = &raw.regex {
        let build = |pattern: &str| {
            RegexBuilder::new(pattern)
                .case_insensitive(raw.ignore_case)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
        };
        // Anchored: Istio and Envoy regex matches are full matches (RE2 FullMatch). The pattern
        // must be valid on its own first: one that closes the group it is wrapped in (`a)|(b`)
        // would escape the anchors and match part of a value, where Envoy refuses it.
        match build(p).and_then(|_| build(&format!("^(?:{p})$"))) {
            Ok(re) => StringMatch::Regex {
                re,
                required: crate::string_match::required_literal(p, raw.ignore_case),
            },
            Err(e) => {
                let why = e.to_string().replace('\n', " ");
                errors.push(ConfigError::new(
                    format!("{path}.regex"),
                    format!("{p:?} is not a valid regex: {why}"),
                ));
                return None;
            }
        }
    } else {
        StringMatch::Present(raw.present.unwrap_or(true))
    };
    Some(Matcher::new(kind, raw.ignore_case))
}

fn compile_bucket(path: &str, raw: RawBucket) -> Result<(Bucket, bool), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let key = match (raw.cookie, raw.header) {
        (Some(cookie), None) => {
            if !is_cookie_name(&cookie) {
                errors.push(ConfigError::new(
                    format!("{path}.cookie"),
                    bad_cookie_name(&cookie),
                ));
            }
            Some(BucketKey::Cookie(cookie))
        }
        (None, Some(header)) => {
            if !is_header_name(&header) {
                errors.push(ConfigError::new(
                    format!("{path}.header"),
                    bad_header_name(&header),
                ));
            }
            if raw.assign_cookie {
                errors.push(ConfigError::new(
                    format!("{path}.assign_cookie"),
                    "true needs a cookie key (bucket.cookie); the filter cannot assign a header",
                ));
            }
            Some(BucketKey::Header(header.to_ascii_lowercase()))
        }
        (cookie, header) => {
            let why = if cookie.is_some() && header.is_some() {
                "sets both cookie and header; give exactly one of them as the key"
            } else {
                "has no key; give exactly one of cookie, header"
            };
            errors.push(ConfigError::new(path, why));
            None
        }
    };
    let basis_points = bucket::basis_points(raw.percent)
        .map_err(|why| errors.push(ConfigError::new(format!("{path}.percent"), why)))
        .ok();
    match (key, basis_points) {
        (Some(key), Some(basis_points)) if errors.is_empty() => Ok((
            Bucket {
                key,
                seed: raw.seed,
                basis_points,
            },
            raw.assign_cookie,
        )),
        _ => Err(errors),
    }
}

/// Validates `name` as a class and returns its id, adding it on first mention.
fn intern_class(
    path: &str,
    name: &str,
    classes: &mut Vec<Class>,
    errors: &mut Vec<ConfigError>,
) -> ClassId {
    if let Err(why) = check_class_name(name) {
        errors.push(ConfigError::new(path, why));
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

/// A class is a header value, a metric label and part of a metric name: keep it plain.
pub fn check_class_name(name: &str) -> Result<(), String> {
    let hint = format!(
        "a class is 1 to {MAX_CLASS_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit"
    );
    if name.is_empty() {
        return Err(format!("\"\" is empty; {hint}"));
    }
    let plain = name.len() <= MAX_CLASS_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid class name; {hint}"))
    }
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

const TOKEN_CHARS: &str = "letters, digits and !#$%&'*+-.^_`|~ only";

pub(crate) fn bad_header_name(name: &str) -> String {
    format!("{name:?} is not a valid HTTP header name ({TOKEN_CHARS})")
}

pub(crate) fn bad_cookie_name(name: &str) -> String {
    format!("{name:?} is not a valid cookie name (RFC 6265 token: {TOKEN_CHARS})")
}

fn output_header(path: &str, name: &str, errors: &mut Vec<ConfigError>) -> String {
    let lower = name.to_ascii_lowercase();
    if !is_header_name(name) {
        errors.push(ConfigError::new(path, bad_header_name(name)));
    } else if RESERVED_OUTPUT_HEADERS.contains(&lower.as_str()) {
        errors.push(ConfigError::new(
            path,
            format!("{name:?} would overwrite a header the request needs; use a header of your own such as x-user-class"),
        ));
    }
    lower
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

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

    /// Where serde's errors point: the paths `serde_path_to_error` gave, which `config_json`
    /// keeps (each text checked against that crate before it was dropped).
    #[test]
    fn json_error_paths() {
        let cases = [
            // A duplicate or missing field is the object's error; an unknown one the key's.
            (r#"{"classification": {"rules": [{"class": "x", "class": "y"}]}}"#,
             "classification.rules[0]: duplicate field `class` at line 1 column 52"),
            (r#"{"classification": {"rules": [{"class": "b", "bucket": {"cookie": "u", "seed": "s"}}]}}"#,
             "classification.rules[0].bucket: missing field `percent` at line 1 column 83"),
            (r#"{"classification": {"rules": [{"class": "b", "cookie": {"exact": "x"}}]}}"#,
             "classification.rules[0].cookie: missing field `name` at line 1 column 69"),
            // Map keys and list indices, escaped keys as decoded.
            (r#"{"classification": {"features": {"stable": ["ok"], "beta": [1]}}}"#,
             "classification.features.beta[0]: invalid type: integer `1`, expected a string at line 1 column 61"),
            (r#"{"cla\u0073sification": {"rules": [{"class": "b", "h\u0065ader": {"name": "x", "present": "yes"}}]}}"#,
             "classification.rules[0].header.present: invalid type: string \"yes\", expected a boolean at line 1 column 95"),
            (r#"{"mirror": {"classes": ["stable", [2]]}}"#,
             "mirror.classes[1]: invalid type: sequence, expected a string at line 1 column 34"),
            // An enum variant given as an object names the variant.
            (r#"{"mirror": {"compare": {"body": {"json": 1}}}}"#,
             "mirror.compare.body.json: invalid type: integer `1`, expected unit at line 1 column 42"),
            (r#"{"mirror": {"compare": {"body": 5}}}"#,
             "config: invalid JSON: expected value at line 1 column 33"),
            (r#"{"mirror": {"max_in_flight": 1.5}}"#,
             "mirror.max_in_flight: invalid type: floating point `1.5`, expected usize at line 1 column 32"),
            (r#"{"mirror": {"timeout_ms": 4294967296}}"#,
             "mirror.timeout_ms: invalid value: integer `4294967296`, expected u32 at line 1 column 36"),
            // The empty key's path is empty, not the document's.
            (r#"{"": 1}"#,
             ": unknown field ``, expected `classification` or `mirror` at line 1 column 3"),
        ];
        for (json, want) in cases {
            assert_eq!(errors_of(json), [want], "{json}");
        }
    }

    #[test]
    fn nulls_and_repeated_keys() {
        // `null` is an absent optional field; of a key given twice in a map the last wins.
        let json = r#"{"classification": {
            "rules": [{"class": "b", "cookie": {"name": "t", "exact": null, "prefix": "a"}}],
            "features": {"b": ["x"], "b": ["y", "z"]}},
            "mirror": {"methods": null, "sample_key": null}}"#;
        let c = parse(json.as_bytes()).unwrap();
        assert_eq!(c.classification.classes[1].features.as_deref(), Some("y,z"));
        assert!(c.mirror.unwrap().sample_key.is_none());
        assert!(parse(br#"{"mirror": null}"#).unwrap().mirror.is_none());
    }

    #[test]
    fn errors_display_as_one_line() {
        let e = parse(rule(r#"{"class": "y"}, {"class": "z"}"#).as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "classification.rules[0]: rule for class \"y\" has no condition; give at least one of header, cookie, query, bucket; \
             classification.rules[1]: rule for class \"z\" has no condition; give at least one of header, cookie, query, bucket"
        );
    }
}
