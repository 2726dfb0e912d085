//! `pdctl check`, run as a user runs it: on the repository's own files, and on broken
//! configurations in each kind of file, whose messages must be the filter's own.

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
use progressive_delivery::config;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What the filter logs for `bytes`, line by line (empty when it accepts them).
fn filter_log(bytes: &str) -> Vec<String> {
    match config::parse(bytes.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| format!("invalid configuration: {e}"))
            .collect(),
    }
}

fn json_report(args: &[&Path]) -> (i32, Value) {
    let out = cargo_bin_cmd!("pdctl")
        .arg("check")
        .args(["--format", "json"])
        .args(args)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

#[test]
fn the_repositorys_configurations_are_valid() {
    let repo = repo();
    let mut cmd = cargo_bin_cmd!("pdctl");
    cmd.current_dir(&repo)
        .args(["check", "istio/", "envoy.yaml"]);
    cmd.assert()
        .success()
        .stdout(predicate::str::contains(
            "istio/wasmplugin-gateway.yaml: WasmPlugin istio-system/progressive-delivery-edge at spec.pluginConfig: ok",
        ))
        .stdout(predicate::str::contains(
            "envoy.yaml: http filter \"progressive-delivery\" at static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]: ok",
        ))
        .stdout(predicate::str::is_match(r"\n\d+ configurations checked, 0 invalid\n$").unwrap());

    let (code, report) = json_report(&[&repo.join("istio"), &repo.join("envoy.yaml")]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["valid"], true);
    // Every WasmPlugin under istio/ and the one filter of envoy.yaml, nothing else.
    let plugins = walk_yaml(&repo.join("istio"))
        .iter()
        .map(|text| text.matches("\nkind: WasmPlugin\n").count())
        .sum::<usize>();
    assert!(plugins >= 4, "{plugins}");
    assert_eq!(report["checked"], plugins + 1, "{report:#}");
}

fn walk_yaml(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk_yaml(&path));
        } else if path.extension().is_some_and(|x| x == "yaml") {
            out.push(format!("\n{}", std::fs::read_to_string(path).unwrap()));
        }
    }
    out
}

/// Broken configurations: (what, the configuration as written, the JSON Istio makes of it as
/// a WasmPlugin's pluginConfig: a protobuf Struct, sorted keys, numbers as doubles). Written
/// here by hand, so pdctl's conversion is checked, not reused.
const BROKEN: [(&str, &str, &str); 7] = [
    (
        "unknown section",
        r#"{"mirrors": {"cluster": "canary"}}"#,
        r#"{"mirrors":{"cluster":"canary"}}"#,
    ),
    (
        "bad class name and unknown class",
        r#"{"classification": {"rules": [{"class": "Bad Class", "header": {"name": "x-b", "exact": "1"}}]}, "mirror": {"classes": ["nope"]}}"#,
        r#"{"classification":{"rules":[{"class":"Bad Class","header":{"exact":"1","name":"x-b"}}]},"mirror":{"classes":["nope"]}}"#,
    ),
    (
        "percent out of range",
        r#"{"classification": {"rules": [{"class": "c", "bucket": {"cookie": "uid", "percent": 150}}]}}"#,
        r#"{"classification":{"rules":[{"bucket":{"cookie":"uid","percent":150},"class":"c"}]}}"#,
    ),
    (
        "a fraction for an integer",
        r#"{"mirror": {"timeout_ms": 1.5}}"#,
        r#"{"mirror":{"timeout_ms":1.5}}"#,
    ),
    (
        "invalid regex",
        r#"{"classification": {"rules": [{"class": "f", "header": {"name": "user-agent", "regex": "(Firefox"}}]}}"#,
        r#"{"classification":{"rules":[{"class":"f","header":{"name":"user-agent","regex":"(Firefox"}}]}}"#,
    ),
    (
        "a string for a boolean",
        r#"{"classification": {"trust_incoming_header": "yes"}}"#,
        r#"{"classification":{"trust_incoming_header":"yes"}}"#,
    ),
    (
        "two matchers in one condition",
        r#"{"classification": {"rules": [{"class": "b", "cookie": {"name": "t", "exact": "a", "prefix": "b"}}]}}"#,
        r#"{"classification":{"rules":[{"class":"b","cookie":{"exact":"a","name":"t","prefix":"b"}}]}}"#,
    ),
];

