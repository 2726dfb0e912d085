//! The host adapter: turns proxy-wasm callbacks into calls on the pure modules. Everything
//! that talks to Envoy is here, and every host call's `Result` is handled: a failed host call
//! costs a feature on one request, never the request.

mod http;
mod mirror;
mod root;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // Also installs a panic hook that logs the panic at critical level, so a trap (which
    // the clippy lints in Cargo.toml are there to prevent) is diagnosable from Envoy's log.
    // Info until on_configure reads the host's level; see `root::follow_host_log_level`.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(root::Root::default()));
}}
