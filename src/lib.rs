//! progressive-delivery: a Proxy-Wasm filter that classifies users into classes for
//! canary routing, mirrors idempotent requests to the canary and compares its answers.
//!
//! Everything but `host` is pure logic with no `proxy_wasm` import, so it is tested natively
//! and under `wasm-bindgen-test` on `wasm32-unknown-unknown`. `host` translates proxy-wasm
//! callbacks into calls on that logic.

// Tests compute expected values with plain arithmetic; the lint guards the filter's code,
// which the non-test lint runs still check (clippy.toml allows unwrap & co. in tests alike).
#![cfg_attr(test, allow(clippy::arithmetic_side_effects))]

pub mod bucket;
pub mod classify;
pub mod compare;
pub mod config;
pub mod cookie;
pub mod decode;
pub mod endpoint;
pub mod grpc;
pub mod http_syntax;
pub mod json_diff;
pub mod label;
pub mod metrics;
pub mod mirror_policy;
pub mod mirror_session;
pub mod noise;
pub mod pending;
pub mod protobuf_diff;
pub mod query;
pub mod rate_limit;
pub mod request;
pub mod string_match;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
mod host;

// Every pure module's test module starts with
//     #[cfg(target_arch = "wasm32")]
//     use wasm_bindgen_test::wasm_bindgen_test as test;
// so the same `#[test]` functions run natively under `cargo test` and in Node under
// wasm-bindgen-test: one table of cases, two targets.
