//! The `mirror` section: raw structs as written, and their validation and compile into
//! [`Mirror`]. It is read after `classification`, whose classes and headers it refers to.

use serde::Deserialize;
use smart_default::SmartDefault;

use crate::classify::Classification;
use crate::grpc::MethodPattern;
use crate::mirror_policy::{Baseline, Method, Mirror};
use crate::noise::NoiseSettings;

use super::checks::{self, bad_header_name, header_list, unknown_class, RawBucketKey};
use super::compare::{self, RawCompare};
use super::error::ConfigErrors;
use super::object::Object;

pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
pub const MAX_TIMEOUT_MS: u32 = 60_000;
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
pub const MAX_IN_FLIGHT: usize = 10_000;
/// Highest `mirror.max_per_second`: far above what one worker can mirror, so only a typo
/// reaches it.
pub const MAX_PER_SECOND: u32 = 1_000_000;

#[derive(Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMirror {
    #[default("canary".into())]
    cluster: String,
    #[default("-shadow".into())]
    authority_suffix: String,
    #[default("x-mirror".into())]
    marker_header: String,
    #[default(100.0)]
    percent: f64,
    sample_key: Option<Object<RawBucketKey>>,
    classes: Vec<String>,
    include_paths: Vec<String>,
    exclude_paths: Vec<String>,
    /// `None`: the idempotent methods.
    methods: Option<Vec<String>>,
    /// Empty: POST and PATCH are never mirrored.
    idempotency_key_header: String,
    #[default(DEFAULT_TIMEOUT_MS)]
    timeout_ms: u32,
    #[default(DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    #[default(DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    remove_headers: Vec<String>,
    compare: Object<RawCompare>,
    baseline: Option<Object<RawBaseline>>,
    noise: Option<Object<RawNoise>>,
    /// 0: no limit.
    max_per_second: u32,
    grpc: Option<Object<RawGrpc>>,
}

/// `mirror.grpc`: which gRPC methods may be mirrored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrpc {
    methods: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBaseline {
    cluster: String,
    #[serde(default = "all")]
    percent: f64,
}

fn all() -> f64 {
    100.0
}

/// The settings of `noise.rs` an operator may set; its caps stay at their defaults.
#[derive(Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNoise {
    #[default(NoiseSettings::default().min_samples)]
    min_samples: u32,
    #[default(NoiseSettings::default().threshold)]
    threshold: f64,
    #[default(NoiseSettings::default().window)]
    window: u32,
}

const IDEMPOTENT_LIST: &str = "GET, HEAD, OPTIONS, TRACE, PUT, DELETE";

