//! `pdctl bucket`: the sticky bucket of user ids under a seed, and whether each falls in a
//! cohort of a percent, by `progressive_delivery::bucket`.

use std::path::PathBuf;

use progressive_delivery::bucket::{bucket_of, in_cohort};
use progressive_delivery::classify::Condition;
use progressive_delivery::config;
use serde::Serialize;

use crate::describe;
use crate::{Format, Output};

pub const EXAMPLES: &str = "\
Examples:
  pdctl bucket --seed checkout-v2 --percent 5 alice bob
      each id's bucket (0..9999) and whether it is in the 5% cohort (bucket below 500)
  pdctl bucket --seed checkout-v2 --percent 5 --ids-from uids.txt
      one id per line; also the fraction of them in the cohort
  pdctl bucket --seed mirror --percent 20 alice
      mirror sampling by `sample_key` uses the seed \"mirror\"

Ids are taken as sent, byte for byte; the filter never buckets an empty id.";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The rule's `seed` (the default in a config is the empty string)
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub seed: String,
    /// The rule's `percent` (0 to 100, at most two decimals)
    #[arg(long, allow_negative_numbers = true)]
    pub percent: f64,
    /// A file with one id per line (`-` for standard input)
    #[arg(long, value_name = "FILE")]
    pub ids_from: Option<PathBuf>,
    /// User ids (cookie or header values)
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Serialize)]
struct Report<'a> {
    seed: &'a str,
    percent: f64,
    /// Buckets below this are in the cohort.
    basis_points: u32,
    ids: Vec<Placed<'a>>,
    total: usize,
    #[serde(rename = "in")]
    inside: usize,
    fraction_in: f64,
}

#[derive(Serialize)]
struct Placed<'a> {
    id: &'a str,
    bucket: u32,
    #[serde(rename = "in")]
    inside: bool,
}

pub fn run(args: &Args) -> Output {
    let basis_points = match basis_points(&args.seed, args.percent) {
        Ok(bp) => bp,
        Err(e) => return Output::fail(2, e),
    };
    let mut ids: Vec<String> = args.ids.clone();
    if let Some(path) = &args.ids_from {
        match read_ids(path) {
            Ok(more) => ids.extend(more),
            Err(e) => return Output::fail(2, e),
        }
    }
    if ids.is_empty() {
        return Output::fail(2, "no ids: give them as arguments or with --ids-from FILE");
    }
    if ids.iter().any(String::is_empty) {
        return Output::fail(
            2,
            "an empty id: the filter never buckets one (a missing or empty cookie matches no bucket rule)",
        );
    }
    let seed = args.seed.as_bytes();
    let placed: Vec<Placed> = ids
        .iter()
        .map(|id| Placed {
            id,
            bucket: bucket_of(seed, id.as_bytes()),
            inside: in_cohort(seed, id.as_bytes(), basis_points),
        })
        .collect();
    let inside = placed.iter().filter(|p| p.inside).count();
    // usize to f64: exact for any count a file of ids can have.
    let fraction_in = inside as f64 / placed.len() as f64;
    let mut out = Output::code(0);
    match args.format {
        Format::Json => out.json(&Report {
            seed: &args.seed,
            percent: args.percent,
            basis_points,
            total: placed.len(),
            inside,
            fraction_in,
            ids: placed,
        }),
        Format::Text => {
            let width = placed.iter().map(|p| p.id.len()).max().unwrap_or(0);
            for p in &placed {
                let verdict = if p.inside { "in" } else { "out" };
                out.line(format!("{:width$}  {:>4}  {verdict}", p.id, p.bucket));
            }
            out.line(format!(
                "{inside} of {} in ({}%); seed {:?}, {}% = buckets below {basis_points}",
                placed.len(),
                round2(fraction_in * 100.0),
                args.seed,
                describe::percent(basis_points),
            ));
        }
    }
    out
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The cohort size of `percent`, through the filter's own config validation: the same
/// rounding and the same limits as a bucket rule with this percent and seed.
fn basis_points(seed: &str, percent: f64) -> Result<u32, String> {
    let rule = serde_json::json!({
        "classification": {"rules": [{"class": "c", "bucket": {"header": "x-id", "percent": percent, "seed": seed}}]}
    });
    let prefix = "classification.rules[0].bucket.";
    match config::parse(rule.to_string().as_bytes()) {
        Ok(c) => match c
            .classification
            .rules
            .first()
            .and_then(|r| r.conditions.first())
        {
            Some(Condition::Bucket(b)) => Ok(b.basis_points),
            _ => Err("the filter compiled the bucket rule into something else".into()),
        },
        Err(errors) => Err(errors
            .iter()
            .map(|e| match e.path.strip_prefix(prefix) {
                Some(field) => format!("--{field}: {}", e.message),
                None => e.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

fn read_ids(path: &PathBuf) -> Result<Vec<String>, String> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("cannot read ids from standard input: {e}"))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read ids from {}: {e}", path.display()))?
    };
    // Blank lines separate nothing: an empty id is never bucketed.
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}
