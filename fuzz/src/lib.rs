//! What the fuzz targets share: the realistic configs they run requests through, and the
//! decoding of an input into a request.
//!
//! Inputs are text, not `arbitrary`'s binary layout, so the seeds in `corpus/` can be written
//! and read by hand and a crash artifact shows at a glance which request it was:
//!
//! ```text
//! 1 9999 new-visitor-id          <- control line: whitespace-separated fields, per target
//! :method: GET                   <- one header per line: name, ':', optional space, value
//! :path: /api/items?preview
//! cookie: uid=42; type=insider
//! ```
//!
//! A header value runs to the end of its line and may hold any byte but '\n'; names are
//! lowercased, as Envoy hands them to the filter.

use progressive_delivery::config::{self, Config};

pub type Headers = Vec<(String, Vec<u8>)>;

/// The configs of `corpus/config/` that the request targets classify and mirror with: the
/// seeds of the `config` target are the configs the filter is known to run with, so both
/// kinds of target exercise the same ones.
pub const CONFIGS: [(&str, &str); 8] = [
    (
        "envoy-yaml",
        include_str!("../corpus/config/envoy-yaml.json"),
    ),
    (
        "documented-classification",
        include_str!("../corpus/config/documented-classification.json"),
    ),
    (
        "bench-twenty-rules",
        include_str!("../corpus/config/bench-twenty-rules.json"),
    ),
    (
        "trusted-matchers",
        include_str!("../corpus/config/trusted-matchers.json"),
    ),
    (
        "mirror-documented",
        include_str!("../corpus/config/mirror-documented.json"),
    ),
    (
        "mirror-header-key",
        include_str!("../corpus/config/mirror-header-key.json"),
    ),
    (
        "mirror-cookie-sample",
        include_str!("../corpus/config/mirror-cookie-sample.json"),
    ),
    (
        "mirror-defaults",
        include_str!("../corpus/config/mirror-defaults.json"),
    ),
];

/// Every config of [`CONFIGS`], compiled once per process. A seed config that stops
/// compiling is a broken target, not a finding: it panics at once, on the first input.
pub fn configs() -> &'static [Config] {
    static COMPILED: std::sync::OnceLock<Vec<Config>> = std::sync::OnceLock::new();
    COMPILED.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|(name, json)| match config::parse(json.as_bytes()) {
                Ok(c) => c,
                Err(e) => panic!("seed config {name} does not compile: {e}"),
            })
            .collect()
    })
}

/// The control line's fields and the request's headers.
pub struct Input<'a> {
    pub fields: Vec<&'a [u8]>,
    pub headers: Headers,
}

impl<'a> Input<'a> {
    pub fn decode(data: &'a [u8]) -> Self {
        let mut lines = data.split(|&b| b == b'\n');
        let control = lines.next().unwrap_or_default();
        let fields = control
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|line| {
                // A pseudo-header's own ':' is part of its name.
                let colon = line
                    .iter()
                    .skip(1)
                    .position(|&b| b == b':')
                    .map_or(line.len(), |i| i + 1);
                let (name, rest) = line.split_at(colon);
                let value = rest.strip_prefix(b":").unwrap_or(rest);
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (
                    String::from_utf8_lossy(name).to_ascii_lowercase(),
                    value.to_vec(),
                )
            })
            .collect();
        Input { fields, headers }
    }

    /// Field `i` of the control line as a number, or `None` when absent or not a number.
    pub fn number(&self, i: usize) -> Option<u64> {
        let f = self.fields.get(i)?;
        std::str::from_utf8(f).ok()?.parse().ok()
    }

    /// Field `i` as text, or `None` when absent.
    pub fn text(&self, i: usize) -> Option<String> {
        self.fields
            .get(i)
            .map(|f| String::from_utf8_lossy(f).into_owned())
    }

    /// The config field `i` picks, by its index in `configs` (modulo their number).
    pub fn pick<'c, T>(&self, i: usize, configs: &'c [T]) -> &'c T {
        let n = configs.len() as u64;
        let index = self.number(i).unwrap_or(0) % n;
        &configs[index as usize]
    }
}