/// The section, given the compiled `classification` it must not collide with.
pub(super) fn compile(
    raw: RawMirror,
    classification: &Classification,
    errors: &mut ConfigErrors,
) -> Mirror {
    if checks::cluster_name("mirror.cluster", &raw.cluster, "the canary", errors)
        && raw.cluster.contains(';')
    {
        errors.add(
            "mirror.cluster",
            format!(
                "{:?} contains ';', which ends a tag in Envoy stat names: the canary_cluster label of the mirror metrics would be cut there",
                raw.cluster
            ),
        );
    }
    if !raw
        .authority_suffix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        errors.add(
            "mirror.authority_suffix",
            format!(
                "{:?} cannot be part of a host name (letters, digits, '-', '.', '_', '~'; \"\" keeps the authority)",
                raw.authority_suffix
            ),
        );
    }

    let marker_header = raw.marker_header.to_ascii_lowercase();
    if !crate::http_syntax::is_header_name(&raw.marker_header) {
        errors.add("mirror.marker_header", bad_header_name(&raw.marker_header));
    } else if marker_header == classification.header
        || marker_header == classification.features_header
    {
        errors.add(
            "mirror.marker_header",
            format!(
                "{:?} is also the class or features header; give it a name of its own",
                raw.marker_header
            ),
        );
    }

    let basis_points = checks::basis_points("mirror.percent", raw.percent, errors);
    let sample_key = raw
        .sample_key
        .and_then(|Object(k)| checks::bucket_key("mirror.sample_key", k, errors));

    let mut classes = Vec::with_capacity(raw.classes.len());
    for (i, name) in raw.classes.iter().enumerate() {
        let path = format!("mirror.classes[{i}]");
        match classification.classes.iter().position(|c| &c.name == name) {
            None => errors.add(path, unknown_class(name)),
            Some(id) if classes.contains(&id) => {
                errors.add(path, format!("{name:?} is listed twice"))
            }
            Some(id) => classes.push(id),
        }
    }

    for (field, paths) in [
        ("include_paths", &raw.include_paths),
        ("exclude_paths", &raw.exclude_paths),
    ] {
        for (i, p) in paths.iter().enumerate() {
            if !p.starts_with('/') {
                errors.add(
                    format!("mirror.{field}[{i}]"),
                    format!("{p:?} is not a path prefix; it must start with '/'"),
                );
            }
        }
    }

    let methods = match raw.methods {
        None => Method::IDEMPOTENT.to_vec(),
        Some(names) => methods(&names, errors),
    };

    let idempotency_key_header = (!raw.idempotency_key_header.is_empty()).then(|| {
        checks::header_name(
            "mirror.idempotency_key_header",
            &raw.idempotency_key_header,
            errors,
        )
    });

    if raw.timeout_ms == 0 || raw.timeout_ms > MAX_TIMEOUT_MS {
        errors.add(
            "mirror.timeout_ms",
            format!("{} is not between 1 and {MAX_TIMEOUT_MS}", raw.timeout_ms),
        );
    }
    checks::body_limit("mirror.max_body_bytes", raw.max_body_bytes, errors);
    if raw.max_in_flight == 0 || raw.max_in_flight > MAX_IN_FLIGHT {
        errors.add(
            "mirror.max_in_flight",
            format!("{} is not between 1 and {MAX_IN_FLIGHT}", raw.max_in_flight),
        );
    }

    let remove_headers = header_list("mirror.remove_headers", &raw.remove_headers, errors);
    let compare = compare::compile("mirror.compare", raw.compare.0, errors);
    let baseline = raw
        .baseline
        .map(|Object(b)| baseline(b, &raw.cluster, raw.noise.as_ref(), errors));
    if baseline.is_none() && raw.noise.is_some() {
        errors.add("mirror.noise", "applies only with mirror.baseline");
    }
    if raw.max_per_second > MAX_PER_SECOND {
        errors.add(
            "mirror.max_per_second",
            format!(
                "{} is over {MAX_PER_SECOND}; 0 turns the limit off",
                raw.max_per_second
            ),
        );
    }

    let grpc_methods = raw
        .grpc
        .map(|Object(g)| grpc_methods(&g.methods, errors))
        .unwrap_or_default();

    Mirror {
        cluster: raw.cluster,
        authority_suffix: raw.authority_suffix,
        marker_header,
        basis_points,
        sample_key,
        classes: (!classes.is_empty()).then_some(classes),
        include_paths: raw.include_paths,
        exclude_paths: raw.exclude_paths,
        methods,
        idempotency_key_header,
        timeout_ms: raw.timeout_ms,
        max_body_bytes: raw.max_body_bytes,
        max_in_flight: raw.max_in_flight,
        remove_headers,
        compare,
        baseline,
        max_per_second: raw.max_per_second,
        grpc_methods,
    }
}

/// `mirror.grpc.methods`: each entry parsed, none twice.
fn grpc_methods(entries: &[String], errors: &mut ConfigErrors) -> Vec<MethodPattern> {
    if entries.is_empty() {
        errors.add(
            "mirror.grpc.methods",
            "is empty; list the methods without side effects, or leave mirror.grpc out to mirror no gRPC call",
        );
    }
    let mut out: Vec<MethodPattern> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("mirror.grpc.methods[{i}]");
        match MethodPattern::parse(entry) {
            Err(why) => errors.add(path, why),
            Ok(p) if out.iter().any(|o| o.as_str() == p.as_str()) => {
                errors.add(path, format!("{entry:?} is listed twice"))
            }
            Ok(p) => out.push(p),
        }
    }
    out
}

/// `mirror.baseline`, with `mirror.noise` (which applies only to it).
fn baseline(
    raw: RawBaseline,
    canary: &str,
    noise: Option<&Object<RawNoise>>,
    errors: &mut ConfigErrors,
) -> Baseline {
    if checks::cluster_name(
        "mirror.baseline.cluster",
        &raw.cluster,
        "the baseline (another deployment of the primary's version)",
        errors,
    ) && raw.cluster == canary
    {
        errors.add(
            "mirror.baseline.cluster",
            format!(
                "{:?} is mirror.cluster too; the baseline is another deployment of the primary's version, not the canary",
                raw.cluster
            ),
        );
    }
    let basis_points = checks::basis_points("mirror.baseline.percent", raw.percent, errors);
    let mut settings = NoiseSettings::default();
    if let Some(Object(n)) = noise {
        settings.min_samples = n.min_samples;
        settings.threshold = n.threshold;
        settings.window = n.window;
    }
    if let Err(problems) = settings.validate() {
        for p in problems {
            errors.add(format!("mirror.noise.{}", p.field), p.message);
        }
    }
    Baseline {
        cluster: raw.cluster,
        basis_points,
        noise: settings,
    }
}

