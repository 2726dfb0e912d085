//! `pdctl diff` and `pdctl report`, run as a user runs them. The same diff table goes through
//! a real Envoy in e2e/test_pdctl.py, and report through a real Prometheus there; here report
//! talks to a small Prometheus API server answering fixed vectors.

// clippy.toml exempts `#[test]` functions from these; the helpers they call are test code too.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;
use predicates::prelude::*;
use serde_json::{json, Value};

const CONFIG: &str = r#"{"mirror": {"cluster": "canary", "compare": {"body": "json",
    "headers": ["content-type"], "ignore": ["/ts", "/items/*/id"]}}}"#;
const BYTES: &str =
    r#"{"mirror": {"cluster": "canary", "compare": {"body": "bytes", "max_body_bytes": 64}}}"#;
const BASELINE: &str = r#"{"mirror": {"cluster": "canary", "baseline": {"cluster": "primary"},
    "noise": {"min_samples": 4}, "compare": {"body": "json"}}}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn curl_i(status: &str, headers: &[(&str, &str)], body: &[u8], crlf: bool) -> Vec<u8> {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut out = format!("{status}{nl}");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}{nl}"));
    }
    out.push_str(nl);
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

fn diff(config: &str, answers: &[&[u8]], extra: &[&str]) -> (i32, Value, String) {
    let f = Files::new();
    let cfg = f.put("cfg.json", config.as_bytes());
    let mut cmd = cargo_bin_cmd!("pdctl");
    cmd.arg("diff").arg("--config").arg(&cfg);
    let names = ["primary", "canary", "baseline"];
    for (i, a) in answers.iter().enumerate() {
        let p = f.put(names[i], a);
        if i == 2 {
            cmd.arg("--baseline");
        }
        cmd.arg(p);
    }
    let out = cmd.args(extra).args(["--format", "json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), json, stderr)
}

#[test]
fn diff_results_and_exit_status() {
    let ct = ("content-type", "application/json");
    let doc = br#"{"a":[1,2,3],"ts":1}"#;
    #[rustfmt::skip]
    // (what, config, primary, canary, exit status, result, detail, element)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, Vec<u8>, i32, &'a str, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "key order and a float",
            CONFIG,
            br#"{"a":1,"b":[1,2]}"#.to_vec(),
            br#"{"b":[1,2], "a":1.0}"#.to_vec(),
            0,
            "match",
            "",
            None,
        ),
        (
            "ignored pointers",
            CONFIG,
            br#"{"ts":1,"items":[{"id":1}]}"#.to_vec(),
            br#"{"ts":2,"items":[{"id":9}]}"#.to_vec(),
            0,
            "match",
            "",
            None,
        ),
        (
            "an array element",
            CONFIG,
            br#"{"items":[{"v":1},{"v":2}]}"#.to_vec(),
            br#"{"items":[{"v":1},{"v":3}]}"#.to_vec(),
            1,
            "body_mismatch",
            "body /items/1/v: 2 vs 3",
            Some("/items/*/v"),
        ),
        (
            "status first",
            CONFIG,
            curl_i("HTTP/1.1 200 OK", &[ct], b"{}", true),
            curl_i("HTTP/2 503", &[ct], b"{\"e\":1}", false),
            1,
            "status_mismatch",
            "status 200 vs 503",
            Some("status"),
        ),
        (
            "a header",
            CONFIG,
            curl_i("HTTP/1.1 200 OK", &[ct], b"{}", true),
            curl_i("HTTP/1.1 200 OK", &[], b"{}", true),
            1,
            "header_mismatch",
            "header content-type: \"application/json\" vs (absent)",
            Some("header content-type"),
        ),
        (
            "gzip against plain",
            CONFIG,
            doc.to_vec(),
            curl_i(
                "HTTP/2 200",
                &[("content-encoding", "gzip")],
                &gzip(doc),
                false,
            ),
            0,
            "match",
            "",
            None,
        ),
        (
            "corrupt gzip",
            CONFIG,
            doc.to_vec(),
            curl_i(
                "HTTP/2 200",
                &[("content-encoding", "gzip")],
                &gzip(doc)[..10],
                false,
            ),
            3,
            "skipped",
            "body not compared: the body does not decode: incomplete deflate stream",
            None,
        ),
        (
            "bytes",
            BYTES,
            b"abc".to_vec(),
            b"abd".to_vec(),
            1,
            "body_mismatch",
            "body differs (3 vs 3 bytes)",
            Some("body"),
        ),
        (
            "bytes over the limit",
            BYTES,
            vec![b'x'; 65],
            b"abd".to_vec(),
            3,
            "skipped",
            "body of 65 bytes is over compare.max_body_bytes (64)",
            None,
        ),
    ];
    for (what, config, p, c, code, result, detail, element) in cases {
        let (got, json, stderr) = diff(config, &[&p, &c], &[]);
        assert_eq!(got, code, "{what}: {stderr}");
        assert_eq!(json["result"], result, "{what}: {json}");
        assert_eq!(json["detail"], detail, "{what}");
        assert_eq!(json["element"].as_str(), element, "{what}");
    }
}

