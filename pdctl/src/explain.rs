//! `pdctl explain`: one request through the filter's decisions, each made by the function the
//! filter calls (`Classification::classify`, `classify::holds`, `Request::bucket_id`,
//! `bucket`, `Mirror::plan`: `decide` then `copy_headers`), then said in words.

use std::cell::Cell;
use std::path::PathBuf;

use progressive_delivery::bucket::{bucket_of, in_cohort};
use progressive_delivery::classify::{self, Classification, Condition, Outcome, Source};
use progressive_delivery::config::Config;
use progressive_delivery::mirror_policy::{Decision, Mirror, SAMPLE_SEED};
use progressive_delivery::request::Request;
use serde::Serialize;

use crate::describe;
use crate::source;
use crate::{Format, Output};

pub const EXAMPLES: &str = "\
Examples:
  pdctl explain --config envoy.yaml -H 'x-beta: true' http://shop.example/api/cart
      the class (and the rule that decided it), the class and features headers, the mirror decision
  pdctl explain --config istio/routing/wasmplugin-sidecar.yaml --cookie uid=alice \\
      --show-copy http://api.shop/api/items?page=2
      also the headers the canary's copy would carry
  pdctl explain --config istio/ --name progressive-delivery-edge --format json http://shop.example/
      a directory or a file with several configurations: pick one by WasmPlugin or filter name

Envoy adds headers of its own before the filter runs (x-request-id, x-forwarded-proto, ...):
give them with -H when a rule reads them. Exit status: 0 explained, 1 the configuration is
invalid, 2 a file or an argument cannot be used.";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The configuration: any file `pdctl check` reads (or a directory of YAML files)
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Which configuration, when the file has several: a WasmPlugin's or an HTTP filter's name
    #[arg(long)]
    pub name: Option<String>,
    /// The request method
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// A request header, `name: value` (repeatable; `host` sets the authority)
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// A cookie, `name=value` (repeatable; sent as one cookie header)
    #[arg(long = "cookie", value_name = "NAME=VALUE")]
    pub cookies: Vec<String>,
    /// The id a first-time visitor is given in an `assign_cookie` cookie (default: random, as
    /// the filter draws it)
    #[arg(long, value_name = "ID")]
    pub new_id: Option<String>,
    /// Also print the headers the canary's copy would carry
    #[arg(long)]
    pub show_copy: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The request: `http://host[:port]/path?query`, or `/path?query` with `-H 'host: ...'`
    #[arg(value_name = "URL")]
    pub url: String,
}

#[derive(Serialize)]
struct Explanation {
    config: String,
    request: Vec<(String, String)>,
    class: String,
    decided_by: DecidedBy,
    rules: Vec<RuleResult>,
    buckets: Vec<BucketResult>,
    /// The class and features headers as the primary's request carries them (`null`: none;
    /// removed if the client sent one).
    headers: Vec<(String, Option<String>)>,
    /// Cookies set on the response for a first-time visitor: (name, id).
    assigned_cookies: Vec<(String, String)>,
    /// `null` when the configuration has no `mirror` section.
    mirror: Option<MirrorResult>,
}

#[derive(Serialize)]
struct DecidedBy {
    /// `rule`, `default` or `incoming` (the client's class header, trusted).
    source: &'static str,
    rule: Option<usize>,
    description: String,
}

#[derive(Serialize)]
struct RuleResult {
    index: usize,
    class: String,
    description: String,
    holds: bool,
}

#[derive(Serialize)]
struct BucketResult {
    rule: usize,
    key: String,
    seed: String,
    percent: String,
    /// A bucket below this is in the cohort.
    basis_points: u32,
    /// The user's id, `null` when the request has none (the rule does not hold).
    id: Option<String>,
    /// The id is the one just given to a first-time visitor.
    assigned: bool,
    bucket: Option<u32>,
    #[serde(rename = "in")]
    inside: bool,
}