/// `mirror.methods` as given: idempotent methods only, each once.
fn methods(names: &[String], errors: &mut ConfigErrors) -> Vec<Method> {
    if names.is_empty() {
        errors.add(
            "mirror.methods",
            format!("is empty; leave it out to mirror the idempotent methods ({IDEMPOTENT_LIST})"),
        );
    }
    let mut methods = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let path = format!("mirror.methods[{i}]");
        match Method::parse(name.as_bytes()) {
            Some(m @ (Method::Post | Method::Patch)) => errors.add(
                path,
                format!(
                    "{} is not idempotent: a mirrored {} runs twice; to mirror the ones that carry an idempotency key, set mirror.idempotency_key_header",
                    m.as_str(),
                    m.as_str()
                ),
            ),
            Some(Method::Connect) => {
                errors.add(path, "CONNECT opens a tunnel and is never mirrored")
            }
            Some(m) if methods.contains(&m) => errors.add(path, format!("{name:?} is listed twice")),
            Some(m) => methods.push(m),
            None => errors.add(
                path,
                format!(
                    "{name:?} is not a method known to be idempotent; use {IDEMPOTENT_LIST} (upper case)"
                ),
            ),
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use crate::compare::BodyMode;
    use crate::config::parse;
    use crate::mirror_policy::Method;
    use crate::request::BucketKey;

    fn errors_of(mirror: &str) -> Vec<String> {
        let json = format!(
            r#"{{"classification": {{"rules": [{{"class": "beta", "header": {{"name": "x-beta", "present": true}}}}]}}, "mirror": {mirror}}}"#
        );
        match parse(json.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(br#"{"mirror": {}}"#).unwrap();
        let m = c.mirror.unwrap();
        assert_eq!(m.cluster, "canary");
        assert_eq!(m.authority_suffix, "-shadow");
        assert_eq!(m.marker_header, "x-mirror");
        assert_eq!(m.basis_points, 10_000);
        assert_eq!(m.sample_key, None);
        assert_eq!(m.classes, None);
        assert!(m.include_paths.is_empty() && m.exclude_paths.is_empty());
        assert_eq!(m.methods, Method::IDEMPOTENT);
        assert_eq!(m.idempotency_key_header, None);
        assert_eq!(
            (m.timeout_ms, m.max_body_bytes, m.max_in_flight),
            (1000, 65536, 256)
        );
        assert!(m.remove_headers.is_empty());
        assert!(m.compare.headers.is_empty());
        assert_eq!(m.compare.body, BodyMode::Bytes);
        assert!(m.compare.ignore.is_empty());
        assert_eq!(m.compare.max_body_bytes, 262_144);
        assert!(m.compare.endpoints.is_empty());
        assert!(m.baseline.is_none());
        assert_eq!(m.max_per_second, 0);
        assert!(m.grpc_methods.is_empty(), "no gRPC call mirrored");
        let b = parse(br#"{"mirror": {"baseline": {"cluster": "primary"}}}"#)
            .unwrap()
            .mirror
            .unwrap()
            .baseline
            .unwrap();
        assert_eq!(
            (b.cluster.as_str(), b.basis_points, b.noise),
            ("primary", 10_000, crate::noise::NoiseSettings::default())
        );
        assert!(
            parse(b"{}").unwrap().mirror.is_none(),
            "no section, no mirroring"
        );
    }

    #[test]
    fn compiles_the_documented_example() {
        let json = r#"{
          "classification": {"rules": [{"class": "beta", "header": {"name": "x-beta", "present": true}}]},
          "mirror": {
            "cluster": "canary",
            "authority_suffix": "-shadow",
            "marker_header": "X-Mirror",
            "percent": 12.5,
            "sample_key": {"cookie": "uid"},
            "classes": ["beta", "stable"],
            "include_paths": ["/api/"],
            "exclude_paths": ["/api/logout", "/api/admin/"],
            "methods": ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"],
            "idempotency_key_header": "Idempotency-Key",
            "timeout_ms": 1000,
            "max_body_bytes": 65536,
            "max_in_flight": 256,
            "remove_headers": ["Authorization"],
            "compare": {
              "headers": ["Content-Type"],
              "body": "json",
              "ignore": ["/timestamp", "/items/*/id"],
              "max_body_bytes": 262144,
              "endpoints": [{"name": "balance", "path": "/api/accounts/{id}/balance"}]
            },
            "baseline": {"cluster": "primary", "percent": 50.5},
            "noise": {"min_samples": 10, "threshold": 0.1, "window": 100},
            "max_per_second": 50,
            "grpc": {"methods": ["/shop.v1.Catalog/Get*", "/shop.v1.Catalog/ListProducts", "/grpc.health.v1.Health/Check"]}
          }
        }"#;
        let m = parse(json.as_bytes()).unwrap().mirror.unwrap();
        assert_eq!(m.marker_header, "x-mirror");
        assert_eq!(m.basis_points, 1250);
        assert_eq!(m.sample_key, Some(BucketKey::Cookie("uid".into())));
        assert_eq!(
            m.classes,
            Some(vec![1, 0]),
            "class ids: stable is 0, beta 1"
        );
        assert_eq!(m.idempotency_key_header.as_deref(), Some("idempotency-key"));
        assert_eq!(m.remove_headers, ["authorization"]);
        assert_eq!(m.compare.headers, ["content-type"]);
        assert_eq!(m.compare.body, BodyMode::Json);
        let ignore: Vec<&str> = m.compare.ignore.iter().map(|p| p.as_str()).collect();
        assert_eq!(ignore, ["/timestamp", "/items/*/id"]);
        assert_eq!(
            m.compare.endpoints.find(b"/api/accounts/7/balance"),
            Some("balance")
        );
        let b = m.baseline.unwrap();
        assert_eq!((b.cluster.as_str(), b.basis_points), ("primary", 5050));
        assert_eq!(
            (b.noise.min_samples, b.noise.threshold, b.noise.window),
            (10, 0.1, 100)
        );
        assert_eq!(m.max_per_second, 50);
        let grpc: Vec<&str> = m.grpc_methods.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            grpc,
            [
                "/shop.v1.Catalog/Get*",
                "/shop.v1.Catalog/ListProducts",
                "/grpc.health.v1.Health/Check"
            ]
        );
        let protobuf =
            parse(br#"{"mirror": {"compare": {"body": "protobuf", "ignore": ["/1", "/2/*/3"]}}}"#)
                .unwrap()
                .mirror
                .unwrap()
                .compare;
        assert_eq!(protobuf.body, BodyMode::Protobuf);
        assert!(protobuf.ignore.is_empty());
        let ignore: Vec<&str> = protobuf
            .protobuf_ignore
            .iter()
            .map(|p| p.as_str())
            .collect();
        assert_eq!(ignore, ["/1", "/2/*/3"]);
    }

    /// Every error of the mirror section, with its exact text.
    #[test]
    fn error_messages() {
        let name_chars = "letters, digits and !#$%&'*+-.^_`|~ only";
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<String>)> = vec![
            (r#"[]"#, vec![
                "mirror: invalid type: sequence, expected a JSON object at line 1 column 108".into()]),
            (r#"{"clusetr": "c"}"#, vec![
                "mirror.clusetr: unknown field `clusetr`, expected one of `cluster`, `authority_suffix`, `marker_header`, `percent`, `sample_key`, `classes`, `include_paths`, `exclude_paths`, `methods`, `idempotency_key_header`, `timeout_ms`, `max_body_bytes`, `max_in_flight`, `remove_headers`, `compare`, `baseline`, `noise`, `max_per_second`, `grpc` at line 1 column 118".into()]),
            (r#"{"cluster": ""}"#, vec![
                "mirror.cluster: \"\" is not a cluster name; name the Envoy cluster of the canary (in Istio: outbound|PORT||HOST)".into()]),
            (r#"{"cluster": "a;b"}"#, vec![
                "mirror.cluster: \"a;b\" contains ';', which ends a tag in Envoy stat names: the canary_cluster label of the mirror metrics would be cut there".into()]),
            (r#"{"authority_suffix": ".shadow host"}"#, vec![
                "mirror.authority_suffix: \".shadow host\" cannot be part of a host name (letters, digits, '-', '.', '_', '~'; \"\" keeps the authority)".into()]),
            (r#"{"marker_header": "x mirror"}"#, vec![
                format!("mirror.marker_header: \"x mirror\" is not a valid HTTP header name ({name_chars})")]),
            (r#"{"marker_header": "X-User-Class"}"#, vec![
                "mirror.marker_header: \"X-User-Class\" is also the class or features header; give it a name of its own".into()]),
            (r#"{"percent": 100.5}"#, vec![
                "mirror.percent: 100.5 is not between 0 and 100".into()]),
            (r#"{"sample_key": {}}"#, vec![
                "mirror.sample_key: has no key; give exactly one of cookie, header".into()]),
            (r#"{"sample_key": {"cookie": "uid", "header": "x-id"}}"#, vec![
                "mirror.sample_key: sets both cookie and header; give exactly one of them as the key".into()]),
            (r#"{"sample_key": {"cookie": "u;id"}}"#, vec![
                format!("mirror.sample_key.cookie: \"u;id\" is not a valid cookie name (RFC 6265 token: {name_chars})")]),
            (r#"{"sample_key": {"header": "x:id"}}"#, vec![
                format!("mirror.sample_key.header: \"x:id\" is not a valid HTTP header name ({name_chars})")]),
            (r#"{"classes": ["beta", "betta", "beta"]}"#, vec![
                "mirror.classes[1]: no rule or default_class produces class \"betta\"".into(),
                "mirror.classes[2]: \"beta\" is listed twice".into()]),
            (r#"{"include_paths": ["api/"], "exclude_paths": ["/ok", ""]}"#, vec![
                "mirror.include_paths[0]: \"api/\" is not a path prefix; it must start with '/'".into(),
                "mirror.exclude_paths[1]: \"\" is not a path prefix; it must start with '/'".into()]),
            (r#"{"methods": ["GET", "POST", "PATCH", "CONNECT", "get", "PURGE", "GET"]}"#, vec![
                "mirror.methods[1]: POST is not idempotent: a mirrored POST runs twice; to mirror the ones that carry an idempotency key, set mirror.idempotency_key_header".into(),
                "mirror.methods[2]: PATCH is not idempotent: a mirrored PATCH runs twice; to mirror the ones that carry an idempotency key, set mirror.idempotency_key_header".into(),
                "mirror.methods[3]: CONNECT opens a tunnel and is never mirrored".into(),
                "mirror.methods[4]: \"get\" is not a method known to be idempotent; use GET, HEAD, OPTIONS, TRACE, PUT, DELETE (upper case)".into(),
                "mirror.methods[5]: \"PURGE\" is not a method known to be idempotent; use GET, HEAD, OPTIONS, TRACE, PUT, DELETE (upper case)".into(),
                "mirror.methods[6]: \"GET\" is listed twice".into()]),
            (r#"{"methods": []}"#, vec![
                "mirror.methods: is empty; leave it out to mirror the idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE)".into()]),
            (r#"{"idempotency_key_header": "idempotency key"}"#, vec![
                format!("mirror.idempotency_key_header: \"idempotency key\" is not a valid HTTP header name ({name_chars})")]),
            (r#"{"timeout_ms": 0}"#, vec![
                "mirror.timeout_ms: 0 is not between 1 and 60000".into()]),
            (r#"{"timeout_ms": 60001}"#, vec![
                "mirror.timeout_ms: 60001 is not between 1 and 60000".into()]),
            (r#"{"timeout_ms": -1}"#, vec![
                "mirror.timeout_ms: invalid value: integer `-1`, expected u32 at line 1 column 125".into()]),
            (r#"{"max_body_bytes": 16777217}"#, vec![
                "mirror.max_body_bytes: 16777217 is over the ceiling of 16777216 bytes (16 MiB)".into()]),
            (r#"{"max_in_flight": 0}"#, vec![
                "mirror.max_in_flight: 0 is not between 1 and 10000".into()]),
            (r#"{"remove_headers": ["authorization", "Authorization", ":path"]}"#, vec![
                "mirror.remove_headers[1]: \"Authorization\" is listed twice".into(),
                format!("mirror.remove_headers[2]: \":path\" is not a valid HTTP header name ({name_chars})")]),
            (r#"{"compare": {"body": "xml"}}"#, vec![
                "mirror.compare.body: unknown variant `xml`, expected one of `bytes`, `json`, `protobuf`, `none` at line 1 column 134".into()]),
            (r#"{"compare": {"headers": ["content type"]}}"#, vec![
                format!("mirror.compare.headers[0]: \"content type\" is not a valid HTTP header name ({name_chars})")]),
            (r#"{"compare": {"ignore": ["/timestamp"]}}"#, vec![
                "mirror.compare.ignore: applies only to JSON and protobuf bodies; set compare.body to \"json\" or \"protobuf\"".into()]),
            (r#"{"compare": {"body": "protobuf", "ignore": ["/2/*/1", "/timestamp", "2", "/", "/02"]}}"#, vec![
                "mirror.compare.ignore[1]: \"/timestamp\" is not a field-number pointer: \"timestamp\" is not a field number, an index or '*'".into(),
                "mirror.compare.ignore[2]: \"2\" is not a field-number pointer: it must start with '/' (e.g. \"/2\")".into(),
                "mirror.compare.ignore[3]: \"/\" would ignore the whole body; use compare.body \"none\" to skip body comparison".into(),
                "mirror.compare.ignore[4]: \"/02\" is not a field-number pointer: \"02\" is not a field number, an index or '*'".into()]),
            (r#"{"compare": {"body": "json", "ignore": ["timestamp", ""]}}"#, vec![
                "mirror.compare.ignore[0]: \"timestamp\" is not a JSON Pointer: it must start with '/' (e.g. \"/timestamp\")".into(),
                "mirror.compare.ignore[1]: \"\" would ignore the whole body; use compare.body \"none\" to skip body comparison".into()]),
            (r#"{"compare": {"max_body_bytes": 99999999}}"#, vec![
                "mirror.compare.max_body_bytes: 99999999 is over the ceiling of 16777216 bytes (16 MiB)".into()]),
            (r#"{"compare": {"endpoints": [{"name": "balance", "path": "/a/{id}/balance"}, {"name": "balance", "path": "a/{id"}, {"name": "other", "path": "/x/v{id}"}]}}"#, vec![
                "mirror.compare.endpoints[1].name: \"balance\" is the name of an earlier template too".into(),
                "mirror.compare.endpoints[1].path: \"a/{id\" must start with '/' (e.g. \"/a/{id\")".into(),
                "mirror.compare.endpoints[2].name: \"other\" is reserved for endpoints past the per-worker cap".into(),
                "mirror.compare.endpoints[2].path: \"/x/v{id}\" has \"v{id}\": a '{...}' must be a whole segment, as in /items/{id}".into()]),
            (r#"{"compare": {"endpoints": [{"name": "a;b", "path": "/x?y"}]}}"#, vec![
                "mirror.compare.endpoints[0].name: \"a;b\" cannot be a metric label: it has ';', '\"', '\\' or a control character".into(),
                "mirror.compare.endpoints[0].path: \"/x?y\" has a query or fragment; a template matches the path only".into()]),
            (r#"{"compare": {"endpoints": [{"path": "/x"}]}}"#, vec![
                "mirror.compare.endpoints[0]: missing field `name` at line 1 column 149".into()]),
            (r#"{"baseline": {}}"#, vec![
                "mirror.baseline: missing field `cluster` at line 1 column 123".into()]),
            (r#"{"baseline": {"cluster": "canary"}}"#, vec![
                "mirror.baseline.cluster: \"canary\" is mirror.cluster too; the baseline is another deployment of the primary's version, not the canary".into()]),
            (r#"{"baseline": {"cluster": "", "percent": 0.001}}"#, vec![
                "mirror.baseline.cluster: \"\" is not a cluster name; name the Envoy cluster of the baseline (another deployment of the primary's version) (in Istio: outbound|PORT||HOST)".into(),
                "mirror.baseline.percent: 0.001 has more than two decimals (the finest step is 0.01)".into()]),
            (r#"{"baseline": {"cluster": "primary", "percent": 101}}"#, vec![
                "mirror.baseline.percent: 101 is not between 0 and 100".into()]),
            (r#"{"noise": {"min_samples": 3}}"#, vec![
                "mirror.noise: applies only with mirror.baseline".into()]),
            (r#"{"baseline": {"cluster": "primary"}, "noise": {"min_samples": 0, "threshold": 0, "window": 10001}}"#, vec![
                "mirror.noise.min_samples: 0 is not at least 1".into(),
                "mirror.noise.threshold: 0 is not a fraction in (0, 1], e.g. 0.05 for 5%".into(),
                "mirror.noise.window: 10001 must be from min_samples (0) to 10000".into()]),
            (r#"{"baseline": {"cluster": "primary"}, "noise": {"min_samples": 500, "threshold": 1.5}}"#, vec![
                "mirror.noise.threshold: 1.5 is not a fraction in (0, 1], e.g. 0.05 for 5%".into(),
                "mirror.noise.window: 200 must be from min_samples (500) to 10000".into()]),
            (r#"{"baseline": {"cluster": "primary"}, "noise": {"windows": 5}}"#, vec![
                "mirror.noise.windows: unknown field `windows`, expected one of `min_samples`, `threshold`, `window` at line 1 column 164".into()]),
            (r#"{"max_per_second": 1000001}"#, vec![
                "mirror.max_per_second: 1000001 is over 1000000; 0 turns the limit off".into()]),
            (r#"{"grpc": {"methods": ["/shop.v1.Catalog/Get*", "shop.v1.Catalog/Get", "/shop.v1.*", "/shop.v1.Catalog/*Product", "/shop.v1.Catalog", "/shop.v1.Catalog/Get*"]}}"#, vec![
                "mirror.grpc.methods[1]: \"shop.v1.Catalog/Get\" is not a gRPC method: it must start with '/' (expected \"/package.Service/Method\", or a method prefix ending in '*' (\"/package.Service/Get*\"))".into(),
                "mirror.grpc.methods[2]: \"/shop.v1.*\" is not a gRPC method pattern: a wildcard may cover the methods of one service (\"/package.Service/*\"), not services".into(),
                "mirror.grpc.methods[3]: \"/shop.v1.Catalog/*Product\" is not a gRPC method pattern: '*' may only end the method name (e.g. \"/shop.v1.Catalog/Get*\")".into(),
                "mirror.grpc.methods[4]: \"/shop.v1.Catalog\" is not a gRPC method: it has no method part (expected \"/package.Service/Method\", or a method prefix ending in '*' (\"/package.Service/Get*\"))".into(),
                "mirror.grpc.methods[5]: \"/shop.v1.Catalog/Get*\" is listed twice".into()]),
            (r#"{"grpc": {"methods": ["/*/Get", "/shop.v1.Catalog/Get/x", "/shop..v1.Catalog/Get", "/shop.v1.Catalog/Get-Product"]}}"#, vec![
                "mirror.grpc.methods[0]: \"/*/Get\" is not a gRPC method pattern: a wildcard may cover the methods of one service (\"/package.Service/*\"), not services".into(),
                "mirror.grpc.methods[1]: \"/shop.v1.Catalog/Get/x\" is not a gRPC method: it has more than two '/'-separated parts (expected \"/package.Service/Method\", or a method prefix ending in '*' (\"/package.Service/Get*\"))".into(),
                "mirror.grpc.methods[2]: \"/shop..v1.Catalog/Get\" is not a gRPC method: \"shop..v1.Catalog\" is not a service name (identifiers separated by '.', e.g. \"shop.v1.Catalog\")".into(),
                "mirror.grpc.methods[3]: \"/shop.v1.Catalog/Get-Product\" is not a gRPC method: \"Get-Product\" is not a method name (an identifier such as \"GetProduct\", or a prefix of one ending in '*')".into()]),
            (r#"{"grpc": {"methods": []}}"#, vec![
                "mirror.grpc.methods: is empty; list the methods without side effects, or leave mirror.grpc out to mirror no gRPC call".into()]),
            (r#"{"grpc": {}}"#, vec![
                "mirror.grpc: missing field `methods` at line 1 column 119".into()]),
            (r#"{"grpc": {"methods": ["/a.B/C"], "streams": true}}"#, vec![
                "mirror.grpc.streams: unknown field `streams`, expected `methods` at line 1 column 150".into()]),
            (r#"{"grpc": ["/a.B/C"]}"#, vec![
                "mirror.grpc: invalid type: sequence, expected a JSON object at line 1 column 117".into()]),
            (r#"{"max_per_second": -1}"#, vec![
                "mirror.max_per_second: invalid value: integer `-1`, expected u32 at line 1 column 129".into()]),
        ];
        let mut failures = Vec::new();
        for (mirror, want) in cases {
            let got = errors_of(mirror);
            if got != want {
                failures.push(format!(
                    "mirror {mirror}\n  want {want:#?}\n  got  {got:#?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
