//! Where a plugin configuration is found, and the exact bytes the filter would be given:
//!
//! - a JSON file that is the configuration itself, passed as it is;
//! - a Kubernetes `WasmPlugin` (YAML or JSON, any document of a stream, or an item of a
//!   `List`): `spec.pluginConfig`, as Istio delivers it (a protobuf Struct, written as JSON);
//! - an Envoy bootstrap, a DiscoveryResponse or a single extension config: each
//!   `envoy.filters.http.wasm` filter's `config.configuration` StringValue, as Envoy hands it
//!   to the VM.

use std::path::{Path, PathBuf};

use progressive_delivery::config::Config;
use serde_json::Value;

use crate::yaml;
use crate::Output;

pub const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// One configuration found in a file.
#[derive(Debug, Clone)]
pub struct Found {
    pub file: PathBuf,
    /// 1-based index of the YAML document (1 for a JSON file).
    pub document: usize,
    /// Whether the file has more than one document, so the index is worth printing.
    pub multi_document: bool,
    /// What holds it: `WasmPlugin shop/api`, `http filter "progressive-delivery"`, or
    /// `plugin configuration` for a file that is one.
    pub source: String,
    /// Where in the document: the field path of the WasmPlugin's config or of the filter.
    pub location: Option<String>,
    /// A name to pick it by (`explain --name`): the WasmPlugin's or the filter's name.
    pub name: Option<String>,
    /// The bytes the filter's `on_configure` would read, or why there are none: the wrapper
    /// itself is wrong (Kubernetes or Envoy refuses it before the filter sees anything).
    pub config: Result<Vec<u8>, Wrong>,
}

/// What is wrong with the resource around a configuration, at a field path of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrong {
    pub path: String,
    pub message: String,
}

impl Found {
    /// `file: document 2, WasmPlugin shop/api` (the document only when there are several).
    pub fn label(&self) -> String {
        let mut s = self.file.display().to_string();
        if self.multi_document {
            s.push_str(&format!(": document {}", self.document));
        }
        if self.location.is_some() || self.name.is_some() {
            s.push_str(if self.multi_document { ", " } else { ": " });
            s.push_str(&self.source);
        }
        if let Some(at) = &self.location {
            s.push_str(&format!(" at {at}"));
        }
        s
    }
}

/// The files named: a file as it is, a directory as its YAML files, recursively, in name
/// order. `Err` names a path that cannot be listed.
pub fn expand(paths: &[PathBuf]) -> Vec<Result<PathBuf, (PathBuf, String)>> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            out.push(Ok(path.clone()));
            continue;
        }
        for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
            match entry {
                Ok(e) => {
                    let yaml = e
                        .path()
                        .extension()
                        .is_some_and(|x| x == "yaml" || x == "yml");
                    if e.file_type().is_file() && yaml {
                        out.push(Ok(e.into_path()));
                    }
                }
                Err(e) => {
                    let at = e.path().unwrap_or(path).to_path_buf();
                    out.push(Err((at, e.to_string())));
                }
            }
        }
    }
    out
}

/// Every configuration in `file`. `Err` says why the file cannot be read at all.
pub fn load(file: &Path) -> Result<Vec<Found>, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read it: {e}"))?;
    let json = file.extension().is_some_and(|x| x == "json");
    if json {
        return Ok(match serde_json::from_slice::<Value>(&bytes) {
            Ok(doc) => {
                let found = in_document(file, &doc, 1, false);
                if found.is_empty() {
                    vec![plain(file, bytes)]
                } else {
                    found
                }
            }
            // Not JSON: then it is meant as the configuration, and the filter's own parser
            // says where it stops being JSON.
            Err(_) => vec![plain(file, bytes)],
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let docs = yaml::documents(&text).map_err(|e| format!("not YAML: {e}"))?;
    let multi = docs.len() > 1;
    Ok(docs
        .iter()
        .enumerate()
        .flat_map(|(i, doc)| in_document(file, doc, i.saturating_add(1), multi))
        .collect())
}

fn plain(file: &Path, bytes: Vec<u8>) -> Found {
    Found {
        file: file.to_path_buf(),
        document: 1,
        multi_document: false,
        source: "plugin configuration".into(),
        location: None,
        name: None,
        config: Ok(bytes),
    }
}

fn in_document(file: &Path, doc: &Value, document: usize, multi: bool) -> Vec<Found> {
    let found = |source: String, location: Option<String>, name: Option<String>, config| Found {
        file: file.to_path_buf(),
        document,
        multi_document: multi,
        source,
        location,
        name,
        config,
    };
    let mut out = Vec::new();
    let mut resources = Vec::new();
    match doc.get("kind").and_then(Value::as_str) {
        Some("List") => {
            for (i, item) in doc
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                resources.push((format!("items[{i}]."), item));
            }
        }
        _ => resources.push((String::new(), doc)),
    }
    for (prefix, resource) in resources {
        if resource.get("kind").and_then(Value::as_str) == Some("WasmPlugin") {
            let meta = resource.get("metadata");
            let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
            let name = field("name").unwrap_or("(no name)").to_string();
            let source = match field("namespace") {
                Some(ns) => format!("WasmPlugin {ns}/{name}"),
                None => format!("WasmPlugin {name}"),
            };
            let location = format!("{prefix}spec.pluginConfig");
            let config = plugin_config(resource, &location);
            out.push(found(source, Some(location), Some(name), config));
        } else {
            let mut filters = Vec::new();
            wasm_filters(
                resource,
                &mut prefix.trim_end_matches('.').to_string(),
                None,
                &mut filters,
            );
            for (location, name, wasm_path, wasm) in filters {
                let source = match &name {
                    Some(n) => format!("http filter {n:?}"),
                    None => "wasm filter".to_string(),
                };
                let config = filter_configuration(wasm, &wasm_path);
                out.push(found(source, Some(location), name, config));
            }
        }
    }
    out
}

/// What Istio passes the filter for a WasmPlugin: nothing for an absent or empty
/// `pluginConfig` (as the filter reads an empty configuration), else the Struct's JSON.
fn plugin_config(resource: &Value, location: &str) -> Result<Vec<u8>, Wrong> {
    match resource.get("spec").and_then(|s| s.get("pluginConfig")) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) if m.is_empty() => Ok(Vec::new()),
        Some(v @ Value::Object(_)) => Ok(yaml::struct_json(v).into_bytes()),
        Some(_) => Err(Wrong {
            path: location.to_string(),
            message: "must be a mapping (the WasmPlugin CRD declares an object)".into(),
        }),
    }
}