#[derive(Serialize)]
struct MirrorResult {
    /// The `decision` label the filter counts for this request.
    decision: &'static str,
    reason: String,
    /// The request has no sample key and the percent is below 100: the filter draws at
    /// random, and `decision` is what it counts when the draw picks the request.
    random: bool,
    /// With --show-copy, for a mirrored request: the copy's headers, in order.
    copy: Option<Vec<(String, String)>>,
    /// `null` without `mirror.baseline`.
    baseline: Option<BaselineCopy>,
}

#[derive(Serialize)]
struct BaselineCopy {
    cluster: String,
    /// `baseline.percent`.
    percent: String,
    /// Which mirrored requests get a baseline copy.
    share: String,
    /// With --show-copy, for a mirrored request: the baseline's copy, the canary's identical.
    copy: Option<Vec<(String, String)>>,
}

pub fn run(args: &Args) -> Output {
    let (label, config) = match source::configuration(&args.config, args.name.as_deref()) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let headers = match request_headers(args) {
        Ok(h) => h,
        Err(e) => return Output::fail(2, e),
    };
    let explanation = explain(&label, &config, &headers, args);
    let mut out = Output::code(0);
    match args.format {
        Format::Json => out.json(&explanation),
        Format::Text => text(&explanation, &mut out),
    }
    out
}

/// The request headers as Envoy hands them to the filter: pseudo-headers from the method and
/// URL, then the headers given, lowercase names, values trimmed, then the cookies in one
/// `cookie` header.
fn request_headers(args: &Args) -> Result<Vec<(String, Vec<u8>)>, String> {
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|e| format!("URL {:?}: {e}; give http://HOST/PATH or /PATH", args.url))?;
    let mut authority = uri.authority().map(|a| a.as_str().to_string());
    let mut rest = Vec::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':').filter(|(n, _)| !n.trim().is_empty()) else {
            return Err(format!("-H {h:?}: give a header as 'name: value'"));
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        match name.as_str() {
            "host" => authority = Some(value),
            n if n.starts_with(':') => {
                return Err(format!(
                    "-H {h:?}: pseudo-headers come from the URL and --method"
                ))
            }
            _ => rest.push((name, value.into_bytes())),
        }
    }
    let Some(authority) = authority else {
        return Err(format!(
            "URL {:?} has no host: give http://HOST/PATH, or -H 'host: HOST'",
            args.url
        ));
    };
    if args.method.is_empty() || args.method.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!("--method {:?}: not an HTTP method", args.method));
    }
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut headers = vec![
        (":authority".to_string(), authority.into_bytes()),
        (":path".to_string(), path.as_bytes().to_vec()),
        (":method".to_string(), args.method.as_bytes().to_vec()),
        (
            ":scheme".to_string(),
            uri.scheme_str().unwrap_or("http").as_bytes().to_vec(),
        ),
    ];
    headers.extend(rest);
    if !args.cookies.is_empty() {
        for c in &args.cookies {
            if !c.contains('=') {
                return Err(format!("--cookie {c:?}: give a cookie as name=value"));
            }
        }
        headers.push(("cookie".to_string(), args.cookies.join("; ").into_bytes()));
    }
    Ok(headers)
}

