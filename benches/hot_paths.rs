//! Criterion micro-benchmarks of the per-request pure functions: classification, the mirror
//! decision, and the reduction and comparison of the two answers. `make microbench` runs
//! them; `make microprofile` counts the instructions of the same cases under callgrind.
//!
//! Native only: they measure the logic, not the wasm engine, and criterion does not build
//! for wasm32, where `--all-targets` lint runs still compile this file to an empty main.

#[cfg(not(target_arch = "wasm32"))]
mod fixtures;

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    let mut c = criterion::Criterion::default().configure_from_args();
    for case in fixtures::all() {
        c.bench_function(case.name, |b| b.iter(&case.run));
    }
    c.final_summary();
}

#[cfg(target_arch = "wasm32")]
fn main() {}
