//! `pdctl report`: the rollout review, from a real Prometheus scraping the proxies. The metric
//! and label names are the filter's (`progressive_delivery::metrics`), the result and
//! decision values its label enums, and the mismatch ratio the one the Flagger and Argo
//! templates compute: mismatches and failed copies over every comparison but `skipped`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use progressive_delivery::compare::Outcome;
use progressive_delivery::metrics::{
    self, BASELINE_DURATION_MS, BASELINE_TOTAL, COMPARISONS_TOTAL, DIFFERENCES_TOTAL,
    MIRROR_DURATION_MS, MIRROR_TOTAL, PRIMARY_DURATION_MS,
};
use serde::Serialize;
use serde_json::Value;

use crate::{html, Format, Output};

pub const EXAMPLES: &str = "\
Examples:
  kubectl -n istio-system port-forward svc/prometheus 9090 &
  pdctl report --prometheus http://127.0.0.1:9090 \\
      --canary 'outbound|80||checkout-canary.shop.svc.cluster.local' --window 1h
      decisions, results, the mismatch ratio with and without noise, per endpoint the
      differing elements, latency of the canary against the baseline
  pdctl report --prometheus http://127.0.0.1:9090 --canary canary --html review.html
      also one self-contained page with tables and charts (opens offline)

Counts are each series' increase over the window, exact (the latest value less the one at
the window's start, 0 for a series born within it; a proxy restarted within the window counts
from its restart). Exit status: 0 reported, 2 Prometheus cannot be reached or answers an error,
or an option cannot be used.";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Prometheus' base URL, e.g. http://127.0.0.1:9090 (plain HTTP)
    #[arg(long, value_name = "URL")]
    pub prometheus: String,
    /// The canary's cluster: the `canary_cluster` label (mirror.cluster; in Istio
    /// outbound|PORT||HOST)
    #[arg(long, value_name = "CLUSTER")]
    pub canary: String,
    /// How far back: a Prometheus duration (30m, 2h, 1d)
    #[arg(long, default_value = "30m")]
    pub window: String,
    /// Also write the review as one self-contained HTML page with charts
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Differing elements listed per endpoint
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// The review, as `--format json` prints it and the HTML page shows it.
#[derive(Serialize)]
pub struct Review {
    pub prometheus: String,
    pub canary: String,
    pub window: String,
    /// Mirror decisions by `decision`, every value (0 included).
    pub decisions: Vec<(String, u64)>,
    /// Comparison results by `result`, every value.
    pub results: Vec<(String, u64)>,
    /// Comparisons that count: every result but `skipped`.
    pub comparisons: u64,
    /// Mismatches and failed copies: the numerator of the templates' ratio.
    pub mismatches: u64,
    pub noise: u64,
    /// mismatches / comparisons, `null` with no comparison: noise is agreement (the canary
    /// differed from the baseline only where two healthy instances differ too).
    pub mismatch_ratio: Option<f64>,
    /// (mismatches + noise) / comparisons: the ratio if noise counted against the canary, as
    /// it would without a baseline's noise cancellation.
    pub mismatch_ratio_without_noise_cancellation: Option<f64>,
    /// Copies to the baseline by `result`; empty without a baseline.
    pub baseline: Vec<(String, u64)>,
    pub endpoints: Vec<Endpoint>,
    pub latency: Latency,
}

#[derive(Serialize)]
pub struct Endpoint {
    pub endpoint: String,
    /// Differing elements counted as mismatches (one per element per comparison).
    pub mismatch_differences: u64,
    /// Differing elements counted as noise.
    pub noise_differences: u64,
    /// The elements that differed most, mismatches first.
    pub top: Vec<Element>,
}

#[derive(Serialize)]
pub struct Element {
    pub element: String,
    pub mismatch: u64,
    pub noise: u64,
}

#[derive(Serialize)]
pub struct Latency {
    /// `baseline`, or `primary` when no copy went to a baseline in the window.
    pub reference: &'static str,
    /// Copies the canary answered (its histogram's count).
    pub canary_samples: u64,
    pub reference_samples: u64,
    pub canary_p50_ms: Option<f64>,
    pub canary_p99_ms: Option<f64>,
    pub reference_p50_ms: Option<f64>,
    pub reference_p99_ms: Option<f64>,
    /// canary p99 / reference p99, the latency template's ratio.
    pub p99_ratio: Option<f64>,
}