/// 128 random bits as 32 hex digits: the shape of the id the filter gives a first-time visitor.
fn random_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn explain(
    label: &str,
    config: &Config,
    headers: &[(String, Vec<u8>)],
    args: &Args,
) -> Explanation {
    let c = &config.classification;
    let outcome = c.classify(headers, || args.new_id.clone().or_else(random_id));
    let class_name = |id| c.class(id).map_or_else(String::new, |k| k.name.clone());
    let view = c.rules_view(headers);
    let mut rules = Vec::new();
    let mut buckets = Vec::new();
    for (index, rule) in c.rules.iter().enumerate() {
        rules.push(RuleResult {
            index,
            class: class_name(rule.class),
            description: describe::rule(rule),
            holds: rule
                .conditions
                .iter()
                .all(|cond| classify::holds(cond, &view, &outcome.assigned)),
        });
        for cond in &rule.conditions {
            let Condition::Bucket(b) = cond else {
                continue;
            };
            let id = view.bucket_id(&b.key, &outcome.assigned);
            let sent = view.bucket_id(&b.key, &[]);
            buckets.push(BucketResult {
                rule: index,
                key: describe::key(&b.key),
                seed: b.seed.clone(),
                percent: describe::percent(b.basis_points),
                basis_points: b.basis_points,
                id: id.map(lossy),
                assigned: id.is_some() && sent.is_none(),
                bucket: id.map(|id| bucket_of(b.seed.as_bytes(), id)),
                inside: id.is_some_and(|id| in_cohort(b.seed.as_bytes(), id, b.basis_points)),
            });
        }
    }
    let decided_by = decided_by(c, &outcome, headers);
    let class_headers = c.class_headers(outcome.class);
    let mirror = config
        .mirror
        .as_ref()
        .map(|m| mirror(m, c, &outcome, headers, args.show_copy));
    Explanation {
        config: label.to_string(),
        request: headers.iter().map(|(n, v)| (n.clone(), lossy(v))).collect(),
        class: class_name(outcome.class),
        decided_by,
        rules,
        buckets,
        headers: class_headers
            .iter()
            .map(|(n, v)| ((*n).to_string(), v.map(lossy)))
            .collect(),
        assigned_cookies: outcome.assigned.clone(),
        mirror,
    }
}

fn decided_by(c: &Classification, outcome: &Outcome, headers: &[(String, Vec<u8>)]) -> DecidedBy {
    let sent: Vec<String> = Request::new(headers).values(&c.header).map(lossy).collect();
    let client_header = if sent.is_empty() {
        String::new()
    } else if c.trust_incoming_header {
        format!(
            "; the client's {} ({}) is not exactly one known class, so it was not trusted",
            c.header,
            sent.join(", ")
        )
    } else {
        format!(
            "; the client's {} ({}) was ignored: trust_incoming_header is false",
            c.header,
            sent.join(", ")
        )
    };
    match outcome.source {
        Source::Incoming => DecidedBy {
            source: "incoming",
            rule: None,
            description: format!(
                "the client's {} header (trust_incoming_header: true); no rule was evaluated",
                c.header
            ),
        },
        Source::Rule(i) => DecidedBy {
            source: "rule",
            rule: Some(i),
            description: format!(
                "rules[{i}]: {}{client_header}",
                c.rules.get(i).map(describe::rule).unwrap_or_default()
            ),
        },
        Source::Default => DecidedBy {
            source: "default",
            rule: None,
            description: format!(
                "{}: default_class{client_header}",
                if c.rules.is_empty() {
                    "no rules"
                } else {
                    "no rule holds"
                }
            ),
        },
    }
}

fn mirror(
    m: &Mirror,
    c: &Classification,
    outcome: &Outcome,
    headers: &[(String, Vec<u8>)],
    show_copy: bool,
) -> MirrorResult {
    // The filter draws a uniform bucket when the request has no sample key. Drawing 0 is a
    // draw that picks it: the decision below is then the one counted when the draw does.
    let drew = Cell::new(false);
    let draw = || {
        drew.set(true);
        Some(0)
    };
    let class_headers = c.class_headers(outcome.class);
    let decided = m.plan(
        headers,
        outcome.class,
        &outcome.assigned,
        &class_headers,
        draw,
    );
    let random = drew.get();
    let decision = match &decided {
        Ok(_) => Decision::Mirrored,
        Err(d) => *d,
    };
    let reason = reason(m, c, outcome, headers, decision, random);
    let copy = decided.ok().filter(|_| show_copy);
    let baseline = m.baseline.as_ref().map(|b| BaselineCopy {
        cluster: b.cluster.clone(),
        percent: describe::percent(b.basis_points),
        share: baseline_share(b.basis_points),
        copy: copy.clone(),
    });
    MirrorResult {
        decision: decision.as_str(),
        reason,
        random,
        copy,
        baseline,
    }
}

