//! Test-only (cargo feature `panic-probe`, built by `make panic-probe`): a way to trap the VM
//! on purpose, so e2e/test_panic.py can check on a real Envoy that a panic is logged at
//! critical level with its message and location, and what each `failure_policy` does next.
//! The shipped module is built without the feature, so none of this is in it.

/// The request header that triggers the panic; its value goes into the panic message.
const HEADER: &str = "x-panic-probe";

#[allow(clippy::panic)]
pub fn on_request_headers(headers: &[(String, Vec<u8>)]) {
    if let Some((_, value)) = headers.iter().find(|(name, _)| name == HEADER) {
        panic!("panic probe: {}", String::from_utf8_lossy(value));
    }
}
