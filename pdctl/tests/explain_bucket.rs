//! `pdctl explain` and `pdctl bucket`, run as a user runs them, against the shipped envoy.yaml
//! and the bucket vectors of src/bucket.rs.

// clippy.toml exempts `#[test]` functions from these; the helpers they call are test code too.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;
use predicates::prelude::*;
use progressive_delivery::bucket::bucket_of;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn explain_json(args: &[&str]) -> Value {
    let out = cargo_bin_cmd!("pdctl")
        .current_dir(repo())
        .args(["explain", "--config", "envoy.yaml", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An id whose bucket under `seed` is (or is not) below `basis_points`.
fn id_in(seed: &str, basis_points: u32, inside: bool) -> String {
    (0..)
        .map(|i| format!("visitor-{i}"))
        .find(|id| (bucket_of(seed.as_bytes(), id.as_bytes()) < basis_points) == inside)
        .unwrap()
}

#[test]
fn explain_against_the_shipped_envoy_yaml() {
    let in_cohort = id_in("checkout-v2", 500, true);
    let out_of_cohort = id_in("checkout-v2", 500, false);
    let cohort_cookie = format!("uid={in_cohort}");
    let other_cookie = format!("uid={out_of_cohort}");
    let firefox =
        "user-agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
    // (what, arguments, class, decided by (source, rule), mirror decision)
    type Case<'a> = (
        &'a str,
        Vec<&'a str>,
        &'a str,
        (&'a str, Option<usize>),
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "no hint",
            vec!["--cookie", &other_cookie, "http://shop/"],
            "stable",
            ("default", None),
            "mirrored",
        ),
        (
            "beta header",
            vec!["-H", "X-Beta: true", "http://shop/"],
            "beta",
            ("rule", Some(1)),
            "class_excluded",
        ),
        (
            "insider cookie first",
            vec![
                "--cookie",
                "type=insider",
                "-H",
                "x-beta: true",
                "http://shop/",
            ],
            "insider",
            ("rule", Some(0)),
            "class_excluded",
        ),
        (
            "beta query",
            vec!["--cookie", &other_cookie, "http://shop/a?beta"],
            "beta",
            ("rule", Some(2)),
            "class_excluded",
        ),
        (
            "firefox",
            vec!["-H", firefox, "--cookie", &other_cookie, "http://shop/"],
            "firefox",
            ("rule", Some(3)),
            "mirrored",
        ),
        (
            "cohort",
            vec!["--cookie", &cohort_cookie, "http://shop/"],
            "cohort",
            ("rule", Some(4)),
            "class_excluded",
        ),
        (
            "spoofed class",
            vec![
                "-H",
                "x-user-class: beta",
                "--cookie",
                &other_cookie,
                "http://shop/",
            ],
            "stable",
            ("default", None),
            "mirrored",
        ),
        (
            "excluded path",
            vec!["--cookie", &other_cookie, "http://shop/api/logout"],
            "stable",
            ("default", None),
            "path_excluded",
        ),
        (
            "post",
            vec![
                "-X",
                "POST",
                "--cookie",
                &other_cookie,
                "http://shop/api/cart",
            ],
            "stable",
            ("default", None),
            "not_idempotent",
        ),
        (
            "a copy",
            vec![
                "-H",
                "x-mirror: 1",
                "--cookie",
                &other_cookie,
                "http://shop/",
            ],
            "stable",
            ("default", None),
            "is_mirror",
        ),
        (
            "too large",
            vec![
                "-X",
                "PUT",
                "-H",
                "content-length: 70000",
                "--cookie",
                &other_cookie,
                "http://shop/",
            ],
            "stable",
            ("default", None),
            "body_too_large",
        ),
    ];
    for (what, args, class, (source, rule), decision) in cases {
        let e = explain_json(&args);
        assert_eq!(e["class"], class, "{what}: {e:#}");
        assert_eq!(e["decided_by"]["source"], source, "{what}: {e:#}");
        assert_eq!(e["decided_by"]["rule"], json!(rule), "{what}: {e:#}");
        assert_eq!(e["mirror"]["decision"], decision, "{what}: {e:#}");
        assert_eq!(e["mirror"]["random"], false, "{what}");
        assert_eq!(e["headers"][0], json!(["x-user-class", class]), "{what}");
    }

    let e = explain_json(&["--cookie", &cohort_cookie, "http://shop/"]);
    assert_eq!(
        e["buckets"],
        json!([{"rule": 4, "key": "cookie uid", "seed": "checkout-v2", "percent": "5", "basis_points": 500,
                "id": in_cohort, "assigned": false,
                "bucket": bucket_of(b"checkout-v2", in_cohort.as_bytes()), "in": true}])
    );
    assert_eq!(e["headers"][1], json!(["x-features", "new-checkout"]));
    assert_eq!(e["assigned_cookies"], json!([]));
    assert_eq!(
        e["rules"][1]["description"],
        r#"header x-beta exact "true""#
    );
}

#[test]
fn a_first_time_visitor_is_given_an_id_and_bucketed_by_it() {
    let fresh = id_in("checkout-v2", 500, true);
    let e = explain_json(&["--new-id", &fresh, "http://shop/"]);
    assert_eq!(e["assigned_cookies"], json!([["uid", fresh]]));
    assert_eq!(e["class"], "cohort");
    assert_eq!(e["buckets"][0]["assigned"], true);
    // Without --new-id the id is random, 32 hex digits, like the filter's.
    let e = explain_json(&["http://shop/"]);
    let id = e["assigned_cookies"][0][1].as_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
}

#[test]
fn the_copy_of_a_mirrored_request() {
    let e = explain_json(&[
        "--show-copy",
        "--cookie",
        "uid=u1",
        "-H",
        "Connection: x-hop",
        "-H",
        "x-hop: 1",
        "-H",
        "x-features: admin",
        "-H",
        "x-request-tag: keep-me",
        "http://api.example:8080/api/items?q=1",
    ]);
    assert_eq!(e["mirror"]["decision"], "mirrored", "{e:#}");
    assert_eq!(
        e["mirror"]["copy"],
        json!([
            [":authority", "api.example-shadow:8080"],
            [":path", "/api/items?q=1"],
            [":method", "GET"],
            [":scheme", "http"],
            ["x-request-tag", "keep-me"],
            ["cookie", "uid=u1"],
            ["x-user-class", "stable"],
            ["x-mirror", "1"],
        ])
    );
    // Without --show-copy there is none, and a request not mirrored has none either.
    let e = explain_json(&["--cookie", "uid=u1", "http://shop/"]);
    assert_eq!(e["mirror"]["copy"], Value::Null);
    let e = explain_json(&["--show-copy", "-H", "x-beta: true", "http://shop/"]);
    assert_eq!(e["mirror"]["copy"], Value::Null);
}

#[test]
fn explain_in_text() {
    cargo_bin_cmd!("pdctl")
        .current_dir(repo())
        .args(["explain", "--config", "envoy.yaml", "--new-id", "alice", "--show-copy"])
        .args(["-H", "x-beta: true", "http://shop.example/api/cart"])
        .assert()
        .success()
        .stdout(predicate::str::contains("class        beta\n"))
        .stdout(predicate::str::contains(
            "decided by   rules[1]: header x-beta exact \"true\"\n",
        ))
        .stdout(predicate::str::contains(
            "  rules[4]: cookie uid = \"alice\" (given now to a first-time visitor): bucket 2815 of seed \"checkout-v2\", out (5% = below 500)\n",
        ))
        .stdout(predicate::str::contains(
            "headers      x-user-class: beta\n             x-features: new-checkout,dark-mode\n",
        ))
        .stdout(predicate::str::contains(
            "mirror       not mirrored (class_excluded): class beta is not in mirror.classes [stable, firefox]\n",
        ));
}

#[test]
fn explain_picks_one_configuration_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"mirror": {"percent": 101}}"#).unwrap();
    let bad = bad.display().to_string();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--config", "istio/", "http://shop/"],
            2,
            "configurations",
        ),
        (
            vec!["--config", "istio/", "--name", "nope", "http://shop/"],
            2,
            "no configuration named \"nope\"",
        ),
        (
            vec!["--config", "missing.json", "http://shop/"],
            2,
            "missing.json: cannot read it",
        ),
        (
            vec!["--config", &bad, "http://shop/"],
            1,
            "invalid configuration: mirror.percent",
        ),
        (vec!["--config", "envoy.yaml", "/no-host"], 2, "has no host"),
        (
            vec!["--config", "envoy.yaml", "-H", "no-colon", "http://shop/"],
            2,
            "give a header as 'name: value'",
        ),
        (
            vec![
                "--config",
                "envoy.yaml",
                "--cookie",
                "nocookie",
                "http://shop/",
            ],
            2,
            "give a cookie as name=value",
        ),
        (
            vec!["--config", "envoy.yaml", "http://sh op/"],
            2,
            "URL \"http://sh op/\"",
        ),
    ];
    for (args, code, says) in cases {
        let out = cargo_bin_cmd!("pdctl")
            .current_dir(repo())
            .arg("explain")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {says:?} not in {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A directory of several WasmPlugins: --name picks one, and a relative URL takes -H host.
    let out = cargo_bin_cmd!("pdctl")
        .current_dir(repo())
        .args([
            "explain",
            "--config",
            "istio/",
            "--name",
            "progressive-delivery-edge",
        ])
        .args([
            "--format",
            "json",
            "-H",
            "host: shop",
            "--cookie",
            "beta_opt_in=true",
            "/",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["class"], "beta");
    assert_eq!(
        e["mirror"],
        Value::Null,
        "the edge plugin has no mirror section"
    );
}

/// The vectors of src/bucket.rs (an empty id aside: the filter never buckets one).
const VECTORS: [(&str, &str, u32); 5] = [
    ("", "user-1", 821),
    ("checkout-v2", "user-1", 8696),
    ("checkout-v2", "user-2", 2997),
    ("checkout-v2", "alice", 2815),
    ("", "\u{e9}t\u{e9}", 2346),
];

#[test]
fn bucket_matches_the_pinned_vectors() {
    for (seed, id, want) in VECTORS {
        for (percent, inside) in [("28.15", want < 2815), ("100", true), ("0", false)] {
            let out = cargo_bin_cmd!("pdctl")
                .args([
                    "bucket",
                    "--seed",
                    seed,
                    "--percent",
                    percent,
                    "--format",
                    "json",
                    id,
                ])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0));
            let r: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                r["ids"],
                json!([{"id": id, "bucket": want, "in": inside}]),
                "{seed} {id} {percent}"
            );
        }
    }
    cargo_bin_cmd!("pdctl")
        .args(["bucket", "--seed", "checkout-v2", "--percent", "30", "alice", "user-1", "user-2"])
        .assert()
        .success()
        .stdout("alice   2815  in\nuser-1  8696  out\nuser-2  2997  in\n2 of 3 in (66.67%); seed \"checkout-v2\", 30% = buckets below 3000\n");
}

