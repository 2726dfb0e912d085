//! Classifying a request into a user class: the compiled rules and their evaluation.
//!
//! The types here are built only by `config` (validated, then compiled) and are immutable
//! afterwards. Evaluation reads the request's headers as bytes and never fails.

use crate::bucket;
use crate::request::{BucketKey, Request};
use crate::string_match::Matcher;

/// Index of a class in [`Classification::classes`]; metrics are kept per index.
pub type ClassId = usize;

#[derive(Debug, Clone)]
pub struct Class {
    pub name: String,
    /// The class's feature flags joined with `,`, ready for the features header.
    pub features: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Condition {
    /// The value `name` of `part` (a header, cookie or query parameter) matches.
    Match {
        part: Part,
        name: String,
        matcher: Matcher,
    },
    Bucket(Bucket),
}

/// The part of a request a string condition reads. Its key in a rule of the config and its
/// lookup in the request are declared here together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Every value of a header (lowercase name; pseudo-headers too).
    Header,
    Cookie,
    /// A parameter of the query string of `:path`, percent-decoded.
    Query,
}

impl Part {
    /// The rule's key for a condition on this part (`{"class": ..., "cookie": {...}}`).
    pub fn key(self) -> &'static str {
        match self {
            Part::Header => "header",
            Part::Cookie => "cookie",
            Part::Query => "query",
        }
    }

    fn matches(self, req: &Request<'_>, name: &str, matcher: &Matcher) -> bool {
        match self {
            Part::Header => matcher.matches_any(req.values(name)),
            Part::Cookie => matcher.matches(req.cookie(name)),
            Part::Query => matcher.matches(req.query(name).as_deref()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bucket {
    pub key: BucketKey,
    pub seed: String,
    pub basis_points: u32,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub class: ClassId,
    /// All must hold.
    pub conditions: Vec<Condition>,
}

/// The compiled `classification` section.
#[derive(Debug, Clone)]
pub struct Classification {
    /// Lowercase request header the class is written on.
    pub header: String,
    pub trust_incoming_header: bool,
    /// Lowercase request header the class's feature flags are written on.
    pub features_header: String,
    pub default_class: ClassId,
    /// Every class a rule or `default_class` names, each once, in order of first mention.
    pub classes: Vec<Class>,
    pub rules: Vec<Rule>,
    /// Cookies a first-time visitor is given a random id in (`bucket.assign_cookie`).
    pub assign_cookies: Vec<String>,
    /// Whether the filter asks the host to pick the route again after writing the class
    /// (`clear_route_cache`).
    pub reroute: bool,
}

/// How the class was decided, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `trust_incoming_header` and the client sent a known class.
    Incoming,
    /// Rule at this index held.
    Rule(usize),
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub class: ClassId,
    pub source: Source,
    /// Cookies to set on the response: (cookie name, new id). Empty for returning visitors.
    pub assigned: Vec<(String, String)>,
}

impl Classification {
    /// Classifies `headers`. `new_id` makes a random id for a first-time visitor without an
    /// `assign_cookie` cookie; it may fail (`None`), and then the bucket simply does not match.
    pub fn classify(
        &self,
        headers: &[(String, Vec<u8>)],
        mut new_id: impl FnMut() -> Option<String>,
    ) -> Outcome {
        let req = Request::new(headers);
        if self.trust_incoming_header {
            if let Some(class) = self.trusted_incoming(&req) {
                return Outcome {
                    class,
                    source: Source::Incoming,
                    assigned: Vec::new(),
                };
            }
        }
        // Untrusted, or trusted but unusable: classify as if the client had not sent it.
        let req = self.rules_view(headers);

        let mut assigned = Vec::new();
        for name in &self.assign_cookies {
            if req.cookie(name).is_none_or(<[u8]>::is_empty) {
                if let Some(id) = new_id() {
                    assigned.push((name.clone(), id));
                }
            }
        }

        let (class, source) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.conditions.iter().all(|c| holds(c, &req, &assigned)))
            .map_or((self.default_class, Source::Default), |(i, rule)| {
                (rule.class, Source::Rule(i))
            });
        Outcome {
            class,
            source,
            assigned,
        }
    }

    /// The class the client sent, when it is exactly one known class. Anything else (several
    /// headers, an unknown or malformed value) is not trusted: a typo upstream must not mint
    /// new classes, and every class has a bounded metric.
    fn trusted_incoming(&self, req: &Request<'_>) -> Option<ClassId> {
        let mut values = req.values(&self.header);
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        self.classes.iter().position(|c| c.name.as_bytes() == value)
    }

    pub fn class(&self, id: ClassId) -> Option<&Class> {
        self.classes.get(id)
    }

    /// The request as the rules read it: without the class header, which the client may not
    /// choose for itself. Public so a tool can evaluate rules one by one as `classify` does.
    pub fn rules_view<'a>(&'a self, headers: &'a [(String, Vec<u8>)]) -> Request<'a> {
        Request::new(headers).hiding(&self.header)
    }

    /// The headers the filter writes for `class`: the class header and the features header,
    /// `None` for a header it removes. The primary's request and the mirror's copy get both.
    pub fn class_headers(&self, class: ClassId) -> [(&str, Option<&[u8]>); 2] {
        let class = self.class(class);
        [
            (self.header.as_str(), class.map(|c| c.name.as_bytes())),
            (
                self.features_header.as_str(),
                class.and_then(|c| c.features.as_deref()).map(str::as_bytes),
            ),
        ]
    }
}

/// Whether `cond` holds for `req` (a [`Classification::rules_view`]); `assigned` as in
/// [`Outcome::assigned`].
pub fn holds(cond: &Condition, req: &Request<'_>, assigned: &[(String, String)]) -> bool {
    match cond {
        Condition::Match {
            part,
            name,
            matcher,
        } => part.matches(req, name, matcher),
        Condition::Bucket(b) => req
            .bucket_id(&b.key, assigned)
            .is_some_and(|id| bucket::in_cohort(b.seed.as_bytes(), id, b.basis_points)),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use crate::config::parse;

    fn headers(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The classification example of the README: a rule of every kind, in priority order.
    const DOCUMENTED_EXAMPLE: &str = r#"{
      "classification": {
        "header": "x-user-class",
        "default_class": "stable",
        "trust_incoming_header": false,
        "rules": [
          {"class": "insider", "cookie": {"name": "type", "exact": "insider"}},
          {"class": "beta",    "header": {"name": "x-beta", "exact": "true"}},
          {"class": "firefox", "header": {"name": "user-agent", "regex": ".*Firefox.*"}},
          {"class": "preview", "query":  {"name": "preview", "present": true}},
          {"class": "cohort",  "bucket": {"cookie": "uid", "percent": 5, "seed": "checkout-v2"}}
        ],
        "features_header": "x-features",
        "features": {"beta": ["new-checkout", "dark-mode"]}
      }
    }"#;

    fn class_of(config: &str, list: &[(&str, &str)]) -> String {
        let c = parse(config.as_bytes()).unwrap().classification;
        let out = c.classify(&headers(list), || None);
        c.class(out.class).unwrap().name.clone()
    }

    /// An id in the checkout-v2 5% cohort, and user-1 (bucket 8696) outside it.
    fn cohort_ids() -> (String, String) {
        let inside = (0..)
            .map(|i| format!("u{i}"))
            .find(|id| crate::bucket::bucket_of(b"checkout-v2", id.as_bytes()) < 500)
            .unwrap();
        (inside, "user-1".to_string())
    }

    #[test]
    fn documented_example_table() {
        let (inside, outside) = cohort_ids();
        let in_cookie = format!("uid={inside}");
        let out_cookie = format!("uid={outside}");
        let ff = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            ("nothing", vec![(":path", "/")], "stable"),
            (
                "insider cookie",
                vec![(":path", "/"), ("cookie", "type=insider")],
                "insider",
            ),
            (
                "insider cookie among others",
                vec![("cookie", "a=1; type=insider; b=2")],
                "insider",
            ),
            (
                "cookie value differs",
                vec![("cookie", "type=insiders")],
                "stable",
            ),
            ("beta header", vec![("x-beta", "true")], "beta"),
            (
                "beta header wrong value",
                vec![("x-beta", "TRUE")],
                "stable",
            ),
            ("firefox", vec![("user-agent", ff)], "firefox"),
            (
                "chrome",
                vec![("user-agent", "Mozilla/5.0 Chrome/120")],
                "stable",
            ),
            ("preview query", vec![(":path", "/shop?preview")], "preview"),
            (
                "preview query with value",
                vec![(":path", "/shop?a=1&preview=0")],
                "preview",
            ),
            ("cohort in", vec![("cookie", in_cookie.as_str())], "cohort"),
            (
                "cohort out",
                vec![("cookie", out_cookie.as_str())],
                "stable",
            ),
            ("cohort empty id", vec![("cookie", "uid=")], "stable"),
            // Rules are tried in order: the first that holds wins.
            (
                "insider before beta",
                vec![("cookie", "type=insider"), ("x-beta", "true")],
                "insider",
            ),
            (
                "beta before firefox",
                vec![("x-beta", "true"), ("user-agent", ff)],
                "beta",
            ),
            (
                "firefox before preview",
                vec![("user-agent", ff), (":path", "/?preview")],
                "firefox",
            ),
            // A client-sent class is ignored when not trusted.
            ("spoofed class", vec![("x-user-class", "beta")], "stable"),
        ];
        for (what, list, want) in cases {
            assert_eq!(class_of(DOCUMENTED_EXAMPLE, &list), want, "{what}");
        }
    }

    #[test]
    fn all_conditions_of_a_rule_must_hold() {
        let config = r#"{"classification": {"rules": [
            {"class": "both", "header": {"name": "x-a", "present": true},
                              "cookie": {"name": "b", "exact": "1"}}]}}"#;
        assert_eq!(class_of(config, &[("x-a", ""), ("cookie", "b=1")]), "both");
        assert_eq!(class_of(config, &[("x-a", "")]), "stable");
        assert_eq!(class_of(config, &[("cookie", "b=1")]), "stable");
    }

    #[test]
    fn present_false_means_absent() {
        let config = r#"{"classification": {"rules": [
            {"class": "anon", "cookie": {"name": "session", "present": false}}]}}"#;
        assert_eq!(class_of(config, &[]), "anon");
        assert_eq!(class_of(config, &[("cookie", "session=")]), "stable");
    }

    #[test]
    fn header_conditions_see_every_value() {
        let config = r#"{"classification": {"rules": [
            {"class": "beta", "header": {"name": "x-group", "exact": "beta"}}]}}"#;
        assert_eq!(
            class_of(config, &[("x-group", "a"), ("x-group", "beta")]),
            "beta"
        );
    }

    #[test]
    fn pseudo_header_conditions() {
        let config = r#"{"classification": {"rules": [
            {"class": "api", "header": {"name": ":path", "prefix": "/api/"}},
            {"class": "canary-host", "header": {"name": ":authority", "exact": "canary.example.com"}}]}}"#;
        assert_eq!(class_of(config, &[(":path", "/api/x")]), "api");
        assert_eq!(
            class_of(config, &[(":authority", "canary.example.com")]),
            "canary-host"
        );
    }

    #[test]
    fn trusted_incoming_header() {
        let trusting = DOCUMENTED_EXAMPLE.replace(
            r#""trust_incoming_header": false"#,
            r#""trust_incoming_header": true"#,
        );
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("x-user-class", "beta")], "beta"),
            (vec![("x-user-class", "cohort")], "cohort"),
            // The incoming class wins over the rules.
            (
                vec![("x-user-class", "stable"), ("x-beta", "true")],
                "stable",
            ),
            // Unknown, malformed or duplicated values are re-classified by the rules.
            (vec![("x-user-class", "admin"), ("x-beta", "true")], "beta"),
            (vec![("x-user-class", "beta,stable")], "stable"),
            (
                vec![("x-user-class", "beta"), ("x-user-class", "beta")],
                "stable",
            ),
            (vec![("x-user-class", "")], "stable"),
            (vec![], "stable"),
        ];
        for (list, want) in cases {
            assert_eq!(class_of(&trusting, &list), want, "{list:?}");
        }
    }

    #[test]
    fn untrusted_class_header_is_invisible_to_rules() {
        let config = r#"{"classification": {"rules": [
            {"class": "beta", "header": {"name": "x-user-class", "exact": "beta"}}]}}"#;
        assert_eq!(class_of(config, &[("x-user-class", "beta")]), "stable");
    }

    #[test]
    fn bucket_by_header() {
        let config = r#"{"classification": {"rules": [
            {"class": "half", "bucket": {"header": "x-user-id", "percent": 50}}]}}"#;
        // bucket_of("", "user-1") = 821 < 5000
        assert_eq!(class_of(config, &[("x-user-id", "user-1")]), "half");
        assert_eq!(class_of(config, &[]), "stable");
    }

    #[test]
    fn assign_cookie_for_first_time_visitors() {
        let config = r#"{"classification": {"rules": [
            {"class": "cohort", "bucket": {"cookie": "uid", "percent": 100, "assign_cookie": true}}]}}"#;
        let c = parse(config.as_bytes()).unwrap().classification;

        // No cookie: an id is minted, used for this request's bucket, and returned.
        let out = c.classify(&headers(&[]), || Some("fresh".to_string()));
        assert_eq!(out.assigned, vec![("uid".to_string(), "fresh".to_string())]);
        assert_eq!(c.class(out.class).unwrap().name, "cohort");

        // Returning visitor: nothing minted.
        let mut calls = 0;
        let out = c.classify(&headers(&[("cookie", "uid=known")]), || {
            calls += 1;
            Some("x".into())
        });
        assert!(out.assigned.is_empty());
        assert_eq!(calls, 0);

        // An empty cookie counts as missing.
        let out = c.classify(&headers(&[("cookie", "uid=")]), || Some("y".into()));
        assert_eq!(out.assigned.len(), 1);

        // No randomness available: no cookie, and the bucket does not match.
        let out = c.classify(&headers(&[]), || None);
        assert!(out.assigned.is_empty());
        assert_eq!(c.class(out.class).unwrap().name, "stable");
    }

    #[test]
    fn assigned_cookie_follows_bucket_of_new_id() {
        let config = r#"{"classification": {"rules": [
            {"class": "cohort", "bucket": {"cookie": "uid", "percent": 5, "seed": "checkout-v2",
             "assign_cookie": true}}]}}"#;
        let c = parse(config.as_bytes()).unwrap().classification;
        let (inside, outside) = cohort_ids();
        let out = c.classify(&headers(&[]), || Some(inside.clone()));
        assert_eq!(c.class(out.class).unwrap().name, "cohort");
        let out = c.classify(&headers(&[]), || Some(outside.clone()));
        assert_eq!(c.class(out.class).unwrap().name, "stable");
    }

    #[test]
    fn non_utf8_values_have_defined_outcomes() {
        let config = r#"{"classification": {"rules": [
            {"class": "re", "header": {"name": "x-a", "regex": ".*"}},
            {"class": "ex", "header": {"name": "x-b", "exact": "v"}},
            {"class": "ck", "cookie": {"name": "c", "prefix": "ok"}}]}}"#;
        let c = parse(config.as_bytes()).unwrap().classification;
        let raw = vec![
            ("x-a".to_string(), b"\xff\xfe".to_vec()),
            ("x-b".to_string(), b"\xc3".to_vec()),
            ("cookie".to_string(), b"\xff=\xff; c=ok\xff".to_vec()),
        ];
        let out = c.classify(&raw, || None);
        assert_eq!(c.class(out.class).unwrap().name, "ck");
    }
}