pub fn run(args: &Args) -> Output {
    if !valid_duration(&args.window) {
        return Output::fail(
            2,
            format!(
                "--window {:?}: not a Prometheus duration; give e.g. 30m, 2h or 1d",
                args.window
            ),
        );
    }
    if !args.prometheus.starts_with("http://") {
        return Output::fail(
            2,
            format!(
                "--prometheus {:?}: give a plain-HTTP URL, e.g. http://127.0.0.1:9090 (a port-forward to Prometheus)",
                args.prometheus
            ),
        );
    }
    let prom = Prom::new(&args.prometheus, &args.canary, &args.window);
    let review = match review(&prom, args) {
        Ok(r) => r,
        Err(e) => return Output::fail(2, e),
    };
    let mut out = Output::code(0);
    if let Some(path) = &args.html {
        let page = html::page(&review);
        if let Err(e) = std::fs::write(path, page) {
            return Output::fail(2, format!("{}: {e}", path.display()));
        }
    }
    match args.format {
        Format::Json => out.json(&review),
        Format::Text => text(&review, &mut out),
    }
    if let Some(path) = &args.html {
        out.err(format!("wrote {}", path.display()));
    }
    out
}

/// A Prometheus duration: one or more number-unit pairs (`1h30m`).
fn valid_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = rest.get(digits..).unwrap_or_default();
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = rest.get(u.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    true
}

/// One series of an instant query: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

struct Prom {
    agent: ureq::Agent,
    url: String,
    canary: String,
    window: String,
}

impl Prom {
    fn new(base: &str, canary: &str, window: &str) -> Prom {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        Prom {
            agent,
            url: format!("{}/api/v1/query", base.trim_end_matches('/')),
            canary: canary.to_string(),
            window: window.to_string(),
        }
    }

    /// The series `name{canary_cluster="...", extra}`.
    fn selector(&self, name: &str, extra: &str) -> String {
        let mut s = format!(
            "{name}{{{}=\"{}\"",
            metrics::CANARY_CLUSTER,
            promql_string(&self.canary)
        );
        if !extra.is_empty() {
            s.push(',');
            s.push_str(extra);
        }
        s.push('}');
        s
    }

    /// Each series' increase over the window, exact: the latest value less the one a window
    /// ago, or all of it for a series born since (or counting again since a restart).
    fn increase(&self, series: &str) -> String {
        format!(
            "(({series} - ({series} offset {w} or {series} * 0)) >= 0 or {series} * 1)",
            w = self.window
        )
    }

    fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let mut response = self
            .agent
            .get(&self.url)
            .query("query", promql)
            .call()
            .map_err(|e| format!("cannot query Prometheus at {}: {e}", self.url))?;
        let status = response.status();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("reading Prometheus' answer: {e}"))?;
        let json: Value = serde_json::from_str(&body).map_err(|_| {
            format!(
                "{} answered HTTP {status}, not the Prometheus API's JSON: is it Prometheus?",
                self.url
            )
        })?;
        if json.get("status").and_then(Value::as_str) != Some("success") {
            return Err(format!(
                "Prometheus refused the query ({}: {}): {promql}",
                json.get("errorType").and_then(Value::as_str).unwrap_or("?"),
                json.get("error").and_then(Value::as_str).unwrap_or("?")
            ));
        }
        let result = json
            .pointer("/data/result")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::new();
        for r in result {
            let labels = r
                .get("metric")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = r
                .pointer("/value/1")
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            out.push((labels, value));
        }
        Ok(out)
    }

    /// Increases over the window summed by the `by` labels, keyed by their values.
    fn counts(&self, name: &str, by: &[&str]) -> Result<Vec<(Vec<String>, u64)>, String> {
        let q = format!(
            "sum by ({}) ({})",
            by.join(", "),
            self.increase(&self.selector(name, ""))
        );
        Ok(self
            .query(&q)?
            .into_iter()
            .map(|(labels, v)| {
                let key = by
                    .iter()
                    .map(|l| labels.get(*l).cloned().unwrap_or_default())
                    .collect();
                (key, count(v))
            })
            .collect())
    }

    /// The `q` quantile of a histogram over the window, and its sample count.
    fn quantiles(&self, name: &str) -> Result<(u64, Option<f64>, Option<f64>), String> {
        let bucket = self.increase(&self.selector(&format!("{name}_bucket"), ""));
        let samples = self.increase(&self.selector(&format!("{name}_count"), ""));
        let n = self
            .query(&format!("sum({samples})"))?
            .first()
            .map_or(0, |(_, v)| count(*v));
        let mut q = Vec::new();
        for phi in ["0.5", "0.99"] {
            let got = self
                .query(&format!(
                    "histogram_quantile({phi}, sum by (le) ({bucket}))"
                ))?
                .first()
                .map(|(_, v)| *v)
                .filter(|v| v.is_finite());
            q.push(if n == 0 { None } else { got });
        }
        Ok((n, q.first().copied().flatten(), q.get(1).copied().flatten()))
    }
}