/// The same configuration in each kind of file pdctl reads, with the bytes the filter gets.
fn files(dir: &Path, raw: &str, as_struct: &str) -> Vec<(PathBuf, String)> {
    let plain = dir.join("config.json");
    std::fs::write(&plain, raw).unwrap();

    // A WasmPlugin, its pluginConfig in YAML flow style (JSON is YAML), after another document.
    let wasmplugin = dir.join("wasmplugin.yaml");
    std::fs::write(
        &wasmplugin,
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: api}}\n---\n\
             apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n\
             metadata: {{name: pd, namespace: shop}}\nspec:\n  pluginConfig: {raw}\n"
        ),
    )
    .unwrap();

    // The shipped envoy.yaml with this configuration instead of its own.
    let shipped = std::fs::read_to_string(repo().join("envoy.yaml")).unwrap();
    let envoy = dir.join("envoy.yaml");
    std::fs::write(&envoy, replace_configuration(&shipped, raw)).unwrap();

    // An ECDS DiscoveryResponse, in JSON.
    let ecds = dir.join("ecds.json");
    let doc = serde_json::json!({
        "version_info": "1",
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": "progressive-delivery",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "root_id": "progressive-delivery",
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": raw
                    }
                }
            }
        }]
    });
    std::fs::write(&ecds, doc.to_string()).unwrap();

    vec![
        (plain, raw.to_string()),
        (wasmplugin, as_struct.to_string()),
        (envoy, raw.to_string()),
        (ecds, raw.to_string()),
    ]
}

/// envoy.yaml with the block scalar under `value: |` replaced by `raw` (as a YAML string).
fn replace_configuration(envoy_yaml: &str, raw: &str) -> String {
    let mut out = Vec::new();
    let mut block_indent: Option<usize> = None;
    for line in envoy_yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(i) = block_indent {
            if line.trim().is_empty() || indent > i {
                continue;
            }
            block_indent = None;
        }
        if line.trim() == "value: |" {
            block_indent = Some(indent);
            out.push(format!(
                "{}value: {}",
                " ".repeat(indent),
                serde_json::to_string(raw).unwrap()
            ));
            continue;
        }
        out.push(line.to_string());
    }
    assert!(
        out.iter().any(|l| l.contains("value: \"")),
        "no configuration block in envoy.yaml"
    );
    out.join("\n")
}

#[test]
fn broken_configurations_get_the_filters_messages_in_every_kind_of_file() {
    for (what, raw, as_struct) in BROKEN {
        let dir = tempfile::tempdir().unwrap();
        for (file, delivered) in files(dir.path(), raw, as_struct) {
            let want = filter_log(&delivered);
            assert!(!want.is_empty(), "{what}: the filter accepts {delivered}");

            let (code, report) = json_report(&[&file]);
            assert_eq!(code, 1, "{what}, {}: {report:#}", file.display());
            assert_eq!(report["checked"], 1, "{what}: {report:#}");
            let logged: Vec<&str> = report["configurations"][0]["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["log"].as_str().unwrap())
                .collect();
            assert_eq!(logged, want, "{what}, {}", file.display());

            // The text form prints the same lines, each after where it was found.
            let out = cargo_bin_cmd!("pdctl")
                .arg("check")
                .arg(&file)
                .assert()
                .code(1)
                .get_output()
                .stdout
                .clone();
            let text = String::from_utf8(out).unwrap();
            for line in &want {
                let prefix = format!("{}: ", file.display());
                assert!(
                    text.lines()
                        .any(|l| l.starts_with(&prefix) && l.ends_with(&format!(": {line}"))),
                    "{what}: {line:?} not in\n{text}"
                );
            }
        }
    }
}

#[test]
fn where_each_configuration_was_found() {
    let dir = tempfile::tempdir().unwrap();
    let (_, raw, as_struct) = BROKEN[0];
    let found: Vec<(String, Value)> = files(dir.path(), raw, as_struct)
        .into_iter()
        .map(|(file, _)| {
            let (_, report) = json_report(&[&file]);
            let c = &report["configurations"][0];
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                serde_json::json!([c["document"], c["source"], c["location"]]),
            )
        })
        .collect();
    let want = [
        ("config.json", serde_json::json!([1, "plugin configuration", null])),
        ("wasmplugin.yaml", serde_json::json!([2, "WasmPlugin shop/pd", "spec.pluginConfig"])),
        (
            "envoy.yaml",
            serde_json::json!([1, "http filter \"progressive-delivery\"", "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]"]),
        ),
        ("ecds.json", serde_json::json!([1, "http filter \"progressive-delivery\"", "resources[0]"])),
    ];
    for ((name, got), (want_name, want)) in found.iter().zip(want) {
        assert_eq!(name, want_name);
        assert_eq!(got, &want, "{name}");
    }
}

