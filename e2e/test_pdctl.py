"""pdctl and the filter agree, each checked on a real Envoy.

- `explain`: each request goes through Envoy running the shipped envoy.yaml, and what pdctl printed
  for it (`explain --show-copy --format json`, on the same envoy.yaml) is checked against what
  happened there: the class the upstream received (and the features header), the mirror decision
  Envoy counted for that request alone, and the headers the canary's copy carried.
- `diff`: a table of recorded answers (JSON, ignored pointers, arrays, floats, gzip, bytes, a
  baseline's noise) is served by the primary, canary and baseline upstreams; the result Envoy
  counted and its log line's first difference are pdctl diff's, on an endpoint's first comparison
  and after warm-up.
- `report`: a real Prometheus scrapes Envoy after mixed traffic; every figure of the review equals
  Envoy's own counters, and the HTML page opens in headless Chromium with its tables and charts
  (its screenshot is kept in e2e/.logs/pdctl-report.png).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

import png
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



def test_explain_shows_the_baseline_copy(pdctl, envoy, upstream, tmp_path):
    """With mirror.baseline, the copy the baseline receives is the one pdctl printed for it."""
    ups = {role: upstream(role) for role in ("primary", "canary", "baseline")}
    config = {"mirror": {"cluster": "canary", "baseline": {"cluster": "baseline", "percent": 100}, "remove_headers": ["authorization"]}}
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    e = envoy(harness.bootstrap(
        http_filters=[harness.wasm_filter(config), harness.ROUTER],
        routes=[{"match": {"prefix": "/"}, "route": {"cluster": "primary"}}],
        clusters=[harness.static_cluster(n, u.port) for n, u in ups.items()],
    ))
    headers = [("host", HOST), ("authorization", "Bearer t"), ("x-tag", "1")]
    args = [pdctl, "explain", "--config", str(tmp_path / "cfg.json"), "--show-copy", "--format", "json"]
    for name, value in headers:
        args += ["-H", f"{name}: {value}"]
    r = subprocess.run([*args, f"http://{HOST}/api/items"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    x = json.loads(r.stdout)["mirror"]
    assert x["baseline"]["cluster"] == "baseline" and x["baseline"]["share"] == "every mirrored request"
    assert x["baseline"]["copy"] == x["copy"]
    assert e.request("GET", "/api/items", headers).status == 200
    for role in ("canary", "baseline"):
        harness.wait_until(lambda: ups[role].received, 10, what=f"the {role}'s copy")
        [got] = ups[role].take()
        assert_copy(role, got, x["baseline"]["copy"], None)


# ---------------------------------------------------------------------------------------------
# diff: recorded answers compared by pdctl and by the filter on a real Envoy

COMPARISONS = "progressive_delivery_comparisons_total"
LOG_PREFIX = "wasm log progressive-delivery progressive-delivery"
MIN_SAMPLES = 3
JSON_CT = [("content-type", "application/json")]
# One comparison configuration per Envoy: (compare section, with a baseline).
SETUPS = {
    "json": ({"body": "json", "headers": ["content-type"], "ignore": ["/ts", "/items/*/id"]}, False),
    "bytes": ({"body": "bytes", "headers": ["content-type"]}, False),
    "baseline": ({"body": "json", "headers": ["content-type"]}, True),
}


def js(value) -> bytes:
    return json.dumps(value).encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def deflated(data: bytes) -> bytes:
    return zlib.compress(data)


# (path: also the row's name and its endpoint, setup, primary, canary, baseline or None). An answer
# is (status, headers, body); the recorded file is what `curl -i` writes, or the body alone when
# the answer has no headers.
DIFF_CASES = [
    ("/key-order-and-float", "json", (200, JSON_CT, b'{"a":1,"b":[1,2]}'), (200, JSON_CT, b'{"b":[1,2], "a":1.0}'), None),
    ("/ignored-pointers", "json", (200, JSON_CT, js({"ts": 1, "items": [{"id": 1, "v": 2}]})),
        (200, JSON_CT, js({"ts": 2, "items": [{"id": 7, "v": 2}]})), None),
    ("/array-element", "json", (200, JSON_CT, js({"items": [{"id": 1, "v": 2}, {"id": 2, "v": 3}], "n": 2})),
        (200, JSON_CT, js({"items": [{"id": 1, "v": 2}, {"id": 2, "v": 4}], "n": 3})), None),
    ("/float-beyond-rounding", "json", (200, JSON_CT, js({"price": 0.1})), (200, JSON_CT, js({"price": 0.10000001})), None),
    ("/status-and-header", "json", (200, JSON_CT, js({"a": 1})), (500, [("content-type", "text/plain")], js({"a": 2})), None),
    ("/gzip-same", "json", (200, JSON_CT, js({"a": [1, 2, 3]})),
        (200, JSON_CT + [("content-encoding", "gzip")], gz(js({"a": [1, 2, 3]}))), None),
    ("/gzip-differs", "json", (200, JSON_CT + [("content-encoding", "gzip")], gz(js({"a": [1, 2, 3]}))),
        (200, JSON_CT + [("content-encoding", "deflate")], deflated(js({"a": [1, 2, 4]}))), None),
    ("/corrupt-gzip", "json", (200, JSON_CT, js({"a": 1})), (200, JSON_CT + [("content-encoding", "gzip")], gz(js({"a": 1}))[:-4]), None),
    ("/not-json", "json", (200, [], b"hello"), (200, [], b"hullo!"), None),
    ("/bytes-deflate-same", "bytes", (200, [], b"plain text " * 20), (200, [("content-encoding", "deflate")], deflated(b"plain text " * 20)), None),
    ("/bytes-differ", "bytes", (200, JSON_CT, js({"a": 1})), (200, JSON_CT, js({"a": 1.0})), None),
    ("/noise-only", "baseline", (200, JSON_CT, js({"host": "p", "v": 1})), (200, JSON_CT, js({"host": "c", "v": 1})),
        (200, JSON_CT, js({"host": "b", "v": 1}))),
    ("/noise-and-a-change", "baseline", (200, JSON_CT, js({"host": "p", "v": 1})), (200, JSON_CT, js({"host": "c", "v": 2})),
        (200, JSON_CT, js({"host": "b", "v": 1}))),
    ("/quiet-baseline", "baseline", (200, JSON_CT, js({"v": 1, "w": [1]})), (200, JSON_CT, js({"v": 2, "w": [1, 2]})),
        (200, JSON_CT, js({"v": 1, "w": [1]}))),
    ("/noise-in-a-header", "baseline", (200, [("content-type", "application/json; p")], js({"v": 1})),
        (200, [("content-type", "application/json; c")], js({"v": 1})), (200, [("content-type", "application/json; b")], js({"v": 1}))),
]


def recorded(answer: tuple[int, list[tuple[str, str]], bytes]) -> bytes:
    status, headers, body = answer
    if not headers and status == 200:
        return body
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + f"content-length: {len(body)}\r\n\r\n"
    return head.encode() + body


def plugin_config(setup: str) -> dict:
    compare, baseline = SETUPS[setup]
    m = {"cluster": "canary", "timeout_ms": 5000, "compare": compare}
    if baseline:
        m["baseline"] = {"cluster": "baseline"}
        m["noise"] = {"min_samples": MIN_SAMPLES}
    return {"mirror": m}


def by_path(role: int):
    answers = {path: row[role] for path, *row in DIFF_CASES if row[role] is not None}

    def respond(req: harness.Received):
        return answers[req.path]

    return respond


def pdctl_diff(pdctl: str, config: Path, files: list[Path], *extra: str) -> tuple[int, dict]:
    args = [pdctl, "diff", "--config", str(config), str(files[0]), str(files[1]), "--format", "json"]
    if len(files) > 2:
        args += ["--baseline", str(files[2])]
    r = subprocess.run([*args, *extra], capture_output=True, text=True, timeout=30)
    assert r.returncode in (0, 1, 3), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_diff_agrees_with_the_filter(pdctl, envoy, upstream, tmp_path):
    ups = {
        "primary": upstream("primary", by_path(1)),
        "canary": upstream("canary", by_path(2)),
        "baseline": upstream("baseline", by_path(3)),
    }
    envoys = {}
    for setup in SETUPS:
        cfg = harness.bootstrap(
            http_filters=[harness.wasm_filter(plugin_config(setup)), harness.ROUTER],
            routes=[{"match": {"prefix": "/"}, "route": {"cluster": "primary"}}],
            clusters=[harness.static_cluster(n, u.port) for n, u in ups.items()],
        )
        (tmp_path / f"{setup}.json").write_text(json.dumps(plugin_config(setup)))
        envoys[setup] = envoy(cfg)
    seen = set()
    for path, setup, *answers in DIFF_CASES:
        files = []
        for role, answer in zip(("primary", "canary", "baseline"), answers):
            if answer is not None:
                files.append(tmp_path / f"{path.strip('/')}.{role}")
                files[-1].write_bytes(recorded(answer))
        code, first = pdctl_diff(pdctl, tmp_path / f"{setup}.json", files)
        e = envoys[setup]
        # One connection: one worker, whose noise learner sees every comparison of the endpoint.
        conn = e.connection()
        got = []
        for _ in range(MIN_SAMPLES if len(files) > 2 else 1):
            before = harness.counts_by(e, COMPARISONS, "result")
            assert conn.request("GET", path, [("host", "api")]).status == answers[0][0], path
            got.append(harness.wait_until(lambda: one_more(e, before), 10, what=f"{path}: a comparison"))
        conn.close()
        want = [first["result"]]
        if len(files) > 2:
            code_warm, warm = pdctl_diff(pdctl, tmp_path / f"{setup}.json", files, "--assume-learned")
            noise = first["noise"]
            # Before min_samples observations the verdict is the first comparison's; then warm-up's.
            want = [noise["first_comparison"]["result"]] * (MIN_SAMPLES - 1) + [noise["after_warm_up"]["result"]]
            assert warm["result"] == noise["after_warm_up"]["result"], (path, warm)
            assert code_warm == exit_code(warm["result"]), path
            for verdict in (noise["first_comparison"], noise["after_warm_up"]):
                assert_logged(e, path, verdict)
        else:
            assert_logged(e, path, first)
        assert got == want, (path, got, first)
        assert code == exit_code(first["result"]), path
        seen.update(got)
        print(f"\n{path}: Envoy {got}, pdctl diff {want}; differences {[(d['element'], d['covered_by']) for d in first['differences']]}")
    # The table covers every result a pair of answers can give.
    assert seen == {"match", "noise", "status_mismatch", "body_mismatch", "header_mismatch", "skipped"}, seen


def one_more(e: harness.Envoy, before: dict[str, float]) -> str | None:
    now = harness.counts_by(e, COMPARISONS, "result")
    delta = {k: v - before.get(k, 0) for k, v in now.items() if v != before.get(k, 0)}
    if not delta:
        return None
    assert list(delta.values()) == [1], delta
    return next(iter(delta))


def exit_code(result: str) -> int:
    return {"match": 0, "noise": 0, "skipped": 3}.get(result, 1)


def assert_logged(e: harness.Envoy, path: str, verdict: dict) -> None:
    """A mismatch's log line names pdctl's element and first difference."""
    if verdict["result"] in ("match", "noise", "skipped"):
        return
    harness.wait_for_log(
        e, LOG_PREFIX, f"mirror mismatch: GET {path} ", f"element={verdict['element']} result={verdict['result']}: {verdict['detail']}"
    )


def test_diff_lists_ignored_and_noisy_elements(pdctl, tmp_path):
    """What the filter's result does not show: every difference, and what covers each."""
    rows = {path: (setup, answers) for path, setup, *answers in DIFF_CASES}
    config = tmp_path / "cfg.json"

    def run(path: str, *extra: str) -> dict:
        setup, answers = rows[path]
        config.write_text(json.dumps(plugin_config(setup)))
        files = []
        for i, a in enumerate(answers):
            if a is not None:
                files.append(tmp_path / f"{i}")
                files[-1].write_bytes(recorded(a))
        return pdctl_diff(pdctl, config, files, *extra)[1]

    listed = lambda r: [(d["element"], d["covered_by"], d["ignore"]) for d in r["differences"]]
    assert listed(run("/ignored-pointers")) == [("/items/*/id", "ignore", "/items/*/id"), ("/ts", "ignore", "/ts")]
    assert listed(run("/array-element")) == [("/items/*/v", None, None), ("/n", None, None)]
    warm = run("/noise-and-a-change", "--assume-learned")
    assert listed(warm) == [("/host", "noise", None), ("/v", None, None)]
    assert [d["element"] for d in warm["noise"]["observed"]] == ["/host"]
    assert [d["healthy_instances_differ"] for d in warm["differences"]] == [True, False]