/// Every `envoy.filters.http.wasm` config in `v`: (field path of the filter, the filter's
/// name, field path of the Wasm message, the Wasm message). The name is that of the object whose `typed_config` it is (an
/// HTTP filter, an ECDS TypedExtensionConfig).
fn wasm_filters<'a>(
    v: &'a Value,
    path: &mut String,
    name: Option<&str>,
    out: &mut Vec<(String, Option<String>, String, &'a Value)>,
) {
    match v {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str) == Some(WASM_TYPE) {
                let at = path
                    .strip_suffix(".typed_config")
                    .unwrap_or(path.as_str())
                    .to_string();
                let at = if at.is_empty() { ".".to_string() } else { at };
                out.push((at, name.map(str::to_string), path.clone(), v));
                return;
            }
            let own_name = map.get("name").and_then(Value::as_str);
            for (k, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                let name = if k == "typed_config" { own_name } else { None };
                wasm_filters(item, path, name, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                wasm_filters(item, path, None, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The bytes Envoy gives the VM: a StringValue's `value`; nothing when `configuration` is
/// left out.
fn filter_configuration(wasm: &Value, wasm_path: &str) -> Result<Vec<u8>, Wrong> {
    let at = |field: &str| {
        if wasm_path.is_empty() {
            field.to_string()
        } else {
            format!("{wasm_path}.{field}")
        }
    };
    let Some(configuration) = wasm.get("config").and_then(|c| c.get("configuration")) else {
        return Ok(Vec::new());
    };
    let kind = configuration.get("@type").and_then(Value::as_str);
    if kind != Some(STRING_VALUE_TYPE) {
        return Err(Wrong {
            path: at("config.configuration"),
            message: format!(
                "is {}; pdctl reads a {STRING_VALUE_TYPE}, as envoy.yaml and Istio pass it",
                kind.map_or("not a typed Any".to_string(), |k| format!("a {k}"))
            ),
        });
    }
    match configuration.get("value") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.clone().into_bytes()),
        Some(_) => Err(Wrong {
            path: at("config.configuration.value"),
            message:
                "must be a string (the configuration's JSON text); Envoy refuses anything else"
                    .into(),
        }),
    }
}

/// The configuration to work with, parsed by the filter's parser, and where it was found.
/// Errors are the output to give: status 2 for a file or a name that cannot be used, 1 for an
/// invalid configuration (each of the filter's messages).
pub fn configuration(config: &Path, name: Option<&str>) -> Result<(String, Config), Output> {
    let found = select(config, name)?;
    let bytes = match &found.config {
        Ok(b) => b.clone(),
        Err(wrong) => {
            return Err(Output::fail(
                1,
                format!("{}: {}: {}", found.label(), wrong.path, wrong.message),
            ))
        }
    };
    match progressive_delivery::config::parse(&bytes) {
        Ok(c) => Ok((found.label(), c)),
        Err(errors) => {
            let mut out = Output::code(1);
            for e in errors.iter() {
                out.err(format!("{}: invalid configuration: {e}", found.label()));
            }
            Err(out)
        }
    }
}

/// The one configuration in `config` (a file or a directory), picked by `name` when there are
/// several.
fn select(config: &Path, name: Option<&str>) -> Result<Found, Output> {
    let mut found = Vec::new();
    for entry in expand(&[config.to_path_buf()]) {
        let file =
            entry.map_err(|(path, e)| Output::fail(2, format!("{}: {e}", path.display())))?;
        let more = load(&file).map_err(|e| Output::fail(2, format!("{}: {e}", file.display())))?;
        found.extend(more);
    }
    let all: Vec<String> = found.iter().filter_map(|f| f.name.clone()).collect();
    if let Some(name) = name {
        found.retain(|f| f.name.as_deref() == Some(name));
        if found.is_empty() {
            return Err(Output::fail(
                2,
                format!(
                    "{}: no configuration named {name:?}; the names there: {}",
                    config.display(),
                    if all.is_empty() {
                        "none".to_string()
                    } else {
                        all.join(", ")
                    }
                ),
            ));
        }
    }
    match found.len() {
        0 => Err(Output::fail(
            2,
            format!(
                "{}: no plugin configuration: expected a JSON configuration, a WasmPlugin, or an Envoy config with an envoy.filters.http.wasm filter",
                config.display()
            ),
        )),
        1 => Ok(found.remove(0)),
        n => Err(Output::fail(
            2,
            format!(
                "{}: {n} configurations ({}); pick one with --name, or name its file",
                config.display(),
                found.iter().map(Found::label).collect::<Vec<_>>().join("; ")
            ),
        )),
    }
}