/// A counter's increase as a whole count: the exact increase is an integer, carried as a float.
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// `s` inside a PromQL double-quoted string.
fn promql_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn by_value(found: &[(Vec<String>, u64)], names: &[&str]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = names
        .iter()
        .map(|n| {
            let total = found
                .iter()
                .filter(|(k, _)| k.first().map(String::as_str) == Some(n))
                .map(|(_, v)| *v)
                .sum();
            ((*n).to_string(), total)
        })
        .collect();
    // A value this pdctl does not know (a newer filter): shown, not dropped.
    for (k, v) in found {
        let name = k.first().cloned().unwrap_or_default();
        if !names.contains(&name.as_str()) && *v > 0 {
            out.push((name, *v));
        }
    }
    out
}

fn review(prom: &Prom, args: &Args) -> Result<Review, String> {
    use progressive_delivery::mirror_policy::Decision;
    let decision_names: Vec<&str> = Decision::ALL.iter().map(|d| d.as_str()).collect();
    let result_names: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
    let decisions = by_value(
        &prom.counts(MIRROR_TOTAL.name, &[metrics::DECISION])?,
        &decision_names,
    );
    let results = by_value(
        &prom.counts(COMPARISONS_TOTAL.name, &[metrics::RESULT])?,
        &result_names,
    );
    let of = |o: Outcome| {
        results
            .iter()
            .find(|(n, _)| n == o.as_str())
            .map_or(0, |(_, v)| *v)
    };
    let total: u64 = results.iter().map(|(_, v)| v).sum();
    let comparisons = total.saturating_sub(of(Outcome::Skipped));
    let mismatches = [
        Outcome::StatusMismatch,
        Outcome::HeaderMismatch,
        Outcome::BodyMismatch,
        Outcome::MirrorError,
        Outcome::MirrorTimeout,
    ]
    .into_iter()
    .map(of)
    .sum::<u64>();
    let noise = of(Outcome::Noise);
    let ratio = |n: u64| (comparisons > 0).then(|| n as f64 / comparisons as f64);
    let baseline_found = prom.counts(BASELINE_TOTAL.name, &[metrics::RESULT])?;
    let baseline = baseline_found
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| (k.first().cloned().unwrap_or_default(), *v))
        .collect();
    let endpoints = endpoints(
        &prom.counts(
            DIFFERENCES_TOTAL.name,
            &[metrics::ENDPOINT, metrics::ELEMENT, metrics::KIND],
        )?,
        args.top,
    );
    let (canary_samples, canary_p50, canary_p99) = prom.quantiles(MIRROR_DURATION_MS.name)?;
    let (baseline_samples, baseline_p50, baseline_p99) =
        prom.quantiles(BASELINE_DURATION_MS.name)?;
    let (reference, reference_samples, reference_p50, reference_p99) = if baseline_samples > 0 {
        ("baseline", baseline_samples, baseline_p50, baseline_p99)
    } else {
        let (n, p50, p99) = prom.quantiles(PRIMARY_DURATION_MS.name)?;
        ("primary", n, p50, p99)
    };
    let p99_ratio = match (canary_p99, reference_p99) {
        (Some(c), Some(r)) if r > 0.0 => Some(c / r),
        _ => None,
    };
    Ok(Review {
        prometheus: args.prometheus.clone(),
        canary: args.canary.clone(),
        window: args.window.clone(),
        decisions,
        results,
        comparisons,
        mismatches,
        noise,
        mismatch_ratio: ratio(mismatches),
        mismatch_ratio_without_noise_cancellation: ratio(mismatches.saturating_add(noise)),
        baseline,
        endpoints,
        latency: Latency {
            reference,
            canary_samples,
            reference_samples,
            canary_p50_ms: canary_p50,
            canary_p99_ms: canary_p99,
            reference_p50_ms: reference_p50,
            reference_p99_ms: reference_p99,
            p99_ratio,
        },
    })
}

