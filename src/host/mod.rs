//! The host adapter: turns proxy-wasm callbacks into calls on the pure modules. Everything
//! that talks to Envoy is here, and every host call's `Result` is handled: a failed host call
//! costs a feature on one request, never the request.

mod http;
mod mirror;
#[cfg(feature = "panic-probe")]
mod panic_probe;
mod plugin;
#[cfg(feature = "queue-probe")]
mod queue_probe;
mod root;

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // Info until on_configure reads the host's level; see `root::follow_host_log_level`.
    proxy_wasm::set_log_level(LogLevel::Info);
    // After set_log_level, which installs the SDK's own hook once and never again.
    std::panic::set_hook(Box::new(log_panic));
    proxy_wasm::set_root_context(|_| Box::new(root::Root::default()));
}}

/// Logs a panic at critical level through the host, so a trap (which the clippy lints in
/// Cargo.toml are there to prevent) is diagnosable from Envoy's log. One line, unlike the
/// SDK's hook (`panicked at LOCATION:` newline `MESSAGE`): log collectors split records on
/// newlines, and the message would land in a record of its own, without the critical level.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    // The SDK's rendering (which its hook links in anyway), with the newline made a space.
    let line = info.to_string().replace('\n', " ");
    // Nothing is left to report a failure to: the VM traps right after this.
    let _ = hostcalls::log(LogLevel::Critical, &line);
}
