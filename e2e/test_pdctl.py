"""`pdctl explain` and the filter agree: each request goes through a real Envoy running the shipped
envoy.yaml, and what pdctl printed for it (`explain --show-copy --format json`, on the same
envoy.yaml) is checked against what happened there: the class the upstream received (and the
features header), the mirror decision Envoy counted for that request alone, and the headers the
canary's copy carried."""

from __future__ import annotations

import json
import subprocess

import pytest

import harness

MIRROR_TOTAL = "progressive_delivery_mirror_total"
HOST = "shop.example"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"

# What Envoy itself puts on a request, which pdctl is not told about: the connection manager
# adds x-forwarded-proto, x-request-id and (the client being on loopback) x-envoy-internal
# before the filter runs, so the copy carries them too, and the callout's router sets the
# copy's content-length and its timeout header.
ENVOY_OWN = {
    "x-forwarded-proto", "x-request-id", "x-envoy-internal", "x-envoy-expected-rq-timeout-ms", "content-length",
}


def uid(inside: bool) -> str:
    """A uid in (or out of) envoy.yaml's 5% `checkout-v2` cohort."""
    return next(f"visitor-{i}" for i in range(10_000) if (harness.bucket("checkout-v2", f"visitor-{i}") < 500) == inside)


OUT, IN = uid(False), uid(True)

CASES = [
    # (what, method, path, headers, body)
    ("stable read", "GET", "/api/items?page=2", [("cookie", f"uid={OUT}")], None),
    ("beta header", "GET", "/api/items", [("x-beta", "true"), ("cookie", f"uid={OUT}")], None),
    ("beta query", "GET", "/api/items?beta", [("cookie", f"uid={OUT}")], None),
    ("insider cookie", "GET", "/", [("cookie", f"a=1; type=insider; uid={OUT}")], None),
    ("firefox", "GET", "/api/items", [("user-agent", FIREFOX), ("cookie", f"uid={OUT}")], None),
    ("cohort", "GET", "/api/items", [("cookie", f"uid={IN}")], None),
    ("spoofed class and features", "GET", "/api/me", [("x-user-class", "beta"), ("x-features", "admin"), ("cookie", f"uid={OUT}")], None),
    ("hop-by-hop and tags", "GET", "/api/items", [("te", "trailers"), ("x-request-tag", "keep-me"), ("cookie", f"uid={OUT}")], None),
    ("put with a body", "PUT", "/api/items/1", [("content-type", "application/json"), ("cookie", f"uid={OUT}")], b'{"name": "x"}'),
    ("post", "POST", "/api/cart", [("cookie", f"uid={OUT}")], b"{}"),
    ("method override", "GET", "/api/cart", [("x-http-method-override", "POST"), ("cookie", f"uid={OUT}")], None),
    ("excluded path", "GET", "/api/logout", [("cookie", f"uid={OUT}")], None),
    ("already a copy", "GET", "/api/items", [("x-mirror", "1"), ("cookie", f"uid={OUT}")], None),
    ("first visit", "GET", "/api/items", [], None),
]


@pytest.fixture(scope="module")
def pdctl() -> str:
    """dist/pdctl, built (or found up to date) by `make cli`."""
    r = harness.run_make("cli")
    assert r.returncode == 0, r.stdout + r.stderr
    return str(harness.REPO / "dist" / "pdctl")


def explain(pdctl: str, method: str, path: str, headers: list[tuple[str, str]], new_id: str | None) -> dict:
    args = [pdctl, "explain", "--config", "envoy.yaml", "--show-copy", "--format", "json", "-X", method]
    for name, value in headers:
        args += ["-H", f"{name}: {value}"]
    if new_id is not None:
        args += ["--new-id", new_id]
    args.append(f"http://{HOST}{path}")
    r = subprocess.run(args, cwd=harness.REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def decision_total(e: harness.Envoy) -> dict[str, float]:
    return harness.counts_by(e, MIRROR_TOTAL, "decision")


def test_explain_agrees_with_the_filter(pdctl, envoy, primary_and_canary):
    primary, canary = primary_and_canary["primary"], primary_and_canary["canary"]
    e = envoy(harness.shipped_config_on({"primary": primary.port, "canary": canary.port}))
    seen_decisions = set()
    for what, method, path, extra, body in CASES:
        headers = [("host", HOST), *extra]
        if body is not None:
            headers.append(("content-length", str(len(body))))
        before = decision_total(e)
        r = e.request(method, path, [h for h in headers if h[0] != "content-length"], body)
        assert r.status == 200, (what, r.status, r.body)

        # A first-time visitor was given an id: pdctl is given the same one.
        assigned = [v.split(";")[0].split("=", 1) for v in r.header_all("set-cookie")]
        new_id = assigned[0][1] if assigned else None
        x = explain(pdctl, method, path, headers, new_id)
        assert x["assigned_cookies"] == assigned, (what, x)

        # The decision Envoy counted for this request, and only this one.
        def counted():
            now = decision_total(e)
            delta = {k: v - before.get(k, 0) for k, v in now.items() if v != before.get(k, 0)}
            return delta if sum(delta.values()) >= 1 else None

        delta = harness.wait_until(counted, 10, what=f"{what}: a mirror decision")
        decision = x["mirror"]["decision"]
        assert delta == {decision: 1}, (what, delta, x["mirror"])
        assert x["mirror"]["random"] is False
        seen_decisions.add(decision)
        if decision == "mirrored":
            harness.wait_until(lambda: any(c.header("x-mirror") for c in canary.received), 10, what=f"{what}: the copy")
        received = primary.take() + canary.take()
        # Only the filter's copies carry the marker, but for a client that sent it itself.
        marked = decision == "mirrored"
        copies = [req for req in received if marked and req.header("x-mirror") is not None]
        routed = [req for req in received if req not in copies]

        # The class and features headers the routed request reached its upstream with.
        assert len(routed) == 1, (what, routed)
        assert routed[0].header_all("x-user-class") == [x["class"]], (what, routed[0].headers, x["decided_by"])
        features = dict(x["headers"])["x-features"]
        assert routed[0].header_all("x-features") == ([features] if features else []), (what, routed[0].headers)

        if decision == "mirrored":
            assert len(copies) == 1, (what, copies)
            assert_copy(what, copies[0], x["mirror"]["copy"], body)
        else:
            assert x["mirror"]["copy"] is None
    # The table exercises every decision a request's headers decide.
    assert seen_decisions == {"mirrored", "class_excluded", "not_idempotent", "path_excluded", "is_mirror"}, seen_decisions


def assert_copy(what: str, got: harness.Received, want: list[list[str]], body: bytes | None) -> None:
    """The copy the canary received is the one pdctl printed, as HTTP/1 carries it (the
    authority as `host`, method and path on the request line, no scheme), plus Envoy's own."""
    want_pseudo = {n: v for n, v in want if n.startswith(":")}
    assert got.method == want_pseudo[":method"], what
    assert got.path == want_pseudo[":path"], what
    want_headers = sorted([("host", want_pseudo[":authority"])] + [(n, v) for n, v in want if not n.startswith(":")])
    got_headers = sorted((n.lower(), v) for n, v in got.headers)
    assert [h for h in got_headers if h[0] not in ENVOY_OWN] == want_headers, what
    assert {n for n, _ in got_headers if n in ENVOY_OWN} <= ENVOY_OWN
    assert got.body == (body or b""), what
