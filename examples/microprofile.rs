//! Runs one benchmark case of `benches/hot_paths.rs` a fixed number of times, for
//! `valgrind --tool=callgrind` (see `benches/callgrind.sh`, `make microprofile`). Instruction
//! counts are exact and repeatable where wall-clock times on a shared 2-core machine are not.
//!
//! `microprofile` lists the cases; `microprofile CASE N` runs CASE N times inside
//! `measured`, the only function callgrind collects in.

#[path = "../benches/fixtures/mod.rs"]
mod fixtures;

use std::process::ExitCode;

#[inline(never)]
fn measured(run: &dyn Fn(), n: u64) {
    for _ in 0..n {
        run();
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cases = fixtures::all();
    match args.as_slice() {
        [] => {
            for case in &cases {
                println!("{}", case.name);
            }
            ExitCode::SUCCESS
        }
        [name, n] => {
            let (Some(case), Ok(n)) = (cases.iter().find(|c| c.name == name), n.parse()) else {
                eprintln!("usage: microprofile [CASE N] (no arguments lists the cases)");
                return ExitCode::FAILURE;
            };
            measured(&case.run, n);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: microprofile [CASE N] (no arguments lists the cases)");
            ExitCode::FAILURE
        }
    }
}
