//! `pdctl diff`: two or three recorded answers compared as the filter compares them, by the
//! filter's own functions: `Answer::from_response` (the capture and gzip/deflate decoding of
//! src/compare.rs and src/decode.rs), `compare::differences`, the noise learner of
//! src/noise.rs (`observe`, `judge`) and `compare::judged_verdict`. pdctl lists every
//! difference where the filter's log line names the first.

use std::path::{Path, PathBuf};

use progressive_delivery::compare::{self, Answer, CompareSpec, Differences, Outcome, Verdict};
use progressive_delivery::mirror_policy::Mirror;
use progressive_delivery::noise::{Judgement, NoiseLearner, NoiseSettings};
use serde::Serialize;

use crate::source;
use crate::{Format, Output};

pub const EXAMPLES: &str = "\
Examples:
  curl -si http://primary/api/items/1 > primary.txt; curl -si http://canary/api/items/1 > canary.txt
  pdctl diff --config envoy.yaml primary.txt canary.txt
      the result the filter counts, and every element the answers differ on
  pdctl diff --config envoy.yaml primary.txt canary.txt --baseline baseline.txt
      with a baseline: where primary and baseline differ is noise; the canary is judged
      against the baseline, as on an endpoint's first comparison and after warm-up
  pdctl diff --config envoy.yaml primary.txt canary.txt --baseline baseline.txt --assume-learned
      the result (and the exit status) after warm-up

An answer file is a body alone (status 200, no headers), or a response as `curl -i` writes it:
status line (HTTP/1.1 or HTTP/2), headers, blank line, body; CRLF or LF. A body the headers say
is gzip or deflate is decoded as the filter decodes it.
Exit status: 0 the answers agree (match, or noise only), 1 a mismatch, 3 not compared
(skipped), 2 a file, an option or the configuration cannot be used.";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The configuration: any file `pdctl check` reads (or a directory of YAML files); its
    /// `mirror.compare` decides what is compared
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Which configuration, when the file has several: a WasmPlugin's or an HTTP filter's name
    #[arg(long)]
    pub name: Option<String>,
    /// The primary's answer
    #[arg(value_name = "PRIMARY")]
    pub primary: PathBuf,
    /// The canary's answer
    #[arg(value_name = "CANARY")]
    pub canary: PathBuf,
    /// The baseline's answer (another instance of the primary's version): how it differs from
    /// the primary is noise, and the canary is judged against it
    #[arg(long, value_name = "BASELINE")]
    pub baseline: Option<PathBuf>,
    /// With --baseline: give the result (and exit status) the filter reaches after warm-up,
    /// when its first `noise.min_samples` comparisons of the endpoint all differed as primary
    /// and baseline do here
    #[arg(long, requires = "baseline")]
    pub assume_learned: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// The endpoint every observation here is made on: one request, one endpoint.
const ENDPOINT: &str = "diff";

#[derive(Serialize)]
struct Report {
    config: String,
    compare: CompareSettings,
    answers: Vec<AnswerSummary>,
    /// `primary` (no baseline) or `baseline`: what the canary is judged against.
    judged_against: &'static str,
    /// The `result` label the filter counts for this comparison.
    result: &'static str,
    /// The detail of its log line: the first difference that counts, or why not compared.
    detail: String,
    /// The element the log line names (`element=`), for a mismatch.
    element: Option<String>,
    /// Every difference of the canary, in comparison order, ignored ones included.
    differences: Vec<Difference>,
    /// The bodies were not compared, and why.
    body_skipped: Option<String>,
    /// With --baseline.
    noise: Option<NoiseReport>,
}

#[derive(Serialize)]
struct CompareSettings {
    body: &'static str,
    headers: Vec<String>,
    ignore: Vec<String>,
    max_body_bytes: usize,
}

#[derive(Serialize)]
struct AnswerSummary {
    role: &'static str,
    file: String,
    status: u16,
    /// The file had a status line and headers (`curl -i`); without, status 200 is assumed.
    head: bool,
    content_encoding: Option<String>,
    body_bytes: usize,
}

