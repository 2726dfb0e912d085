"""Mirroring in a real Envoy: the filter copies eligible requests to the `canary` cluster with an
HTTP callout, the client always gets the primary's answer, and each decision and each comparison
of the two answers is counted (and logged when they differ or the mirror fails).

Every test starts its own Envoy in front of two recording upstreams; every route goes to
`primary`, and nothing but the filter sends to `canary`. Comparisons are counted after both
answers are in, so tests poll the metrics with a deadline instead of sleeping.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

import harness

MIRROR_TOTAL = "progressive_delivery_mirror_total"
COMPARISONS = "progressive_delivery_comparisons_total"
PRIMARY_MS = "progressive_delivery_primary_duration_ms"
MIRROR_MS = "progressive_delivery_mirror_duration_ms"
PENDING = "progressive_delivery_mirrors_pending"
# Envoy prefixes plugin lines with "wasm log" and the plugin, root and VM names it knows in that
# context: root-context lines show two names, per-request lines three.
LOG_PREFIX = "wasm log progressive-delivery progressive-delivery"

CLASSIFICATION = {
    "rules": [{"class": "beta", "header": {"name": "x-beta", "exact": "true"}}],
    "features_header": "x-features",
    "features": {"beta": ["new-checkout"]},
}

# What both upstreams answer unless a test says otherwise: the same, so comparisons match.
SAME = {"ok": True, "items": [1, 2, 3]}


def plugin_config(**mirror) -> dict:
    return {"classification": CLASSIFICATION, "mirror": {"cluster": "canary", **mirror}}


@pytest.fixture
def mirroring(envoy, upstream):
    """`mirroring(mirror_fields, primary=..., canary=..., canary_cluster=True, **envoy_kw)`
    starts a primary and a canary upstream (responders; `canary` may also be a port where
    nothing listens) and an Envoy whose plugin config has `mirror` = {"cluster": "canary",
    **mirror_fields}. Returns (envoy, primary, canary)."""

    def make(mirror: dict | None = None, *, primary=None, canary=None, canary_cluster=True, **envoy_kw):
        p = upstream("primary", primary or harness.fixed(200, SAME))
        c = canary if isinstance(canary, int) else upstream("canary", canary or harness.fixed(200, SAME))
        cfg = harness.mirroring_envoy_config(plugin_config(**(mirror or {})), p, c, canary_cluster=canary_cluster)
        return envoy(cfg, **envoy_kw), p, c

    return make


def decisions(e: harness.Envoy, **where) -> dict[str, float]:
    return harness.counts_by(e, MIRROR_TOTAL, "decision", **where)


def results(e: harness.Envoy, **where) -> dict[str, float]:
    return harness.counts_by(e, COMPARISONS, "result", **where)


def wait_for_results(e: harness.Envoy, n: int, timeout: float = 10.0) -> dict[str, float]:
    """Waits until `n` comparisons have been counted in all (any result); returns them."""
    try:
        harness.wait_until(lambda: sum(results(e).values()) >= n, timeout, what=f"{n} comparisons")
    except AssertionError as err:
        raise AssertionError(f"{err}: got {results(e)}, decisions {decisions(e)}") from None
    got = results(e)
    assert sum(got.values()) == n, got
    return got


def wait_for_decisions(e: harness.Envoy, want: dict[str, float], timeout: float = 10.0) -> None:
    try:
        harness.wait_until(lambda: decisions(e) == want, timeout, what=f"decisions {want}")
    except AssertionError as err:
        raise AssertionError(f"{err}: got {decisions(e)}") from None


def mirror_lines(e: harness.Envoy) -> list[str]:
    return [
        line
        for line in e.log().splitlines()
        if LOG_PREFIX in line and ("mirror mismatch" in line or "mirror failed" in line)
    ]


def sample_bucket(key: str) -> int:
    return harness.bucket("mirror", key)


# ---------------------------------------------------------------------------------------------
# 1. Which requests are copied, and what the copy looks like

# The hop-by-hop headers Envoy itself passes on to an upstream (it drops Connection, Keep-Alive,
# Upgrade, Proxy-Connection and Connection-named headers before any filter runs).
HOP_BY_HOP = [("te", "trailers"), ("trailer", "x-checksum")]
REMOVED = [("authorization", "Bearer secret"), ("x-internal-token", "t0k3n")]


def test_safe_methods_are_copied_with_marker_and_shadow_authority(mirroring):
    e, primary, canary = mirroring({"remove_headers": ["authorization", "x-internal-token"]})
    common = [("host", "api.example"), *HOP_BY_HOP, *REMOVED, ("x-request-tag", "keep-me")]
    mirrored = {
        # path: (method, extra headers, body, host the canary must see, class, features)
        "/api/get?q=1&r=a%20b": ("GET", [], None, "api.example-shadow", "stable", None),
        "/api/head?q=2": ("HEAD", [], None, "api.example-shadow", "stable", None),
        "/api/options?q=3": ("OPTIONS", [], None, "api.example-shadow", "stable", None),
        "/api/put?q=4": ("PUT", [("content-type", "application/json")], b'{"name": "x"}', "api.example-shadow", "stable", None),
        "/api/delete?q=5": ("DELETE", [], None, "api.example-shadow", "stable", None),
        "/api/trace": ("TRACE", [], None, "api.example-shadow", "stable", None),
        # An override naming an allowed method does not block the copy.
        "/api/override-to-delete": ("GET", [("x-http-method-override", "DELETE")], None, "api.example-shadow", "stable", None),
        # A client-sent class is replaced by the filter's before the copy is made.
        "/api/spoofed": ("GET", [("x-user-class", "beta"), ("x-features", "admin")], None, "api.example-shadow", "stable", None),
        "/api/beta": ("GET", [("x-beta", "true")], None, "api.example-shadow", "beta", "new-checkout"),
    }
    for path, (method, extra, body, _, _, _) in mirrored.items():
        r = e.request(method, path, common + extra, body)
        assert r.status == 200, (path, r.status, r.body)
    # The suffix goes before the port.
    r = e.request("GET", "/api/port", [("host", "api.example:8080")])
    assert r.status == 200
    mirrored["/api/port"] = ("GET", [], None, "api.example-shadow:8080", "stable", None)

    not_mirrored = 0
    for method in ("POST", "PATCH"):
        assert e.request(method, f"/api/{method.lower()}", common, b'{"a": 1}').status == 200
        not_mirrored += 1
    for method in ("GET", "PUT"):
        for override in ("x-http-method-override", "x-http-method", "x-method-override"):
            for named in ("POST", "PATCH"):
                body = b"{}" if method == "PUT" else None
                r = e.request(method, f"/api/override/{method}/{override}/{named}", common + [(override, named)], body)
                assert r.status == 200
                not_mirrored += 1
    # Without idempotency_key_header configured, the key does not make a POST eligible.
    assert e.request("POST", "/api/post-with-key", common + [("idempotency-key", "k1")], b"{}").status == 200
    not_mirrored += 1
    # A request that is itself a mirror copy is never copied again.
    assert e.request("GET", "/api/already-a-copy", common + [("x-mirror", "1")]).status == 200
    # ...checked first: a marked POST is is_mirror, not not_idempotent.
    assert e.request("POST", "/api/already-a-copy-post", common + [("x-mirror", "1")], b"{}").status == 200

    wait_for_results(e, len(mirrored))
    assert decisions(e) == {"mirrored": len(mirrored), "not_idempotent": not_mirrored, "is_mirror": 2}

    copies = canary.take()
    # Each mirrored request reached the canary exactly once, and nothing else did.
    assert sorted(r.path for r in copies) == sorted(mirrored), "the canary got other copies than one per mirrored request"
    got = {req.path: req for req in copies}
    for path, (method, _, body, host, cls, features) in mirrored.items():
        req = got[path]
        assert req.method == method, path
        assert req.header_all("x-mirror") == ["1"], (path, req.headers)
        assert req.header_all("host") == [host], (path, req.headers)
        assert req.header_all("x-user-class") == [cls], (path, req.headers)
        assert req.header_all("x-features") == ([features] if features else []), (path, req.headers)
        assert req.body == (body or b""), path
        if path != "/api/port":
            assert req.header_all("x-request-tag") == ["keep-me"], (path, req.headers)
            for name, _ in REMOVED + HOP_BY_HOP:
                assert req.header_all(name) == [], f"{path}: {name} reached the canary: {req.headers}"

    at_primary = {req.path: req for req in primary.take()}
    for path, (_, _, _, host, _, _) in mirrored.items():
        req = at_primary[path]
        # The primary gets the original: its authority, no marker, and everything the mirror drops.
        assert req.header("host") == host.replace("-shadow", ""), req.headers
        assert req.header_all("x-mirror") == [], req.headers
        if path != "/api/port":
            for name, value in REMOVED + HOP_BY_HOP:
                assert req.header_all(name) == [value], f"{path}: {name} did not reach the primary: {req.headers}"


def test_idempotency_key_and_empty_suffix(mirroring):
    e, _, canary = mirroring({"authority_suffix": "", "idempotency_key_header": "idempotency-key"})
    host = [("host", "api.example:8080")]
    cases = [
        # (method, path, headers, mirrored)
        ("POST", "/api/pay/keyed", [("idempotency-key", "k1")], True),
        ("PATCH", "/api/pay/keyed-patch", [("idempotency-key", "k2")], True),
        ("POST", "/api/pay/no-key", [], False),
        ("POST", "/api/pay/empty-key", [("idempotency-key", "")], False),
        ("GET", "/api/plain", [], True),
    ]
    for method, path, headers, _ in cases:
        body = b'{"amount": 5}' if method != "GET" else None
        assert e.request(method, path, host + headers, body).status == 200, path
    want = [c for c in cases if c[3]]
    wait_for_results(e, len(want))
    assert decisions(e) == {"mirrored": len(want), "not_idempotent": len(cases) - len(want)}
    copies = canary.take()
    assert sorted(r.path for r in copies) == sorted(c[1] for c in want), "one copy per mirrored request"
    got = {req.path: req for req in copies}
    for method, path, headers, _ in want:
        assert got[path].method == method
        assert got[path].header_all("host") == ["api.example:8080"], "an empty suffix keeps the authority"
        assert got[path].header_all("x-mirror") == ["1"]
        assert got[path].body == (b'{"amount": 5}' if method != "GET" else b"")
        for name, value in headers:
            assert got[path].header_all(name) == [value]


# ---------------------------------------------------------------------------------------------
# 2. Request bodies


def test_request_body_arrives_byte_identical(mirroring):
    e, primary, canary = mirroring()
    body = os.urandom(40 * 1024)
    r = e.request("PUT", "/api/blob", [("content-type", "application/octet-stream")], body)
    assert r.status == 200
    wait_for_results(e, 1)
    assert decisions(e) == {"mirrored": 1}
    [at_canary] = canary.take()
    [at_primary] = primary.take()
    assert at_primary.body == body
    assert len(at_canary.body) == len(body)
    assert at_canary.body == body


def test_body_over_max_body_bytes_is_not_mirrored(mirroring):
    e, primary, canary = mirroring({"max_body_bytes": 1024})
    big = os.urandom(4096)
    assert e.request("PUT", "/api/big", [], big).status == 200
    # A small one afterwards: once its comparison is in, the canary has had every copy.
    assert e.request("PUT", "/api/small", [], b"x" * 1024).status == 200
    wait_for_results(e, 1)
    assert decisions(e) == {"body_too_large": 1, "mirrored": 1}
    assert [(r.path, r.body) for r in canary.take()] == [("/api/small", b"x" * 1024)]
    assert [(r.path, len(r.body), r.body == big) for r in primary.take()][0] == ("/api/big", 4096, True)


# ---------------------------------------------------------------------------------------------
# 3. Paths, classes, sampling


def test_include_and_exclude_paths(mirroring):
    e, _, canary = mirroring({"include_paths": ["/api/"], "exclude_paths": ["/api/logout", "/api/admin/"]})
    mirrored = ["/api/items", "/api/items?next=/api/logout", "/api/administrator"]
    excluded = ["/api/logout", "/api/logout/all", "/api/admin/users", "/web/page", "/api", "/static?p=/api/"]
    for path in mirrored + excluded:
        assert e.request("GET", path).status == 200, path
    wait_for_results(e, len(mirrored))
    assert decisions(e) == {"mirrored": len(mirrored), "path_excluded": len(excluded)}
    assert sorted(r.path for r in canary.take()) == sorted(mirrored)


def test_classes_limit_mirroring(mirroring):
    e, _, canary = mirroring({"classes": ["beta"]})
    assert e.request("GET", "/api/beta", [("x-beta", "true")]).status == 200
    assert e.request("GET", "/api/stable").status == 200
    # Checked in order: a POST is not_idempotent before its class is looked at.
    assert e.request("POST", "/api/stable-post", [], b"{}").status == 200
    wait_for_results(e, 1)
    assert decisions(e, user_class="beta") == {"mirrored": 1}
    assert decisions(e, user_class="stable") == {"class_excluded": 1, "not_idempotent": 1}
    assert results(e, user_class="beta") == {"match": 1}
    assert [(r.path, r.header("x-user-class")) for r in canary.take()] == [("/api/beta", "beta")]


SAMPLE_KEYS = [
    # (sample_key, the request headers that carry key k)
    ({"cookie": "uid"}, lambda k: [("cookie", f"a=1; uid={k}")]),
    ({"header": "x-user-id"}, lambda k: [("x-user-id", k)]),
]


@pytest.mark.parametrize("sample_key,carry", SAMPLE_KEYS, ids=["cookie", "header"])
def test_sampling_by_key_is_sticky_and_follows_the_formula(mirroring, sample_key, carry):
    e, _, canary = mirroring({"percent": 50, "sample_key": sample_key})
    keys = [f"user-{i}" for i in range(20)]
    expect_in = {k for k in keys if sample_bucket(k) < 5000}
    assert expect_in and expect_in != set(keys), "the fixed keys must fall on both sides"
    for _ in range(3):
        for k in keys:
            assert e.request("GET", f"/api/s/{k}", carry(k)).status == 200
    wait_for_results(e, 3 * len(expect_in))
    assert decisions(e) == {"mirrored": 3 * len(expect_in), "not_sampled": 3 * (len(keys) - len(expect_in))}
    per_key: dict[str, int] = {}
    for req in canary.take():
        per_key[req.path.rsplit("/", 1)[1]] = per_key.get(req.path.rsplit("/", 1)[1], 0) + 1
    assert per_key == {k: 3 for k in expect_in}

    # Without the key each request is sampled on its own: 40 requests at 50% see both outcomes
    # (all alike has probability 2^-39).
    before = decisions(e)
    for _ in range(40):
        assert e.request("GET", "/api/anonymous").status == 200
    after = decisions(e)
    new_mirrored = after.get("mirrored", 0) - before.get("mirrored", 0)
    new_skipped = after.get("not_sampled", 0) - before.get("not_sampled", 0)
    assert (new_mirrored + new_skipped, new_mirrored > 0, new_skipped > 0) == (40, True, True), after


def test_every_mirror_metric_names_its_canary_cluster(envoy, upstream):
    """An Istio cluster name (`|` and dots included) comes out whole as the canary_cluster label
    of every mirror series, the pending gauge too, so one canary can be picked out in PromQL."""
    cluster = "outbound|8080||api-canary.shop.svc.cluster.local"
    p = upstream("primary", harness.fixed(200, SAME))
    c = upstream("canary", harness.fixed(200, SAME))
    cfg = {"classification": CLASSIFICATION, "mirror": {"cluster": cluster}}
    e = envoy(harness.mirroring_envoy_config(cfg, p, c, canary_name=cluster))
    assert e.request("GET", "/api/labelled").status == 200
    assert wait_for_results(e, 1) == {"match": 1}
    assert results(e, canary_cluster=cluster) == {"match": 1}
    assert decisions(e, canary_cluster=cluster) == {"mirrored": 1}
    harness.wait_for_metric(e, f"{MIRROR_MS}_count", {"canary_cluster": cluster, "user_class": "stable"}, 1)
    text = e.prometheus()
    for name in (MIRROR_TOTAL, COMPARISONS, f"{PRIMARY_MS}_count", f"{MIRROR_MS}_count", PENDING):
        samples = harness.prometheus_samples(text, name)
        assert samples, name
        assert {labels.get("canary_cluster") for labels, _ in samples} == {cluster}, (name, samples[:3])
    # Every label was cut out of the name by envoy.yaml's stats_tags, the only tag rules here.
    assert harness.unextracted_tags(text) == []


# ---------------------------------------------------------------------------------------------
# 4. A slower canary is still compared


def test_slower_canary_still_compared(mirroring):
    slow = harness.Delayed(0.3, harness.fixed(200, SAME))
    e, _, _ = mirroring({"timeout_ms": 1000}, canary=slow)
    r = e.request("GET", "/api/slow")
    assert (r.status, r.json()) == (200, SAME)
    assert wait_for_results(e, 1) == {"match": 1}
    assert decisions(e) == {"mirrored": 1}
    assert results(e, user_class="stable") == {"match": 1}
    harness.wait_for_metric(e, f"{PRIMARY_MS}_count", {"canary_cluster": "canary", "user_class": "stable"}, 1)
    harness.wait_for_metric(e, f"{MIRROR_MS}_count", {"canary_cluster": "canary", "user_class": "stable"}, 1)
    assert mirror_lines(e) == []


# ---------------------------------------------------------------------------------------------
# 5. Mirror failures never reach the client

PRIMARY_ANSWER = (201, {"from": "primary", "n": 1}, [("x-served-by", "primary")])

FAILURES = [
    # (id, mirror fields, canary: responder | "down", canary_cluster, decision, result)
    ("canary-down", {}, "down", True, "mirrored", "mirror_error"),
    ("timeout", {"timeout_ms": 200}, "sleep", True, "mirrored", "mirror_timeout"),
    ("reset", {}, "reset", True, "mirrored", "mirror_error"),
    ("cluster-missing", {}, None, False, "dispatch_failed", "mirror_error"),
]


@pytest.mark.parametrize("what,mirror,canary_kind,cluster,decision,result", FAILURES, ids=[f[0] for f in FAILURES])
def test_mirror_failure_is_invisible_to_the_client(mirroring, what, mirror, canary_kind, cluster, decision, result):
    sleeper = harness.Delayed(2.0)
    canary = {"down": harness.free_port(), "sleep": sleeper, "reset": harness.resetting()}.get(canary_kind)
    status, body, headers = PRIMARY_ANSWER
    e, _, _ = mirroring(mirror, primary=harness.fixed(status, body, headers), canary=canary, canary_cluster=cluster)

    r = e.request("GET", "/api/fail?x=1")
    if canary_kind == "sleep":
        assert not sleeper.finished.is_set(), "the client waited for the canary"
    assert (r.status, r.json(), r.header("x-served-by")) == (status, body, "primary")

    assert wait_for_results(e, 1) == {result: 1}
    assert decisions(e) == {decision: 1}
    assert results(e, user_class="stable") == {result: 1}
    line = harness.wait_for_log(e, LOG_PREFIX, "mirror failed", f"result={result}")
    for part in ("GET", "/api/fail", "class=stable"):
        assert part in line, line
    assert "x=1" not in line, "the query is left out of log lines"

    # Envoy keeps serving (and mirroring) afterwards.
    r = e.request("GET", "/api/after")
    assert (r.status, r.json()) == (status, body)
    wait_for_results(e, 2)


# ---------------------------------------------------------------------------------------------
# 6. Comparing the answers

PRIMARY_JSON = {"balance": 100, "currency": "EUR", "timestamp": 1700000000, "items": [{"id": 1, "sku": "a"}, {"id": 2, "sku": "b"}]}
CANARY_REORDERED = '{"items": [{"sku": "a", "id": 71}, {"sku": "b", "id": 72}], "timestamp": 1700000999, "currency": "EUR", "balance": 100}'

COMPARE_CASES = [
    # (id, compare, canary responder, result, difference logged or None)
    ("status", {}, harness.fixed(500, PRIMARY_JSON), "status_mismatch", "status 200 vs 500"),
    (
        "header",
        {"headers": ["content-type"]},
        harness.fixed(200, PRIMARY_JSON, [("content-type", "text/plain")]),
        "header_mismatch",
        'header content-type: "application/json" vs "text/plain"',
    ),
    (
        "json-body",
        {"body": "json"},
        harness.fixed(200, {**PRIMARY_JSON, "balance": 90}),
        "body_mismatch",
        "body /balance: 100 vs 90",
    ),
    ("bytes-body", {}, harness.fixed(200, {**PRIMARY_JSON, "balance": 90}), "body_mismatch", "body differs"),
    (
        "json-ignored-fields",
        {"body": "json", "ignore": ["/timestamp", "/items/*/id"]},
        harness.fixed(200, CANARY_REORDERED, [("content-type", "application/json")]),
        "match",
        None,
    ),
    # A real 503 or 504 from the canary is an answer, not a failure to get one.
    ("canary-503", {}, harness.fixed(503, PRIMARY_JSON), "status_mismatch", "status 200 vs 503"),
    ("canary-504", {}, harness.fixed(504, PRIMARY_JSON), "status_mismatch", "status 200 vs 504"),
    ("body-over-compare-limit", {"max_body_bytes": 16}, harness.fixed(200, {**PRIMARY_JSON, "balance": 90}), "skipped", None),
    (
        "content-encodings-differ",
        {},
        harness.fixed(200, PRIMARY_JSON, [("content-type", "application/json"), ("content-encoding", "br")]),
        "skipped",
        None,
    ),
    ("identical-bytes", {"body": "bytes", "headers": ["content-type"]}, harness.fixed(200, PRIMARY_JSON), "match", None),
]


@pytest.mark.parametrize("what,compare,canary,result,difference", COMPARE_CASES, ids=[c[0] for c in COMPARE_CASES])
def test_comparison_result_and_log(mirroring, what, compare, canary, result, difference):
    e, _, _ = mirroring({"compare": compare}, primary=harness.fixed(200, PRIMARY_JSON), canary=canary)
    r = e.request("GET", "/api/account")
    assert (r.status, r.json()) == (200, PRIMARY_JSON)
    assert wait_for_results(e, 1) == {result: 1}
    assert results(e, user_class="stable") == {result: 1}
    if difference is None:
        assert mirror_lines(e) == []
        return
    line = harness.wait_for_log(e, LOG_PREFIX, "mirror mismatch")
    for part in ("GET", "/api/account", "class=stable", f"result={result}", difference):
        assert part in line, f"{part!r} not in {line!r}"


def test_mismatch_log_is_rate_limited(mirroring):
    """A burst of 10 lines, then 1 a second: 20 mismatches in well under a second log 10 or 11."""
    e, _, _ = mirroring(canary=harness.fixed(500, SAME), concurrency=1)
    for i in range(20):
        assert e.request("GET", f"/api/burst/{i}").status == 200
    assert wait_for_results(e, 20) == {"status_mismatch": 20}
    harness.wait_for_log(e, LOG_PREFIX, "mirror mismatch")
    assert 10 <= len(mirror_lines(e)) < 20, mirror_lines(e)


# ---------------------------------------------------------------------------------------------
# 7. Overload


def test_max_in_flight_sheds_mirrors_not_requests(mirroring):
    slow = harness.Delayed(1.5, harness.fixed(200, SAME))
    # One worker, so the per-worker limit is one number.
    e, primary, canary = mirroring({"max_in_flight": 2, "timeout_ms": 3000}, canary=slow, concurrency=1)
    started = time.monotonic()
    answers = [e.request("GET", f"/api/busy/{i}") for i in range(6)]
    elapsed = time.monotonic() - started
    assert [(r.status, r.json()) for r in answers] == [(200, SAME)] * 6
    assert not slow.finished.is_set(), f"the client waited for the canary ({elapsed:.2f}s for 6 requests)"
    wait_for_decisions(e, {"mirrored": 2, "overloaded": 4})
    assert len(primary.take()) == 6
    assert wait_for_results(e, 2) == {"match": 2}
    assert sorted(r.path for r in canary.take()) == ["/api/busy/0", "/api/busy/1"]


def test_http2_request_is_mirrored(mirroring):
    """Over HTTP/2 the authority is :authority, not Host; the copy still gets the suffix."""
    e, _, canary = mirroring()
    args = [
        "curl", "-sS", "--fail", "--http2-prior-knowledge",
        "-H", "host: api.example:8443", "-H", "x-beta: true",
        f"http://127.0.0.1:{e.listener_port}/api/h2?q=1",
    ]
    out = subprocess.run(args, capture_output=True, timeout=10, check=True)
    assert json.loads(out.stdout) == SAME
    assert wait_for_results(e, 1) == {"match": 1}
    [req] = canary.take()
    assert (req.method, req.path, req.header_all("host"), req.header_all("x-mirror"), req.header_all("x-user-class")) == (
        "GET", "/api/h2?q=1", ["api.example-shadow:8443"], ["1"], ["beta"]
    )


def test_sustained_load_with_slow_canary_stays_bounded(mirroring):
    """4000 PUTs of 16 KiB against a canary that never answers in time: pending mirrors never
    exceed max_in_flight, each one is concluded (mirror_timeout) and released, and Envoy's
    memory does not grow with the number of requests. Were the copies kept, the thousand or so
    mirrored after warm-up alone would be 16 MiB."""
    slow = harness.Delayed(0.5, harness.fixed(200, SAME))
    limit = 32
    e, primary, _ = mirroring({"timeout_ms": 100, "max_in_flight": limit}, canary=slow, concurrency=1)
    body = os.urandom(16 * 1024)

    def load(n: int, tag: str) -> list[int]:
        statuses: list[int] = []

        def worker(w: int):
            for i in range(n // 4):
                statuses.append(e.request("PUT", f"/api/load/{tag}/{w}/{i}", body=body).status)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return statuses

    with harness.GaugeSampler(e, PENDING, {"canary_cluster": "canary"}) as pending:
        assert set(load(800, "warm")) == {200}
        warm = harness.rss_kib(e.proc.pid)
        assert set(load(3200, "load")) == {200}
        loaded = harness.rss_kib(e.proc.pid)

    # A gauge, so not wait_for_metric (which treats going past the value as failure).
    harness.wait_until(lambda: harness.metric_now(e, PENDING, {"canary_cluster": "canary"}) == 0, 10, what="no mirror pending")
    got = decisions(e)
    assert sum(got.values()) == 4000, got
    assert got.get("overloaded", 0) > 0 and got.get("mirrored", 0) > 0, got
    assert set(got) <= {"mirrored", "overloaded"}, got
    # Each mirror concluded once. Most time out; the canary's small listen backlog also
    # refuses some connections under this load (mirror_error).
    concluded = wait_for_results(e, int(got["mirrored"]))
    assert set(concluded) <= {"mirror_timeout", "mirror_error"}, concluded
    # The bound held in every read taken while the load ran, and there were reads.
    assert pending.failed == [] and len(pending.values) >= 10, (pending.failed[:3], len(pending.values))
    assert max(pending.values) <= limit, max(pending.values)
    assert len(primary.take()) == 4000
    growth = loaded - warm
    print(f"Envoy RSS after 800 requests {warm} KiB, after 4000 {loaded} KiB (+{growth} KiB); {got}")
    assert growth < 8 * 1024, f"RSS grew {growth} KiB over 3200 requests"


def test_websocket_upgrade_is_not_mirrored(envoy, upstream):
    """With Envoy configured to pass WebSocket upgrades, the filter sees `upgrade: websocket` on
    a GET, and a handshake is not a request that may run twice."""
    primary, canary = upstream("primary", harness.fixed(200, SAME)), upstream("canary", harness.fixed(200, SAME))
    cfg = harness.mirroring_envoy_config(plugin_config(), primary, canary)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    e = envoy(cfg)
    handshake = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]
    r = e.request("GET", "/api/socket", headers=handshake)
    assert r.status == 200
    [got] = primary.take()
    assert got.header("upgrade") == "websocket", "Envoy passed the upgrade on"
    wait_for_decisions(e, {"not_idempotent": 1})
    # A plain GET on the same Envoy is still mirrored, so the copy path was open.
    assert e.request("GET", "/api/plain").status == 200
    wait_for_decisions(e, {"not_idempotent": 1, "mirrored": 1})
    # "mirrored" is counted at dispatch; the comparison only once the canary has answered.
    wait_for_results(e, 1)
    assert [r.path for r in canary.take()] == ["/api/plain"]
