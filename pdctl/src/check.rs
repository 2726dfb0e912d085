//! `pdctl check`: every configuration in the files, through the filter's own parser.

use std::path::PathBuf;

use progressive_delivery::config;
use serde::Serialize;

use crate::source::{self, Found};
use crate::{Format, Output};

pub const EXAMPLES: &str = "\
Examples:
  pdctl check istio/ envoy.yaml
      every WasmPlugin under istio/ (YAML, recursively) and the filter's configuration in envoy.yaml
  pdctl check plugin-config.json
      a configuration as the filter reads it (a JSON file that is not a WasmPlugin or an Envoy config)
  pdctl check --format json ecds.yaml
      the same verdict as JSON, for CI

Exit status: 0 every configuration is valid, 1 one is invalid (or none was found),
2 a file cannot be read.";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Files to check: JSON plugin configurations, Kubernetes YAML (WasmPlugins), Envoy
    /// bootstraps or ECDS resources; a directory stands for its YAML files, recursively.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Serialize)]
struct Report {
    valid: bool,
    checked: usize,
    invalid: usize,
    configurations: Vec<Checked>,
    unreadable: Vec<Unreadable>,
}

#[derive(Serialize)]
struct Checked {
    file: String,
    /// 1-based.
    document: usize,
    source: String,
    location: Option<String>,
    valid: bool,
    errors: Vec<Problem>,
}

#[derive(Serialize)]
struct Problem {
    /// Field path: of the plugin configuration for the filter's errors, of the document for
    /// a resource that cannot deliver one.
    path: String,
    message: String,
    /// The line the filter logs for it (`invalid configuration: ...`); `null` when the filter
    /// never sees it (Kubernetes or Envoy refuses the resource first).
    log: Option<String>,
}

#[derive(Serialize)]
struct Unreadable {
    file: String,
    error: String,
}

pub fn run(args: &Args) -> Output {
    let mut configurations = Vec::new();
    let mut unreadable = Vec::new();
    let mut empty_files = Vec::new();
    for entry in source::expand(&args.files) {
        let file = match entry {
            Ok(f) => f,
            Err((path, e)) => {
                unreadable.push(Unreadable {
                    file: path.display().to_string(),
                    error: e,
                });
                continue;
            }
        };
        match source::load(&file) {
            Ok(found) if found.is_empty() => empty_files.push(file),
            Ok(found) => configurations.extend(found.iter().map(check)),
            Err(e) => unreadable.push(Unreadable {
                file: file.display().to_string(),
                error: e,
            }),
        }
    }
    let invalid = configurations.iter().filter(|c| !c.1.valid).count();
    let nothing = configurations.is_empty() && unreadable.is_empty();
    let code = if !unreadable.is_empty() {
        2
    } else if invalid > 0 || nothing {
        1
    } else {
        0
    };
    let mut out = Output::code(code);
    match args.format {
        Format::Json => {
            let report = Report {
                valid: code == 0,
                checked: configurations.len(),
                invalid,
                configurations: configurations.into_iter().map(|(_, c)| c).collect(),
                unreadable,
            };
            out.json(&report);
        }
        Format::Text => {
            for (label, c) in &configurations {
                if c.valid {
                    out.line(format!("{label}: ok"));
                }
                for p in &c.errors {
                    match &p.log {
                        Some(log) => out.line(format!("{label}: {log}")),
                        None => out.line(format!("{label}: {}: {}", p.path, p.message)),
                    }
                }
            }
            for u in &unreadable {
                out.err(format!("{}: {}", u.file, u.error));
            }
            let checked = configurations.len();
            if nothing {
                out.err(format!(
                    "no plugin configuration in {}: expected a JSON configuration, a WasmPlugin, \
                     or an Envoy config with an envoy.filters.http.wasm filter",
                    list(&empty_files, &args.files)
                ));
            } else {
                out.line(format!(
                    "{checked} configuration{} checked, {invalid} invalid{}",
                    if checked == 1 { "" } else { "s" },
                    if unreadable.is_empty() {
                        String::new()
                    } else {
                        format!(", {} file(s) unreadable", unreadable.len())
                    }
                ));
            }
        }
    }
    out
}

fn list(files: &[PathBuf], named: &[PathBuf]) -> String {
    let files = if files.is_empty() { named } else { files };
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The filter's verdict on one configuration, with the label to print it under.
fn check(found: &Found) -> (String, Checked) {
    let errors = match &found.config {
        Ok(bytes) => match config::parse(bytes) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .iter()
                .map(|e| Problem {
                    path: e.path.clone(),
                    message: e.message.clone(),
                    // The filter's root context logs each error exactly so.
                    log: Some(format!("invalid configuration: {e}")),
                })
                .collect(),
        },
        Err(wrong) => vec![Problem {
            path: wrong.path.clone(),
            message: wrong.message.clone(),
            log: None,
        }],
    };
    let checked = Checked {
        file: found.file.display().to_string(),
        document: found.document,
        source: found.source.clone(),
        location: found.location.clone(),
        valid: errors.is_empty(),
        errors,
    };
    (found.label(), checked)
}