#[derive(Serialize, Clone)]
struct Difference {
    element: String,
    /// `status_mismatch`, `header_mismatch` or `body_mismatch`.
    kind: &'static str,
    detail: String,
    /// `ignore` (a `compare.ignore` pointer skips it), `noise` (learned as noise), or `null`:
    /// it counts.
    covered_by: Option<&'static str>,
    /// The `compare.ignore` pointer that skips it.
    ignore: Option<String>,
    /// With --baseline: primary and baseline differ on this element too.
    healthy_instances_differ: Option<bool>,
}

#[derive(Serialize)]
struct NoiseReport {
    min_samples: u32,
    threshold: f64,
    /// Where primary and baseline, two healthy instances, differ: one noise observation.
    observed: Vec<Difference>,
    /// The verdict on an endpoint's first comparisons: fewer than min_samples observations,
    /// so nothing is noise yet (unless min_samples is 1).
    first_comparison: VerdictReport,
    /// The verdict once min_samples comparisons of the endpoint all showed these
    /// differences between primary and baseline.
    after_warm_up: VerdictReport,
    /// `result` is `after_warm_up`'s (--assume-learned), not `first_comparison`'s.
    assume_learned: bool,
}

#[derive(Serialize, Clone)]
struct VerdictReport {
    result: &'static str,
    detail: String,
    element: Option<String>,
    /// Elements judged noise.
    noise: Vec<String>,
}

pub fn run(args: &Args) -> Output {
    let (label, config) = match source::configuration(&args.config, args.name.as_deref()) {
        Ok(found) => found,
        // An invalid configuration is status 2 here: 1 is a mismatch.
        Err(mut e) => {
            e.code = 2;
            return e;
        }
    };
    let Some(mirror) = config.mirror else {
        return Output::fail(
            2,
            format!("{label}: no mirror section: the filter compares nothing"),
        );
    };
    let mut files = vec![("primary", &args.primary), ("canary", &args.canary)];
    if let Some(b) = &args.baseline {
        files.push(("baseline", b));
    }
    let mut recorded = Vec::new();
    for (role, path) in files {
        match read_answer(path) {
            Ok(r) => recorded.push((role, path, r)),
            Err(e) => return Output::fail(2, format!("{} ({role}): {e}", path.display())),
        }
    }
    let report = compare_all(&label, &mirror, &recorded, args.assume_learned);
    let code = match Outcome::ALL.iter().find(|o| o.as_str() == report.result) {
        Some(Outcome::Match | Outcome::Noise) => 0,
        Some(Outcome::Skipped) => 3,
        _ => 1,
    };
    let mut out = Output::code(code);
    match args.format {
        Format::Json => out.json(&report),
        Format::Text => text(&report, &mut out),
    }
    out
}

/// A recorded answer: the headers as the filter sees them (`:status` first, lowercase names)
/// and the body as it came.
pub struct Recorded {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    head: bool,
}

fn read_answer(path: &Path) -> Result<Recorded, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    parse_answer(&bytes)
}

/// A body alone, or `curl -i`'s output: status line, headers, blank line, body. Interim
/// answers (`100 Continue`, `103 Early Hints`) before the final one are skipped.
pub fn parse_answer(bytes: &[u8]) -> Result<Recorded, String> {
    if !bytes.starts_with(b"HTTP/") {
        return Ok(Recorded {
            headers: vec![(":status".to_string(), b"200".to_vec())],
            body: bytes.to_vec(),
            head: false,
        });
    }
    let mut rest = bytes;
    loop {
        let (head, body) = split_head(rest).ok_or(
            "a status line but no blank line after the headers: give the whole `curl -i` output",
        )?;
        let mut lines = head
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(|b| *b == b' ')
            .nth(1)
            .filter(|code| code.len() == 3 && code.iter().all(u8::is_ascii_digit))
            .ok_or_else(|| {
                format!(
                    "status line {:?} has no status code",
                    String::from_utf8_lossy(status_line)
                )
            })?;
        if status.starts_with(b"1") && body.starts_with(b"HTTP/") {
            rest = body;
            continue;
        }
        let mut headers = vec![(":status".to_string(), status.to_vec())];
        for line in lines {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                return Err(format!(
                    "header line {:?} has no colon",
                    String::from_utf8_lossy(line)
                ));
            };
            let (name, value) = line.split_at(colon);
            let name = String::from_utf8_lossy(name.trim_ascii()).to_ascii_lowercase();
            let value = value.get(1..).unwrap_or_default().trim_ascii().to_vec();
            headers.push((name, value));
        }
        return Ok(Recorded {
            headers,
            body: body.to_vec(),
            head: true,
        });
    }
}