/// A WasmPlugin's numbers reach the filter as doubles written like protojson writes them, so
/// `2.0` is the integer 2 there, while a JSON file says `2.0` to the filter as it is.
#[test]
fn wasmplugin_numbers_are_protobuf_doubles() {
    let dir = tempfile::tempdir().unwrap();
    let raw = r#"{"mirror": {"max_in_flight": 2.0, "timeout_ms": 1500}}"#;
    std::fs::write(dir.path().join("plain.json"), raw).unwrap();
    std::fs::write(
        dir.path().join("wp.yaml"),
        format!("kind: WasmPlugin\nmetadata: {{name: pd}}\nspec:\n  pluginConfig: {raw}\n"),
    )
    .unwrap();
    assert!(!filter_log(raw).is_empty());
    assert!(filter_log(r#"{"mirror":{"max_in_flight":2,"timeout_ms":1500}}"#).is_empty());
    let (code, report) = json_report(&[&dir.path().join("plain.json")]);
    assert_eq!(code, 1, "{report:#}");
    let (code, report) = json_report(&[&dir.path().join("wp.yaml")]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn resources_that_cannot_deliver_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "bytes.yaml",
            "typed_config:\n  '@type': type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n  config:\n    configuration:\n      '@type': type.googleapis.com/google.protobuf.BytesValue\n      value: e30=\n",
            "typed_config.config.configuration",
        ),
        (
            "notstring.yaml",
            "name: pd\ntyped_config:\n  '@type': type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n  config:\n    configuration:\n      '@type': type.googleapis.com/google.protobuf.StringValue\n      value: {a: 1}\n",
            "typed_config.config.configuration.value",
        ),
        (
            "list.yaml",
            "kind: WasmPlugin\nmetadata: {name: pd}\nspec:\n  pluginConfig: [1, 2]\n",
            "spec.pluginConfig",
        ),
    ];
    for (name, text, path) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let (code, report) = json_report(&[&file]);
        assert_eq!(code, 1, "{name}: {report:#}");
        let error = &report["configurations"][0]["errors"][0];
        assert_eq!(error["path"], path, "{name}: {report:#}");
        assert_eq!(
            error["log"],
            Value::Null,
            "{name}: the filter never sees it"
        );
    }
    // Left out, `configuration` is the empty configuration, which the filter accepts.
    let file = dir.path().join("none.yaml");
    std::fs::write(
        &file,
        "typed_config:\n  '@type': type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n  config: {root_id: x}\n",
    )
    .unwrap();
    assert_eq!(json_report(&[&file]).0, 0);
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ok.json"), "{}").unwrap();
    std::fs::write(d.join("bad.json"), r#"{"x": 1}"#).unwrap();
    std::fs::write(d.join("broken.yaml"), "a: [1\n").unwrap();
    std::fs::write(
        d.join("service.yaml"),
        "kind: Service\nmetadata: {name: x}\n",
    )
    .unwrap();
    let cases: [(&[&str], i32, &str); 6] = [
        (&["ok.json"], 0, "1 configuration checked, 0 invalid"),
        (
            &["ok.json", "bad.json"],
            1,
            "bad.json: invalid configuration: x: unknown field `x`",
        ),
        (&["missing.yaml"], 2, "missing.yaml: cannot read it"),
        (&["broken.yaml", "bad.json"], 2, "broken.yaml: not YAML"),
        (
            &["service.yaml"],
            1,
            "no plugin configuration in service.yaml",
        ),
        (&["empty-dir"], 1, "no plugin configuration in empty-dir"),
    ];
    std::fs::create_dir(d.join("empty-dir")).unwrap();
    for (args, code, says) in cases {
        let out = cargo_bin_cmd!("pdctl")
            .current_dir(d)
            .arg("check")
            .args(args)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{args:?}: {all}");
        assert!(all.contains(says), "{args:?}: {says:?} not in {all}");
    }
}