#[test]
fn diff_with_a_baseline_before_and_after_warm_up() {
    let p = br#"{"host":"p","v":1,"w":1}"#;
    let b = br#"{"host":"b","v":1,"w":1}"#;
    // (canary, first comparison, after warm-up) as (result, element)
    #[rustfmt::skip]
    type Verdict<'a> = (&'a str, Option<&'a str>);
    let cases: Vec<(&[u8], Verdict, Verdict)> = vec![
        (
            br#"{"host":"c","v":1,"w":1}"#,
            ("body_mismatch", Some("/host")),
            ("noise", None),
        ),
        (
            br#"{"host":"c","v":2,"w":1}"#,
            ("body_mismatch", Some("/host")),
            ("body_mismatch", Some("/v")),
        ),
        (
            br#"{"host":"b","v":1,"w":1}"#,
            ("match", None),
            ("match", None),
        ),
    ];
    for (c, first, warm) in cases {
        let (code, json, _) = diff(BASELINE, &[p, c, b], &[]);
        let noise = &json["noise"];
        assert_eq!(json["judged_against"], "baseline");
        assert_eq!(noise["min_samples"], 4);
        assert_eq!(noise["observed"][0]["element"], "/host");
        for (v, want) in [
            (&noise["first_comparison"], first),
            (&noise["after_warm_up"], warm),
        ] {
            assert_eq!(
                (v["result"].as_str().unwrap(), v["element"].as_str()),
                want,
                "{json}"
            );
        }
        assert_eq!(json["result"], first.0);
        assert_eq!(code, i32::from(!matches!(first.0, "match" | "noise")));
        let (code, json, _) = diff(BASELINE, &[p, c, b], &["--assume-learned"]);
        assert_eq!(json["result"], warm.0);
        assert_eq!(code, i32::from(!matches!(warm.0, "match" | "noise")));
        assert_eq!(json["noise"]["after_warm_up"]["noise"], json!(["/host"]));
    }
}

#[test]
fn diff_text_names_every_difference() {
    let f = Files::new();
    let cfg = f.put("cfg.json", CONFIG.as_bytes());
    let p = f.put("p", br#"{"ts":1,"x":1,"y":[1]}"#);
    let c = f.put("c", br#"{"ts":2,"x":2,"y":[2]}"#);
    cargo_bin_cmd!("pdctl")
        .arg("diff")
        .arg("--config")
        .arg(&cfg)
        .args([&p, &c])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "/ts   body_mismatch    body /ts: 1 vs 2  [skipped: compare.ignore /ts]",
        ))
        .stdout(predicate::str::contains(
            "/x    body_mismatch    body /x: 1 vs 2\n",
        ))
        .stdout(predicate::str::contains(
            "/y/*  body_mismatch    body /y/0: 1 vs 2\n",
        ))
        .stdout(predicate::str::contains(
            "result       body_mismatch: body /x: 1 vs 2 (element=/x)",
        ));
}

#[test]
fn diff_refuses_what_it_cannot_use() {
    let f = Files::new();
    let good = f.put("good.json", CONFIG.as_bytes());
    let none = f.put("none.json", b"{}");
    let bad = f.put("bad.json", br#"{"mirror": {"cluster": ""}}"#);
    let body = f.put("body", b"{}");
    let head = f.put("head", b"HTTP/1.1 200 OK\r\nx: 1");
    let dir = f.dir.path().to_path_buf();
    let missing = dir.join("missing");
    #[rustfmt::skip]
    let cases: Vec<(Vec<&Path>, &str)> = vec![
        (vec![&none, &body, &body], "no mirror section: the filter compares nothing"),
        (vec![&bad, &body, &body], "invalid configuration: mirror.cluster"),
        (vec![&good, &missing, &body], "missing (primary): No such file"),
        (vec![&good, &body, &head], "head (canary): a status line but no blank line after the headers"),
    ];
    for (args, message) in cases {
        cargo_bin_cmd!("pdctl")
            .arg("diff")
            .arg("--config")
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(message));
    }
    // --assume-learned without a baseline is a usage error.
    cargo_bin_cmd!("pdctl")
        .arg("diff")
        .arg("--config")
        .args([&good, &body, &body])
        .arg("--assume-learned")
        .assert()
        .code(2);
}