# ---------------------------------------------------------------------------------------------
# report: the review from a real Prometheus scraping a real Envoy

DIFFERENCES = "progressive_delivery_differences_total"
BASELINE_TOTAL = "progressive_delivery_baseline_total"
SCREENSHOT = harness.LOG_DIR / "pdctl-report.png"


def report_answers(role: str):
    """/same: everyone agrees; /noisy: every instance names itself (noise once learned);
    /changed/N: the canary's total differs (a mismatch), and its request id is noise."""

    def respond(req: harness.Received):
        if req.path.startswith("/same"):
            return 200, JSON_CT, js({"v": 1})
        if req.path.startswith("/noisy"):
            return 200, JSON_CT, js({"served_by": role, "v": 1})
        if req.path.startswith("/changed"):
            return 200, JSON_CT, js({"request": f"{role}-{req.path}", "total": 2 if role == "canary" else 1})
        return 404, [], b""

    return respond


def test_report_figures_are_envoys(pdctl, envoy, upstream, prometheus):
    ups = {role: upstream(role, report_answers(role)) for role in ("primary", "canary", "baseline")}
    config = {"mirror": {"cluster": "canary", "timeout_ms": 5000, "baseline": {"cluster": "baseline"},
                         "noise": {"min_samples": MIN_SAMPLES}, "compare": {"body": "json"}}}
    cfg = harness.bootstrap(
        http_filters=[harness.wasm_filter(config), harness.ROUTER],
        routes=[{"match": {"prefix": "/"}, "route": {"cluster": "primary"}}],
        clusters=[harness.static_cluster(n, u.port) for n, u in ups.items()],
    )
    e = envoy(cfg)
    prom = prometheus([f"127.0.0.1:{e.admin_port}"])
    harness.wait_until(prom.targets_up, timeout=20, what="Prometheus scraping Envoy")

    conn = e.connection()
    mirrored = 0
    for i in range(8):
        for path in ("/same", "/noisy", f"/changed/{i}"):
            assert conn.request("GET", path, [("host", "api")]).status == 200
            mirrored += 1
        assert conn.request("POST", "/same", [("host", "api")], b"{}").status == 200
    conn.close()
    results = lambda: harness.counts_by(e, COMPARISONS, "result", canary_cluster="canary")
    harness.wait_until(lambda: sum(results().values()) == mirrored, 20, what=f"{mirrored} comparisons")
    total = 'sum(progressive_delivery_comparisons_total{canary_cluster="canary"})'
    harness.wait_until(lambda: prom.scalar(total) == mirrored, timeout=20, what="Prometheus has the final counts")
    # The histograms and difference series are scraped with the same /stats/prometheus.
    mirror_count = 'sum(progressive_delivery_mirror_duration_ms_count{canary_cluster="canary"})'
    harness.wait_until(lambda: prom.scalar(mirror_count) == mirrored, timeout=20, what="Prometheus has the final histograms")

    html = SCREENSHOT.with_suffix(".html")
    harness.LOG_DIR.mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{prom.port}"
    r = subprocess.run([pdctl, "report", "--prometheus", url, "--canary", "canary", "--window", "1h", "--format", "json", "--html", str(html)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    review = json.loads(r.stdout)

    # Every figure is Envoy's own count.
    nonzero = lambda pairs: {k: v for k, v in pairs if v}
    assert nonzero(review["decisions"]) == harness.counts_by(e, MIRROR_TOTAL, "decision", canary_cluster="canary")
    counts = results()
    assert nonzero(review["results"]) == counts
    assert set(counts) == {"match", "noise", "body_mismatch"}, counts
    mismatches = counts.get("body_mismatch", 0)
    assert review["comparisons"] == mirrored and review["mismatches"] == mismatches and review["noise"] == counts["noise"]
    assert review["mismatch_ratio"] == pytest.approx(mismatches / mirrored)
    assert review["mismatch_ratio_without_noise_cancellation"] == pytest.approx((mismatches + counts["noise"]) / mirrored)
    assert dict(review["baseline"]) == harness.counts_by(e, BASELINE_TOTAL, "result", canary_cluster="canary")
    differences = {
        (labels["endpoint"], labels["element"], labels["kind"]): v
        for labels, v in harness.prometheus_samples(e.prometheus(), DIFFERENCES) if v and labels["canary_cluster"] == "canary"
    }
    got = {(ep["endpoint"], t["element"], kind): t[kind] for ep in review["endpoints"] for t in ep["top"] for kind in ("mismatch", "noise") if t[kind]}
    assert got == differences
    for ep in review["endpoints"]:
        assert ep["mismatch_differences"] == sum(v for (p, _, k), v in differences.items() if p == ep["endpoint"] and k == "mismatch")
        assert ep["noise_differences"] == sum(v for (p, _, k), v in differences.items() if p == ep["endpoint"] and k == "noise")
    lat = review["latency"]
    assert lat["reference"] == "baseline" and lat["canary_samples"] == mirrored and lat["reference_samples"] == mirrored
    for side, name in (("canary", "mirror"), ("reference", "baseline")):
        for q, key in (("0.5", "p50"), ("0.99", "p99")):
            whole = prom.scalar(f'histogram_quantile({q}, sum by (le) (progressive_delivery_{name}_duration_ms_bucket{{canary_cluster="canary"}}))')
            assert lat[f"{side}_{key}_ms"] == pytest.approx(whole), (side, key)
    print(f"\npdctl report:\n" + subprocess.run([pdctl, "report", "--prometheus", url, "--canary", "canary", "--window", "1h"],
                                                capture_output=True, text=True, timeout=60).stdout)

    # The page, opened by a real browser offline: its tables and charts render.
    dom = chromium(html, "--dump-dom")
    for row in ("<td>body_mismatch</td>", "<td>noise</td>", "<td>GET /changed/{id}</td>", "<td>/total</td>", "<td>mirrored</td>"):
        assert row in dom, row
    assert dom.count("<svg") == 3 and dom.count("<rect") >= 10, dom[:2000]
    chromium(html, f"--screenshot={SCREENSHOT}")
    width, height, rows, _ = png.Reader(filename=str(SCREENSHOT)).asRGBA8()
    # Every 7th pixel's colour: a blank or failed page has one or two.
    colours = {tuple(row[i:i + 3]) for row in rows for i in range(0, len(row), 4 * 7)}
    assert (width, height) == (1280, 2000) and len(colours) > 20, len(colours)
    print(f"screenshot of the report page: {SCREENSHOT}")


def chromium(page: Path, *what: str) -> str:
    """Headless Chromium on `page`, offline: no network features, a throw-away profile."""
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed (make system-tools)"
    with tempfile.TemporaryDirectory(prefix="pd-chromium-") as profile:
        r = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,2000", *what, page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout
