"""What a trap looks like on a real Envoy, and what each `failure_policy` does next.

The filter must never panic (Cargo.toml's clippy lints), so the shipped module cannot be made to
trap. The test-only build `make panic-probe` (cargo feature `panic-probe`, src/host/panic_probe.rs)
panics on a request carrying `x-panic-probe`. These tests are the evidence behind README "Failure
behaviour", and the positive control for e2e/test_hostile.py, which checks that hostile requests
leave none of these signals.

One worker (concurrency 1): each worker runs its own VM, so a trap fails only the VM of the
worker that ran the request; with one, every later request meets that VM.
"""

from __future__ import annotations

import pytest

import harness

PLUGIN_CONFIG = {
    "classification": {"rules": [{"class": "beta", "header": {"name": "x-beta", "exact": "true"}}]},
    "mirror": {"cluster": "canary", "compare": {"body": "json", "ignore": ["/upstream"]}},
}
REQUESTS_TOTAL = "progressive_delivery_requests_total"
CREATED = "wasm.envoy.wasm.runtime.v8.created"
RELOAD = "wasm.progressive-delivery.vm_reload"
BACKOFF = "wasm.progressive-delivery.vm_reload_backoff"
SUCCESS = "wasm.progressive-delivery.vm_reload_success"
FAILURE = "wasm.progressive-delivery.vm_reload_failure"

# A request the filter rewrites: its client-sent class is replaced, so an upstream can tell
# whether the filter ran on it.
BETA = [("x-beta", "true"), ("x-user-class", "spoofed")]


@pytest.fixture
def probe(envoy, upstream):
    """`probe(policy)`: Envoy running the panic probe with `failure_policy` = policy, in front
    of a primary and a canary."""

    def make(policy: str):
        primary, canary = upstream("primary"), upstream("canary")
        cfg = harness.mirroring_envoy_config(PLUGIN_CONFIG, primary, canary)
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"][0] = harness.wasm_filter(PLUGIN_CONFIG, wasm=harness.PANIC_PROBE_WASM, failure_policy=policy)
        return envoy(cfg, concurrency=1), primary, canary

    return make


def probe_panic_location() -> str:
    """Where the probe panics, as Rust reports it: FILE:LINE:COLUMN of its `panic!`."""
    path = "src/host/panic_probe.rs"
    lines = (harness.REPO / path).read_text().splitlines()
    [(line, column)] = [(i + 1, text.index("panic!") + 1) for i, text in enumerate(lines) if "panic!(" in text]
    return f"{path}:{line}:{column}"


def classified(r: harness.Response, primary: harness.Upstream) -> bool:
    """The request reached the primary with the class the filter wrote."""
    [got] = primary.take()
    return r.status == 200 and got.header_all("x-user-class") == ["beta"]


@pytest.mark.parametrize("policy", ["FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD"])
def test_a_panic_is_logged_at_critical_with_message_and_location(probe, policy):
    e, primary, canary = probe(policy)
    assert classified(e.request("GET", "/", BETA), primary)
    harness.wait_until(lambda: canary.take(), what="the copy of the first request")
    assert harness.trap_lines(e) == []

    r = e.request("GET", "/", [("x-panic-probe", f"boom-{policy}")])
    # The request that trapped is answered by Envoy, whatever the policy.
    assert (r.status, r.body) == (503, b"")
    assert primary.take() == [] and canary.take() == []

    # One line: level, plugin, location and message, so log collectors keep them together.
    line = harness.wait_for_log(e, "[critical][wasm]", "panicked at")
    tail = f"wasm log progressive-delivery progressive-delivery progressive-delivery: panicked at {probe_panic_location()}: panic probe: boom-{policy}"
    assert line.endswith(tail), line
    # Then Envoy's own report of the callback that trapped.
    harness.wait_for_log(e, "[error][wasm]", "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable")
    assert len(harness.trap_lines(e)) == 2, harness.trap_lines(e)


NO_FAILURE_STATS = {CREATED: 0, RELOAD: 0, BACKOFF: 0, SUCCESS: 0, FAILURE: 0}

# policy: (keep sending until a request is classified again, then: what the n requests sent
# after the trap got, the class header the primary saw on those that reached it, and how the
# failure stats moved).
POLICIES = {
    # Every later request is refused, until Envoy restarts or the filter config changes.
    "FAIL_CLOSED": (False, lambda n: ([503] * 5, [], NO_FAILURE_STATS)),
    # Every later request skips the filter: the client's own class header goes through.
    "FAIL_OPEN": (False, lambda n: ([200] * 5, [["spoofed"]] * 5, NO_FAILURE_STATS)),
    # Refused (and counted) until the reload back-off is over (1 s by default); then the next
    # request creates a new VM and is classified by it.
    "FAIL_RELOAD": (
        True,
        lambda n: (
            [503] * (n - 1) + [200],
            [["beta"]],
            {CREATED: 1, RELOAD: 0, BACKOFF: n - 1, SUCCESS: 1, FAILURE: 0},
        ),
    ),
}


@pytest.mark.parametrize("policy", POLICIES)
def test_what_the_requests_after_a_trap_get(probe, policy):
    keep_going, expect = POLICIES[policy]
    e, primary, canary = probe(policy)
    assert classified(e.request("GET", "/", BETA), primary)
    classified_before = e.metric(REQUESTS_TOTAL, {"user_class": "beta"})
    before = harness.vm_failure_stats(e)
    assert e.request("GET", "/", [("x-panic-probe", "1")]).status == 503

    statuses: list[int] = []
    reached: list[list[str]] = []

    def one() -> bool:
        statuses.append(e.request("GET", "/", BETA).status)
        reached.extend(g.header_all("x-user-class") for g in primary.take())
        return reached[-1:] == [["beta"]]

    if keep_going:
        harness.wait_until(one, timeout=30, interval=0.05, what="a request classified by a new VM")
    else:
        for _ in range(5):
            assert not one(), statuses
    after = harness.vm_failure_stats(e)
    moved = {k: after[k] - before[k] for k in after}

    want_statuses, want_reached, want_stats = expect(len(statuses))
    assert (statuses, reached, moved) == (want_statuses, want_reached, want_stats)
    # Only requests the filter ran on are counted.
    classified_after = e.metric(REQUESTS_TOTAL, {"user_class": "beta"})
    assert classified_after - classified_before == want_reached.count(["beta"])
    stats = e.stats()
    assert int(stats["http.ingress.downstream_rq_5xx"]) == 1 + want_statuses.count(503)
    if want_reached == [["beta"]]:
        # The new VM mirrors too (the first request's copy came before the trap).
        harness.wait_until(lambda: len(canary.received) == 2, what="the copy from the new VM")