/// Which mirrored requests also go to the baseline: the session's share of `basis_points` in
/// turn on each worker (src/mirror_session.rs `baseline_sampled`), not a draw per request.
fn baseline_share(basis_points: u32) -> String {
    let all = progressive_delivery::bucket::BUCKETS;
    if basis_points >= all {
        return "every mirrored request".to_string();
    }
    if basis_points == 0 {
        return "no request (baseline.percent is 0)".to_string();
    }
    format!(
        "{}% of the mirrored requests, taken in turn on each worker (not by user)",
        describe::percent(basis_points)
    )
}

fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| s.as_ref().to_string()).collect();
    format!("[{}]", items.join(", "))
}

fn reason(
    m: &Mirror,
    c: &Classification,
    outcome: &Outcome,
    headers: &[(String, Vec<u8>)],
    decision: Decision,
    random: bool,
) -> String {
    let req = Request::new(headers);
    let first = |name: &str| req.values(name).next().map(lossy).unwrap_or_default();
    let class = c
        .class(outcome.class)
        .map_or_else(String::new, |k| k.name.clone());
    let percent = describe::percent(m.basis_points);
    let sampling = || {
        if m.basis_points >= progressive_delivery::bucket::BUCKETS {
            return "mirror.percent is 100".to_string();
        }
        if random {
            let key = m
                .sample_key
                .as_ref()
                .map_or("mirror.sample_key is not set".to_string(), |k| {
                    format!("the request has no {}", describe::key(k))
                });
            return format!("{key}: the filter draws at random, {percent}% of such requests");
        }
        let sticky = m.sample_key.as_ref().and_then(|k| {
            let id = req.bucket_id(k, &outcome.assigned)?;
            let bucket = bucket_of(SAMPLE_SEED, id);
            Some(format!(
                "{} {:?} is in bucket {bucket} of seed {:?}, {} {} ({percent}%)",
                describe::key(k),
                lossy(id),
                lossy(SAMPLE_SEED),
                if in_cohort(SAMPLE_SEED, id, m.basis_points) {
                    "below"
                } else {
                    "not below"
                },
                m.basis_points,
            ))
        });
        sticky.unwrap_or_else(|| format!("mirror.percent is {percent}"))
    };
    match decision {
        Decision::Mirrored => format!(
            "{}; the copy goes to cluster {:?} once the request body is in (at most {} bytes), \
             unless {} copies are already pending (overloaded)",
            sampling(),
            m.cluster,
            m.max_body_bytes,
            m.max_in_flight
        ),
        Decision::IsMirror => format!(
            "the request carries {}: it is a copy itself, and a copy is never copied again",
            m.marker_header
        ),
        Decision::NotIdempotent => format!(
            "{} is not one to copy: mirror.methods is {}; POST and PATCH {}; a method-override \
             header must name an allowed method too; upgrades (WebSocket) are never copied",
            first(":method"),
            list(m.methods.iter().map(|x| x.as_str())),
            m.idempotency_key_header.as_ref().map_or(
                "never (mirror.idempotency_key_header is not set)".to_string(),
                |h| format!("only with a non-empty {h} header")
            )
        ),
        Decision::PathExcluded => format!(
            "path {} is outside mirror.include_paths {} or under mirror.exclude_paths {}",
            first(":path"),
            list(&m.include_paths),
            list(&m.exclude_paths)
        ),
        Decision::ClassExcluded => format!(
            "class {class} is not in mirror.classes {}",
            list(
                m.classes
                    .iter()
                    .flatten()
                    .filter_map(|id| c.class(*id).map(|k| k.name.as_str()))
            )
        ),
        Decision::NotSampled => sampling(),
        Decision::BodyTooLarge => format!(
            "content-length {} is over mirror.max_body_bytes {}",
            first("content-length"),
            m.max_body_bytes
        ),
        Decision::HeaderNotUtf8 => {
            "a header of the copy is not UTF-8, and the callout carries text headers only".into()
        }
        Decision::GrpcNotDeclared => format!(
            "a gRPC call ({}) whose method is not in mirror.grpc.methods {}: only the methods \
             declared free of side effects are copied",
            first(":path"),
            list(m.grpc_methods.iter().map(|p| p.as_str()))
        ),
        Decision::Overloaded | Decision::DispatchFailed | Decision::RateLimited => {
            "decided at run time, never from the headers alone".into()
        }
    }
}