/// A Prometheus API on a free port answering each query with the vector of the first rule
/// whose pattern the query contains; `None`: an error answer. Runs until the test ends.
fn prometheus(rules: Vec<(&'static str, Option<Value>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap() > 2 {
                header.clear();
            }
            let target = line.split(' ').nth(1).unwrap_or_default();
            let query: String = url::form_urlencoded::parse(
                target.split_once('?').map_or("", |(_, q)| q).as_bytes(),
            )
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
            let answer = rules
                .iter()
                .find(|(pattern, _)| query.contains(pattern))
                .map_or(Some(json!([])), |(_, v)| v.clone());
            let body = match answer {
                Some(result) => {
                    json!({"status": "success", "data": {"resultType": "vector", "result": result}})
                }
                None => json!({"status": "error", "errorType": "bad_data", "error": "parse error"}),
            }
            .to_string();
            // A client gone is its own business.
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

fn series(labels: Value, v: f64) -> Value {
    json!({"metric": labels, "value": [0, v.to_string()]})
}

#[test]
fn report_happy_path() {
    let rules = vec![
        (
            "progressive_delivery_mirror_total",
            Some(json!([
                series(json!({"decision": "mirrored"}), 10.0),
                series(json!({"decision": "not_idempotent"}), 2.0)
            ])),
        ),
        (
            "progressive_delivery_comparisons_total",
            Some(json!([
                series(json!({"result": "match"}), 5.0),
                series(json!({"result": "noise"}), 2.0),
                series(json!({"result": "body_mismatch"}), 2.0),
                series(json!({"result": "skipped"}), 1.0)
            ])),
        ),
        (
            "progressive_delivery_baseline_total",
            Some(json!([series(json!({"result": "answered"}), 10.0)])),
        ),
        (
            "progressive_delivery_differences_total",
            Some(json!([
                series(
                    json!({"endpoint": "GET /a/{id}", "element": "/total", "kind": "mismatch"}),
                    2.0
                ),
                series(
                    json!({"endpoint": "GET /a/{id}", "element": "/request", "kind": "noise"}),
                    4.0
                ),
                series(
                    json!({"endpoint": "GET /b", "element": "/host", "kind": "noise"}),
                    1.0
                )
            ])),
        ),
        (
            "histogram_quantile(0.5",
            Some(json!([series(json!({}), 3.0)])),
        ),
        (
            "histogram_quantile(0.99",
            Some(json!([series(json!({}), 9.5)])),
        ),
        ("_count", Some(json!([series(json!({}), 10.0)]))),
    ];
    let url = prometheus(rules);
    let f = Files::new();
    let html = f.dir.path().join("review.html");
    let out = cargo_bin_cmd!("pdctl")
        .args([
            "report",
            "--prometheus",
            &url,
            "--canary",
            "canary",
            "--format",
            "json",
            "--html",
        ])
        .arg(&html)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["comparisons"], 9);
    assert_eq!(r["mismatches"], 2);
    assert_eq!(r["noise"], 2);
    assert_eq!(r["mismatch_ratio"].as_f64().unwrap(), 2.0 / 9.0);
    assert_eq!(
        r["mismatch_ratio_without_noise_cancellation"]
            .as_f64()
            .unwrap(),
        4.0 / 9.0
    );
    assert_eq!(r["baseline"], json!([["answered", 10]]));
    assert_eq!(r["decisions"][0], json!(["mirrored", 10]));
    assert_eq!(
        r["endpoints"],
        json!([
            {"endpoint": "GET /a/{id}", "mismatch_differences": 2, "noise_differences": 4,
             "top": [{"element": "/total", "mismatch": 2, "noise": 0}, {"element": "/request", "mismatch": 0, "noise": 4}]},
            {"endpoint": "GET /b", "mismatch_differences": 0, "noise_differences": 1,
             "top": [{"element": "/host", "mismatch": 0, "noise": 1}]}
        ])
    );
    let lat = &r["latency"];
    assert_eq!(lat["reference"], "baseline");
    assert_eq!(lat["canary_p99_ms"], 9.5);
    assert_eq!(lat["p99_ratio"], 1.0);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<td>GET /a/{id}</td><td>/total</td><td>2</td><td>0</td>"),
        "{page}"
    );
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
}

#[test]
fn report_fails_with_status_2() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let refusing = prometheus(vec![("", None)]);
    #[rustfmt::skip]
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--prometheus", &closed, "--canary", "c"], "cannot query Prometheus"),
        (vec!["--prometheus", &refusing, "--canary", "c"], "Prometheus refused the query (bad_data: parse error)"),
        (vec!["--prometheus", "http://x", "--canary", "c", "--window", "30min"], "--window \"30min\": not a Prometheus duration"),
        (vec!["--prometheus", "https://x", "--canary", "c"], "give a plain-HTTP URL"),
    ];
    for (args, message) in cases {
        cargo_bin_cmd!("pdctl")
            .arg("report")
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(message));
    }
}