/// The head (without its blank line) and what follows, at the first blank line, CRLF or LF.
fn split_head(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let (at, len) = match (crlf, lf) {
        (Some(c), Some(l)) => {
            if c.0 < l.0 {
                c
            } else {
                l
            }
        }
        (c, l) => c.or(l)?,
    };
    Some((bytes.get(..at)?, bytes.get(at.checked_add(len)?..)?))
}

fn compare_all(
    label: &str,
    mirror: &Mirror,
    recorded: &[(&'static str, &PathBuf, Recorded)],
    assume_learned: bool,
) -> Report {
    let spec = &mirror.compare;
    let answers: Vec<Answer> = recorded
        .iter()
        .map(|(_, _, r)| Answer::from_response(spec, &r.headers, &r.body))
        .collect();
    let summaries = recorded
        .iter()
        .zip(&answers)
        .map(|((role, path, r), a)| AnswerSummary {
            role,
            file: path.display().to_string(),
            status: a.status,
            head: r.head,
            content_encoding: r
                .headers
                .iter()
                .find(|(n, _)| n == "content-encoding")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
            body_bytes: r.body.len(),
        })
        .collect();
    let settings = CompareSettings {
        body: spec.body.as_str(),
        headers: spec.headers.clone(),
        ignore: spec.ignore.iter().map(|p| p.as_str().to_string()).collect(),
        max_body_bytes: spec.max_body_bytes,
    };
    let (primary, canary) = (answers.first(), answers.get(1));
    let (Some(primary), Some(canary)) = (primary, canary) else {
        // Two answers are always read; nothing to compare otherwise.
        return Report {
            config: label.to_string(),
            compare: settings,
            answers: summaries,
            judged_against: "primary",
            result: Outcome::Skipped.as_str(),
            detail: "fewer than two answers".to_string(),
            element: None,
            differences: Vec::new(),
            body_skipped: None,
            noise: None,
        };
    };
    let Some(baseline) = answers.get(2) else {
        let found = compare::differences(spec, primary, canary);
        let verdict = found.verdict();
        return Report {
            config: label.to_string(),
            compare: settings,
            answers: summaries,
            judged_against: "primary",
            result: verdict.outcome.as_str(),
            detail: verdict.detail,
            element: found.list.first().map(|d| d.element.clone()),
            differences: listed(spec, primary, canary, &found, |_| false, None),
            body_skipped: found.body_skipped,
            noise: None,
        };
    };
    let noise_settings = mirror
        .baseline
        .as_ref()
        .map_or_else(NoiseSettings::default, |b| b.noise.clone());
    let observed = compare::differences(spec, primary, baseline);
    let judged = compare::differences(spec, baseline, canary);
    let healthy: Vec<&str> = observed.elements();
    // The filter's state on the endpoint's first comparison, and after min_samples alike.
    let first = learner(&noise_settings, spec, &observed, 1);
    let warm = learner(
        &noise_settings,
        spec,
        &observed,
        noise_settings.min_samples.max(1),
    );
    let judge = |l: &NoiseLearner| {
        let elements = judged.elements();
        let (verdict, element) = compare::judged_verdict(&judged, l.judge(ENDPOINT, &elements));
        verdict_report(verdict, element, l)
    };
    let (first_v, warm_v) = (judge(&first), judge(&warm));
    let chosen = if assume_learned { &warm } else { &first };
    let chosen_v = if assume_learned { &warm_v } else { &first_v };
    let is_noise =
        |element: &str| chosen.judge(ENDPOINT, std::slice::from_ref(&element)) == Judgement::Noise;
    Report {
        config: label.to_string(),
        compare: settings,
        answers: summaries,
        judged_against: "baseline",
        result: chosen_v.result,
        detail: chosen_v.detail.clone(),
        element: chosen_v.element.clone(),
        differences: listed(spec, baseline, canary, &judged, is_noise, Some(&healthy)),
        body_skipped: judged.body_skipped.clone(),
        noise: Some(NoiseReport {
            min_samples: noise_settings.min_samples,
            threshold: noise_settings.threshold,
            observed: listed(spec, primary, baseline, &observed, |_| false, None),
            first_comparison: first_v,
            after_warm_up: warm_v,
            assume_learned,
        }),
    }
}

/// A learner that has seen `times` observations of the endpoint, each with these differences.
fn learner(
    settings: &NoiseSettings,
    spec: &CompareSpec,
    observed: &Differences,
    times: u32,
) -> NoiseLearner {
    let mut l = NoiseLearner::new(settings.clone(), spec.fingerprint());
    for _ in 0..times {
        l.observe(ENDPOINT, &observed.elements());
    }
    l
}

fn verdict_report(verdict: Verdict, element: Option<String>, l: &NoiseLearner) -> VerdictReport {
    VerdictReport {
        result: verdict.outcome.as_str(),
        detail: verdict.detail,
        element,
        noise: l.noisy(ENDPOINT).into_iter().map(str::to_string).collect(),
    }
}

/// Every difference of `b` from `a`: those the filter sees (`found`) and, in their place in
/// comparison order, those a `compare.ignore` pointer skips, each with the pointer.
fn listed(
    spec: &CompareSpec,
    a: &Answer,
    b: &Answer,
    found: &Differences,
    is_noise: impl Fn(&str) -> bool,
    healthy: Option<&[&str]>,
) -> Vec<Difference> {
    let key = |d: &compare::Diff| (d.element.clone(), d.detail.clone());
    let counted: Vec<(String, String)> = found.list.iter().map(key).collect();
    let all = if spec.ignore.is_empty() {
        found.clone()
    } else {
        let mut bare = spec.clone();
        bare.ignore.clear();
        compare::differences(&bare, a, b)
    };
    // Which pointer skips a difference: the one whose pattern alone skips it.
    let alone: Vec<(String, Vec<(String, String)>)> = spec
        .ignore
        .iter()
        .map(|p| {
            let mut one = spec.clone();
            one.ignore = vec![p.clone()];
            let seen = compare::differences(&one, a, b)
                .list
                .iter()
                .map(key)
                .collect();
            (p.as_str().to_string(), seen)
        })
        .collect();
    all.list
        .iter()
        .map(|d| {
            let k = key(d);
            let ignore = if counted.contains(&k) {
                None
            } else {
                alone
                    .iter()
                    .find(|(_, seen)| !seen.contains(&k))
                    .map(|(p, _)| p.clone())
                    .or_else(|| Some("(several)".to_string()))
            };
            let covered_by = match (&ignore, is_noise(&d.element)) {
                (Some(_), _) => Some("ignore"),
                (None, true) => Some("noise"),
                (None, false) => None,
            };
            Difference {
                element: d.element.clone(),
                kind: d.outcome.as_str(),
                detail: d.detail.clone(),
                covered_by,
                ignore,
                healthy_instances_differ: healthy.map(|h| h.contains(&d.element.as_str())),
            }
        })
        .collect()
}

fn text(r: &Report, out: &mut Output) {
    out.line(format!("config       {}", r.config));
    out.line(format!(
        "compare      body {}, headers [{}], ignore [{}], max_body_bytes {}",
        r.compare.body,
        r.compare.headers.join(", "),
        r.compare.ignore.join(", "),
        r.compare.max_body_bytes
    ));
    for a in &r.answers {
        out.line(format!(
            "{:<12} {}: status {}{}, {} body bytes{}",
            a.role,
            a.file,
            a.status,
            if a.head {
                ""
            } else {
                " (a body alone: 200 assumed, no headers)"
            },
            a.body_bytes,
            a.content_encoding
                .as_ref()
                .map_or(String::new(), |e| format!(
                    " ({e}, decoded as the filter does)"
                ))
        ));
    }
    if let Some(n) = &r.noise {
        if n.observed.is_empty() {
            out.line(
                "healthy      primary and baseline agree on everything compared: no noise to learn",
            );
        } else {
            out.line("healthy      primary and baseline (two healthy instances) differ on: one noise observation");
            difference_lines(&n.observed, out);
        }
    }
    let against = r.judged_against;
    if r.differences.is_empty() {
        out.line(format!(
            "differences  none: the canary answers as the {against} does"
        ));
    } else {
        out.line(format!(
            "differences  the canary against the {against}, in the filter's order (status, headers, body):"
        ));
        difference_lines(&r.differences, out);
    }
    if let Some(why) = &r.body_skipped {
        out.line(format!("bodies       not compared: {why}"));
    }
    match &r.noise {
        None => out.line(format!(
            "result       {}",
            verdict_text(r.result, &r.detail, r.element.as_deref())
        )),
        Some(n) => {
            let first = &n.first_comparison;
            let warm = &n.after_warm_up;
            out.line(format!(
                "result       {}{}",
                verdict_text(first.result, &first.detail, first.element.as_deref()),
                if n.min_samples > 1 {
                    format!(
                        "\n             on the endpoint's first comparisons: nothing is noise before {} observations (noise.min_samples)",
                        n.min_samples
                    )
                } else {
                    String::new()
                }
            ));
            out.line(format!(
                "after warm-up {}\n             once {} comparisons of the endpoint differed between primary and baseline as here{}",
                verdict_text(warm.result, &warm.detail, warm.element.as_deref()),
                n.min_samples.max(1),
                if warm.noise.is_empty() {
                    String::new()
                } else {
                    format!(" (noise then: {})", warm.noise.join(", "))
                }
            ));
            out.line(format!(
                "exit status  {}",
                if n.assume_learned {
                    "after warm-up's (--assume-learned)"
                } else {
                    "the first comparison's (--assume-learned: after warm-up's)"
                }
            ));
        }
    }
}

fn verdict_text(result: &str, detail: &str, element: Option<&str>) -> String {
    let mut s = result.to_string();
    if !detail.is_empty() {
        s.push_str(": ");
        s.push_str(detail);
    }
    if let Some(e) = element {
        s.push_str(&format!(" (element={e})"));
    }
    s
}

fn difference_lines(list: &[Difference], out: &mut Output) {
    let width = list.iter().map(|d| d.element.len()).max().unwrap_or(0);
    for d in list {
        out.line(format!("  {:<width$}  {}", d.element, difference_line(d)));
    }
}

fn difference_line(d: &Difference) -> String {
    let mut s = format!("{:<15}  {}", d.kind, d.detail);
    match (d.covered_by, &d.ignore) {
        (Some("ignore"), Some(p)) => s.push_str(&format!("  [skipped: compare.ignore {p}]")),
        (Some("noise"), _) => s.push_str("  [noise]"),
        _ => {}
    }
    if d.healthy_instances_differ == Some(true) && d.covered_by != Some("noise") {
        s.push_str("  [primary and baseline differ here too]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_files() {
        // (file, status, headers after :status, body) or the error
        type Want<'a> = Result<(&'a str, Vec<(&'a str, &'a str)>, &'a [u8], bool), &'a str>;
        #[rustfmt::skip]
        let cases: Vec<(&[u8], Want)> = vec![
            (b"{\"a\":1}", Ok(("200", vec![], b"{\"a\":1}", false))),
            (b"", Ok(("200", vec![], b"", false))),
            (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nX-A:  b \r\n\r\nnope\r\n\r\n",
                Ok(("404", vec![("content-type", "text/plain"), ("x-a", "b")], b"nope\r\n\r\n", true))),
            (b"HTTP/2 200\ncontent-encoding: gzip\n\n\x1f\x8b", Ok(("200", vec![("content-encoding", "gzip")], b"\x1f\x8b", true))),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\netag: 1\r\n\r\nx",
                Ok(("201", vec![("etag", "1")], b"x", true))),
            (b"HTTP/1.1 204 No Content\r\n\r\n", Ok(("204", vec![], b"", true))),
            (b"HTTP/1.1 200 OK\r\nx: 1", Err("a status line but no blank line after the headers: give the whole `curl -i` output")),
            (b"HTTP/1.1 OK\r\n\r\n", Err("status line \"HTTP/1.1 OK\" has no status code")),
            (b"HTTP/1.1 200 OK\r\nbad\r\n\r\n", Err("header line \"bad\" has no colon")),
        ];
        for (file, want) in cases {
            let got = parse_answer(file).map(|r| (r.headers, r.body, r.head));
            let want = want.map(|(status, headers, body, head)| {
                let mut h = vec![(":status".to_string(), status.as_bytes().to_vec())];
                h.extend(
                    headers
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())),
                );
                (h, body.to_vec(), head)
            });
            assert_eq!(
                got,
                want.map_err(str::to_string),
                "{:?}",
                String::from_utf8_lossy(file)
            );
        }
    }
}