fn text(e: &Explanation, out: &mut Output) {
    let request = |name: &str| {
        e.request
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    out.line(format!("config       {}", e.config));
    out.line(format!(
        "request      {} {}://{}{}",
        request(":method"),
        request(":scheme"),
        request(":authority"),
        request(":path")
    ));
    out.line(format!("class        {}", e.class));
    out.line(format!("decided by   {}", e.decided_by.description));
    if !e.rules.is_empty() {
        out.line("rules        in order; the first that holds decides");
        for r in &e.rules {
            out.line(format!(
                "  rules[{}] -> {}: {}: {}",
                r.index,
                r.class,
                r.description,
                if r.holds { "holds" } else { "does not hold" }
            ));
        }
    }
    if !e.buckets.is_empty() {
        out.line("buckets");
    }
    for b in &e.buckets {
        let line = match (&b.id, b.bucket) {
            (Some(id), Some(bucket)) => format!(
                "  rules[{}]: {} = {id:?}{}: bucket {bucket} of seed {:?}, {} ({}% = below {})",
                b.rule,
                b.key,
                if b.assigned {
                    " (given now to a first-time visitor)"
                } else {
                    ""
                },
                b.seed,
                if b.inside { "in" } else { "out" },
                b.percent,
                b.basis_points
            ),
            _ => format!(
                "  rules[{}]: no {} in the request: no bucket, the rule does not hold",
                b.rule, b.key
            ),
        };
        out.line(line);
    }
    for (i, (name, value)) in e.headers.iter().enumerate() {
        let head = if i == 0 {
            "headers     "
        } else {
            "            "
        };
        match value {
            Some(v) => out.line(format!("{head} {name}: {v}")),
            None => out.line(format!(
                "{head} {name}: (none; removed if the client sent it)"
            )),
        }
    }
    for (name, id) in &e.assigned_cookies {
        out.line(format!(
            "set-cookie   {name}={id} (a first-time visitor; the filter sets it on the response)"
        ));
    }
    match &e.mirror {
        None => out.line("mirror       no mirror section: nothing is mirrored"),
        Some(m) => {
            let verdict = if m.decision == Decision::Mirrored.as_str() {
                if m.random {
                    "mirrored when drawn".to_string()
                } else {
                    "mirrored".to_string()
                }
            } else {
                format!("not mirrored ({})", m.decision)
            };
            out.line(format!("mirror       {verdict}: {}", m.reason));
            if let Some(copy) = &m.copy {
                out.line("copy         the headers the canary receives (and Envoy's own, e.g. x-request-id)");
                for (n, v) in copy {
                    out.line(format!("  {n}: {v}"));
                }
            }
            if let Some(b) = &m.baseline {
                if m.decision == Decision::Mirrored.as_str() {
                    out.line(format!(
                        "baseline     cluster {:?} gets the identical copy for {} (baseline.percent {})",
                        b.cluster, b.share, b.percent
                    ));
                } else {
                    out.line(format!(
                        "baseline     cluster {:?}: no copy, the request is not mirrored",
                        b.cluster
                    ));
                }
                if let Some(copy) = &b.copy {
                    out.line(format!(
                        "baseline copy  the headers cluster {:?} receives: the canary's copy, identical",
                        b.cluster
                    ));
                    for (n, v) in copy {
                        out.line(format!("  {n}: {v}"));
                    }
                }
            }
        }
    }
}