#[test]
fn bucket_reads_ids_from_a_file_and_counts_the_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ids.txt");
    let ids: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    std::fs::write(&file, ids.join("\n") + "\n\n").unwrap();
    let out = cargo_bin_cmd!("pdctl")
        .args([
            "bucket",
            "--seed",
            "checkout-v2",
            "--percent",
            "5",
            "--format",
            "json",
            "--ids-from",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = ids
        .iter()
        .filter(|id| bucket_of(b"checkout-v2", id.as_bytes()) < 500)
        .count();
    assert_eq!(r["total"], 1000);
    assert_eq!(r["in"], want);
    assert_eq!(r["fraction_in"], json!(want as f64 / 1000.0));
    assert_eq!(r["basis_points"], 500);
}

#[test]
fn bucket_refuses_what_the_filter_refuses() {
    let cases: [(&[&str], &str); 4] = [
        (&["--percent", "150", "a"], "pdctl: --percent: "),
        (&["--percent", "5"], "no ids"),
        (&["--percent", "5", ""], "an empty id"),
        (
            &["--percent", "5", "--ids-from", "/nonexistent/ids"],
            "cannot read ids from /nonexistent/ids",
        ),
    ];
    for (args, says) in cases {
        let out = cargo_bin_cmd!("pdctl")
            .arg("bucket")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {says:?} not in {stderr}");
    }
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in [vec![], vec!["check"], vec!["explain"], vec!["bucket"]] {
        let mut args = sub.clone();
        args.push("--help");
        cargo_bin_cmd!("pdctl")
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:\n  pdctl "));
    }
    // Usage errors are clap's: status 2, no panic.
    cargo_bin_cmd!("pdctl")
        .args(["explain"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--config <FILE>"));
}

#[test]
fn explain_shows_the_baseline_copy() {
    let dir = tempfile::tempdir().unwrap();
    // (baseline.percent, the share printed)
    #[rustfmt::skip]
    let cases = [
        ("100", "every mirrored request"),
        ("50", "50% of the mirrored requests, taken in turn on each worker (not by user)"),
        ("0", "no request (baseline.percent is 0)"),
    ];
    for (percent, share) in cases {
        let cfg = dir.path().join("cfg.json");
        std::fs::write(
            &cfg,
            format!(r#"{{"mirror": {{"cluster": "canary", "baseline": {{"cluster": "primary", "percent": {percent}}}}}}}"#),
        )
        .unwrap();
        let out = cargo_bin_cmd!("pdctl")
            .arg("explain")
            .arg("--config")
            .arg(&cfg)
            .args(["--show-copy", "--format", "json", "http://a.example/x"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let m = &serde_json::from_slice::<Value>(&out.stdout).unwrap()["mirror"];
        assert_eq!(m["baseline"]["cluster"], "primary");
        assert_eq!(m["baseline"]["share"], share);
        assert_eq!(m["baseline"]["copy"], m["copy"]);
        assert_eq!(m["copy"][0], json!([":authority", "a.example-shadow"]));
    }
    // Not mirrored: no copy for either.
    cargo_bin_cmd!("pdctl")
        .arg("explain")
        .arg("--config")
        .arg(dir.path().join("cfg.json"))
        .args(["--show-copy", "-X", "POST", "http://a.example/x"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "baseline     cluster \"primary\": no copy, the request is not mirrored",
        ));
}
