//! pdctl: checks progressive-delivery configurations and explains the filter's decisions
//! before anything reaches Envoy. Every verdict comes from the filter's own pure modules
//! (`progressive_delivery::config`, `classify`, `bucket`, `mirror_policy`): pdctl builds the
//! inputs and prints the answers, it never decides anything itself.

mod bucket;
mod check;
mod describe;
mod diff;
mod explain;
mod html;
mod report;
mod source;
mod yaml;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  pdctl check istio/ envoy.yaml
  pdctl explain --config envoy.yaml -H 'x-beta: true' http://shop.example/api/cart
  pdctl bucket --seed checkout-v2 --percent 5 alice bob
  pdctl diff --config envoy.yaml primary.txt canary.txt --baseline baseline.txt
  pdctl report --prometheus http://localhost:9090 --canary canary --html report.html";

#[derive(Parser, Debug)]
#[command(
    name = "pdctl",
    version,
    about = "Check progressive-delivery configurations and explain the filter's decisions",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate plugin configurations with the filter's own parser
    Check(check::Args),
    /// Show how the filter classifies one request and whether it mirrors it
    Explain(explain::Args),
    /// Show the sticky bucket of user ids, and whether they fall in a cohort
    Bucket(bucket::Args),
    /// Compare recorded answers as the filter does: the result and every difference
    Diff(diff::Args),
    /// The rollout review from Prometheus: decisions, results, mismatch ratio, endpoints, latency
    Report(report::Args),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// What a command prints, and its exit status. Commands build it whole, so main is the only
/// place that writes, and a closed pipe is an ordinary exit rather than a panic.
pub struct Output {
    stdout: String,
    stderr: String,
    code: u8,
}

impl Output {
    pub fn code(code: u8) -> Self {
        Output {
            stdout: String::new(),
            stderr: String::new(),
            code,
        }
    }

    /// An error: one line on stderr, and the status.
    pub fn fail(code: u8, message: impl std::fmt::Display) -> Self {
        let mut out = Output::code(code);
        out.err(format!("pdctl: {message}"));
        out
    }

    pub fn line(&mut self, line: impl AsRef<str>) {
        self.stdout.push_str(line.as_ref());
        self.stdout.push('\n');
    }

    pub fn err(&mut self, line: impl AsRef<str>) {
        self.stderr.push_str(line.as_ref());
        self.stderr.push('\n');
    }

    pub fn json(&mut self, value: &impl serde::Serialize) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => self.line(text),
            Err(e) => {
                self.err(format!("pdctl: cannot write the report as JSON: {e}"));
                self.code = 2;
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version land here too, with status 0.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let out = match &cli.command {
        Command::Check(args) => check::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Bucket(args) => bucket::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Report(args) => report::run(args),
    };
    // Nothing to do about a closed stdout or stderr but stop; the status still tells.
    let _ = std::io::stdout().lock().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().lock().write_all(out.stderr.as_bytes());
    ExitCode::from(out.code)
}