/// Per endpoint, from `(endpoint, element, kind)` counts: most mismatches first.
fn endpoints(found: &[(Vec<String>, u64)], top: usize) -> Vec<Endpoint> {
    let mut by: BTreeMap<&str, BTreeMap<&str, (u64, u64)>> = BTreeMap::new();
    for (k, v) in found {
        let (Some(endpoint), Some(element), Some(kind)) = (k.first(), k.get(1), k.get(2)) else {
            continue;
        };
        if *v == 0 {
            continue;
        }
        let e = by
            .entry(endpoint)
            .or_default()
            .entry(element)
            .or_insert((0, 0));
        if kind == "noise" {
            e.1 = e.1.saturating_add(*v);
        } else {
            e.0 = e.0.saturating_add(*v);
        }
    }
    let mut out: Vec<Endpoint> = by
        .into_iter()
        .map(|(endpoint, elements)| {
            let mut list: Vec<Element> = elements
                .into_iter()
                .map(|(element, (mismatch, noise))| Element {
                    element: element.to_string(),
                    mismatch,
                    noise,
                })
                .collect();
            let mismatch_differences = list.iter().map(|e| e.mismatch).sum();
            let noise_differences = list.iter().map(|e| e.noise).sum();
            list.sort_by(|a, b| {
                (b.mismatch, b.noise)
                    .cmp(&(a.mismatch, a.noise))
                    .then_with(|| a.element.cmp(&b.element))
            });
            list.truncate(top);
            Endpoint {
                endpoint: endpoint.to_string(),
                mismatch_differences,
                noise_differences,
                top: list,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (b.mismatch_differences, b.noise_differences)
            .cmp(&(a.mismatch_differences, a.noise_differences))
            .then_with(|| a.endpoint.cmp(&b.endpoint))
    });
    out
}

pub fn percent(r: Option<f64>) -> String {
    r.map_or("n/a (no comparison)".to_string(), |r| {
        format!("{:.2}%", r * 100.0)
    })
}

pub fn ms(v: Option<f64>) -> String {
    v.map_or("n/a".to_string(), |v| format!("{v:.1} ms"))
}

fn text(r: &Review, out: &mut Output) {
    out.line(format!(
        "canary       {} (Prometheus {}, last {})",
        r.canary, r.prometheus, r.window
    ));
    let nonzero = |list: &[(String, u64)]| {
        let shown: Vec<String> = list
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join(", ")
        }
    };
    out.line(format!("decisions    {}", nonzero(&r.decisions)));
    out.line(format!("results      {}", nonzero(&r.results)));
    out.line(format!(
        "mismatches   {} of {} comparisons (every result but skipped): {}",
        r.mismatches,
        r.comparisons,
        percent(r.mismatch_ratio)
    ));
    out.line(format!(
        "             {} if the {} noise results counted against the canary (without noise cancellation)",
        percent(r.mismatch_ratio_without_noise_cancellation),
        r.noise
    ));
    if !r.baseline.is_empty() {
        out.line(format!("baseline     {}", nonzero(&r.baseline)));
    }
    let l = &r.latency;
    out.line(format!(
        "latency      canary p50 {} p99 {} ({} answers); {} p50 {} p99 {} ({}); p99 ratio {}",
        ms(l.canary_p50_ms),
        ms(l.canary_p99_ms),
        l.canary_samples,
        l.reference,
        ms(l.reference_p50_ms),
        ms(l.reference_p99_ms),
        l.reference_samples,
        l.p99_ratio.map_or("n/a".to_string(), |x| format!("{x:.2}"))
    ));
    if r.endpoints.is_empty() {
        out.line("endpoints    no differing element counted");
        return;
    }
    out.line("endpoints    differing elements per endpoint (one per element per comparison)");
    let width = r
        .endpoints
        .iter()
        .flat_map(|e| {
            std::iter::once(e.endpoint.len())
                .chain(e.top.iter().map(|t| t.element.len().saturating_add(2)))
        })
        .max()
        .unwrap_or(8)
        .max(8);
    out.line(format!(
        "  {:<width$}  {:>8}  {:>8}",
        "endpoint", "mismatch", "noise"
    ));
    for e in &r.endpoints {
        out.line(format!(
            "  {:<width$}  {:>8}  {:>8}",
            e.endpoint, e.mismatch_differences, e.noise_differences
        ));
        for t in &e.top {
            out.line(format!(
                "    {:<w2$}  {:>8}  {:>8}",
                t.element,
                t.mismatch,
                t.noise,
                w2 = width.saturating_sub(2)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, ok) in [
            ("30m", true),
            ("1h30m", true),
            ("90s", true),
            ("500ms", true),
            ("1d", true),
            ("", false),
            ("30", false),
            ("m", false),
            ("30min", false),
            ("-5m", false),
            ("5m;", false),
        ] {
            assert_eq!(valid_duration(s), ok, "{s:?}");
        }
    }

    #[test]
    fn endpoints_sorted_and_cut() {
        let row =
            |e: &str, el: &str, k: &str, v| (vec![e.to_string(), el.to_string(), k.to_string()], v);
        let found = vec![
            row("GET /a", "/x", "mismatch", 3),
            row("GET /a", "/y", "noise", 7),
            row("GET /a", "/x", "noise", 1),
            row("GET /a", "/z", "mismatch", 0),
            row("GET /b", "status", "mismatch", 9),
            row("GET /c", "/t", "noise", 2),
        ];
        let got = endpoints(&found, 1);
        let summary: Vec<(&str, u64, u64, Vec<&str>)> = got
            .iter()
            .map(|e| {
                (
                    e.endpoint.as_str(),
                    e.mismatch_differences,
                    e.noise_differences,
                    e.top.iter().map(|t| t.element.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("GET /b", 9, 0, vec!["status"]),
                ("GET /a", 3, 8, vec!["/x"]),
                ("GET /c", 0, 2, vec!["/t"]),
            ]
        );
    }
}
