"""Comparisons a rollout can trust: a real Envoy mirrors the traffic of a noisy service
(noisy_service.py, httpbin-like) to a canary and to a baseline, another instance of the
primary's version, and counts a difference against the canary only where two healthy instances
agree.

Three upstreams run the noisy service: `primary` (every route goes there), `baseline` (same
version) and `canary` (same version, or a variant that changes one endpoint). The filter has
`mirror.baseline` and `compare.body: json`, with no `ignore`: everything the service varies
(its echo of the copy's Host and marker, uuids, random bytes, ids, microsecond timestamps,
gzip/deflate answers) has to be learned as noise, per endpoint and element.

Traffic goes in rounds, one request to each endpoint per round, and each round goes over one
keep-alive connection per Envoy worker in turn: noise is learned per worker, so each worker
sees every endpoint every other round. Each round waits for its comparisons, so the figures
per round (warm-up) are exact. Run with `-s` for the measured figures.
"""

from __future__ import annotations

import collections
import socket
import json
import random
import threading
import time
from dataclasses import dataclass

import pytest

import harness
import noisy_service

MIRROR_TOTAL = "progressive_delivery_mirror_total"
COMPARISONS = "progressive_delivery_comparisons_total"
DIFFERENCES = "progressive_delivery_differences_total"
BASELINE_TOTAL = "progressive_delivery_baseline_total"
BASELINE_MS = "progressive_delivery_baseline_duration_ms"
MIRROR_MS = "progressive_delivery_mirror_duration_ms"

HOST = "api:8080"
# Results in which the canary agreed with the baseline; `skipped` is neither agreement nor not.
AGREEMENT = {"match", "noise"}
WARMUP_ROUNDS = 20
# mirror.noise.min_samples by default.
MIN_SAMPLES = 5
MEASURED_ROUNDS = 40
# Generous: a healthy local upstream answers in milliseconds.
TIMEOUT_MS = 5000
# One endpoint template in the config, so the variants show a configured name as well as
# automatic ones.
BALANCE = {"name": "balance", "path": "/api/accounts/{id}/balance"}


def traffic(round_no: int) -> list[tuple[str, str, int]]:
    """One round: (path, endpoint label, status the client gets). The account id changes every
    round: one endpoint all the same."""
    return [
        ("/headers", "GET /headers", 200),
        ("/anything/orders?sort=asc", "GET /anything/orders", 200),
        ("/uuid", "GET /uuid", 200),
        ("/ip", "GET /ip", 200),
        ("/now", "GET /now", 200),
        ("/bytes/64", "GET /bytes/{id}", 200),
        ("/gzip", "GET /gzip", 200),
        ("/deflate", "GET /deflate", 200),
        ("/stream/3", "GET /stream/{id}", 200),
        ("/redirect-to?url=/json", "GET /redirect-to", 302),
        ("/absolute-redirect/2", "GET /absolute-redirect/{id}", 302),
        ("/items", "GET /items", 200),
        ("/json", "GET /json", 200),
        ("/status/418", "GET /status/{id}", 418),
        (f"/api/accounts/{40 + round_no}/balance", "GET /api/accounts/{id}/balance", 200),
    ]


ENDPOINTS = len(traffic(0))


def plugin_config(*, baseline: bool = True, **mirror) -> dict:
    m = {
        "cluster": "canary",
        "timeout_ms": TIMEOUT_MS,
        # content-type and location: the redirects' Location is built from the Host, so it is
        # noise too, in a header.
        "compare": {"body": "json", "headers": ["content-type", "location"]},
    }
    if baseline:
        m["baseline"] = {"cluster": "baseline"}
    return {"mirror": {**m, **mirror}}


@dataclass
class Setup:
    envoy: harness.Envoy
    primary: harness.Upstream
    baseline: harness.Upstream | None
    canary: harness.Upstream
    conns: list[harness.Connection]
    sent: int = 0

    def results(self) -> dict[str, float]:
        return harness.counts_by(self.envoy, COMPARISONS, "result")

    def differences(self) -> dict[tuple[str, str, str], float]:
        """(endpoint, element, kind) -> count."""
        return {
            (labels["endpoint"], labels["element"], labels["kind"]): v
            for labels, v in harness.prometheus_samples(self.envoy.prometheus(), DIFFERENCES)
            if v
        }

    def wait_for_comparisons(self, n: int, timeout: float = 30.0) -> dict[str, float]:
        try:
            harness.wait_until(lambda: sum(self.results().values()) >= n, timeout, what=f"{n} comparisons")
        except AssertionError as err:
            raise AssertionError(f"{err}: {self.results()}, decisions {harness.counts_by(self.envoy, MIRROR_TOTAL, 'decision')}") from None
        got = self.results()
        assert sum(got.values()) == n, got
        return got

    def rounds(self, first: int, count: int, only_ok: bool = False) -> list[collections.Counter]:
        """Sends rounds `first`.. of `traffic`, each on the next worker's connection, and
        returns each round's comparison results. Every answer is checked to be the primary's:
        its status, and for /headers the original Host, without the mirror's marker."""
        per_round = []
        before = collections.Counter(self.results())
        for r in range(first, first + count):
            conn = self.conns[r % len(self.conns)]
            for path, _, status in traffic(r):
                if only_ok and status != 200:
                    continue
                resp = conn.request("GET", path, [("host", HOST)])
                assert resp.status == status, (path, resp.status, resp.body[:200])
                if path == "/headers":
                    seen = resp.json()["headers"]
                    assert seen["host"] == HOST and "x-mirror" not in seen, seen
                self.sent += 1
            now = collections.Counter(self.wait_for_comparisons(self.sent))
            per_round.append(now - before)
            before = now
        return per_round


@pytest.fixture
def noisy(envoy):
    """`noisy(variant="same", baseline=True, mirror=None, **envoy_kw)` starts the primary,
    baseline and canary noisy services (`baseline`: True for one, False for none in the config,
    or an Upstream or a port to use instead) and an Envoy whose plugin config is
    `plugin_config(**mirror)`; returns the Setup, with one connection per worker."""
    started: list[harness.Upstream] = []

    def make(variant: str = "same", baseline=True, mirror: dict | None = None, **envoy_kw) -> Setup:
        def up(name: str, v: str = "same") -> harness.Upstream:
            started.append(noisy_service.start(name, v))
            return started[-1]

        primary, canary = up("primary"), up("canary", variant)
        base = up("baseline") if baseline is True else baseline or None
        base_port = base if isinstance(base, int) else (base.port if base is not None else harness.free_port())
        cfg = harness.bootstrap(
            http_filters=[harness.wasm_filter(plugin_config(baseline=baseline is not False, **(mirror or {}))), harness.ROUTER],
            routes=[{"match": {"prefix": "/"}, "route": {"cluster": "primary"}}],
            clusters=[harness.static_cluster(n, p) for n, p in (("primary", primary.port), ("baseline", base_port), ("canary", canary.port))],
        )
        cfg["stats_flush_interval"] = "0.2s"
        e = envoy(cfg, **envoy_kw)
        return Setup(e, primary, base if isinstance(base, harness.Upstream) else None, canary, e.worker_connections())

    yield make
    for u in started:
        u.stop()


def false_share(rounds: list[collections.Counter]) -> tuple[int, int]:
    """(comparisons that are neither agreement nor skipped, all comparisons)."""
    total = sum((sum(c.values()) for c in rounds))
    false = sum(v for c in rounds for k, v in c.items() if k not in AGREEMENT | {"skipped"})
    return false, total


def warmup_rounds(rounds: list[collections.Counter]) -> int:
    """Rounds (= requests per endpoint) up to and including the last one with a false result,
    0 for none."""
    flagged = [i for i, c in enumerate(rounds) if any(k not in AGREEMENT | {"skipped"} for k in +c)]
    return flagged[-1] + 1 if flagged else 0


def figure(text: str) -> None:
    print(f"\n[noise figures] {text}")


# ---------------------------------------------------------------------------------------------
# Same version everywhere: with a baseline, nothing is held against the canary


def test_identical_versions_agree_after_warmup_without_ignore(noisy):
    s = noisy()
    warm = s.rounds(0, WARMUP_ROUNDS)
    measured = s.rounds(WARMUP_ROUNDS, MEASURED_ROUNDS)
    false, total = false_share(measured)
    warmup = warmup_rounds(warm)
    by_result = sum(measured, collections.Counter())
    figure(
        f"with baseline: {false}/{total} = {false / total:.2%} false mismatches after {WARMUP_ROUNDS} rounds "
        f"(measured results {dict(by_result)}); warm-up {warmup} requests per endpoint "
        f"({len(s.conns)} workers); during warm-up {dict(sum(warm, collections.Counter()))}"
    )
    assert total == ENDPOINTS * MEASURED_ROUNDS
    assert false <= 0.01 * total, by_result
    # Noise is learned per worker, and a request's own observation counts before its canary
    # answer is judged: each worker's first min_samples - 1 answers of an endpoint are
    # mismatches, no more.
    assert warmup == (MIN_SAMPLES - 1) * len(s.conns), warm
    # The baseline did the work: what the copies vary was seen as noise, not as a match.
    assert by_result["noise"] > 0 and by_result["skipped"] == 0, by_result

    # Every request was copied once to the canary and once to the baseline.
    n = ENDPOINTS * (WARMUP_ROUNDS + MEASURED_ROUNDS)
    assert [len(u.take()) for u in (s.primary, s.canary, s.baseline)] == [n, n, n]
    assert harness.counts_by(s.envoy, MIRROR_TOTAL, "decision") == {"mirrored": n}
    assert harness.counts_by(s.envoy, BASELINE_TOTAL, "result") == {"answered": n}

    # Learned per endpoint and element, logged once per worker.
    harness.wait_for_log(s.envoy, "noise learned: endpoint=GET /uuid element=/uuid")
    diffs = s.differences()
    noise = collections.defaultdict(set)
    for (endpoint, element, kind), _ in diffs.items():
        if kind == "noise":
            noise[endpoint].add(element)
    figure("noise elements per endpoint: " + "; ".join(f"{ep}: {sorted(els)}" for ep, els in sorted(noise.items())))
    assert "/uuid" in noise["GET /uuid"]
    # Compressed answers are compared decoded: their JSON fields, not their bytes.
    assert noise["GET /gzip"] and "body" not in noise["GET /gzip"] | noise["GET /deflate"], (noise["GET /gzip"], noise["GET /deflate"])
    # What only the primary's answer differs in (the Host it echoes, a Location built from it)
    # is learned, and never counted: canary and baseline got the same copy.
    for endpoint, learned in (("GET /headers", "/headers/host"), ("GET /redirect-to", "header location")):
        harness.wait_for_log(s.envoy, f"noise learned: endpoint={endpoint} element={learned}")
        assert learned not in noise[endpoint], noise[endpoint]
    # Deterministic endpoints have nothing to learn.
    for endpoint in ("GET /json", "GET /ip", "GET /status/{id}", "GET /api/accounts/{id}/balance"):
        assert endpoint not in noise, (endpoint, noise[endpoint])
    # The two durations that Flagger's latency check divides are both recorded.
    for name in (MIRROR_MS, BASELINE_MS):
        harness.wait_until(
            lambda: sum(v for _, v in harness.prometheus_samples(s.envoy.prometheus(), name + "_count")) == n,
            what=f"{name}_count {n}",
        )


def test_without_baseline_the_same_traffic_is_mostly_false_mismatches(noisy):
    """The "before" figure: the same versions, the same traffic, canary compared with the
    primary. Every echo and random value counts against the canary."""
    s = noisy(baseline=False)
    rounds = s.rounds(0, MEASURED_ROUNDS)
    false, total = false_share(rounds)
    by_result = sum(rounds, collections.Counter())
    figure(f"without baseline: {false}/{total} = {false / total:.2%} false mismatches ({dict(by_result)})")
    assert false > 0.2 * total, by_result
    assert "noise" not in by_result
    # Still attributed to an endpoint and an element, with nothing learned.
    diffs = s.differences()
    assert diffs.get(("GET /uuid", "/uuid", "mismatch")) == MEASURED_ROUNDS, diffs
    assert diffs.get(("GET /headers", "/headers/host", "mismatch")) == MEASURED_ROUNDS, diffs
    assert not [k for k in diffs if k[2] == "noise"], diffs
    assert harness.counts_by(s.envoy, BASELINE_TOTAL, "result") == {}
    assert not s.envoy.log().count("noise learned")


# ---------------------------------------------------------------------------------------------
# A canary that really differs is caught, on its endpoint only


@pytest.mark.parametrize(
    "variant,endpoint,result,element,log",
    [
        # (canary variant, endpoint label, result, element counted, what its log line says)
        ("changed-field", "balance", "body_mismatch", "/balance/currency", ["mirror mismatch", "endpoint=balance", "/balance/currency"]),
        ("reset-endpoint", "GET /items", "mirror_error", None, ["mirror failed", "GET /items"]),
        ("500-endpoint", "GET /json", "status_mismatch", "status", ["mirror mismatch", "endpoint=GET /json", "status"]),
    ],
)
def test_changed_canary_is_flagged_on_its_endpoint_only(noisy, variant, endpoint, result, element, log):
    s = noisy(variant, mirror={"compare": {**plugin_config()["mirror"]["compare"], "endpoints": [BALANCE]}})
    s.rounds(0, WARMUP_ROUNDS)
    diffs_before = s.differences()
    measured = sum(s.rounds(WARMUP_ROUNDS, MEASURED_ROUNDS), collections.Counter())
    diffs = collections.Counter(s.differences())
    diffs.subtract(diffs_before)
    flagged = measured[result]
    figure(f"{variant}: {endpoint} flagged {result} on {flagged}/{MEASURED_ROUNDS} = {flagged / MEASURED_ROUNDS:.0%} after warm-up; all results {dict(measured)}")
    assert MEASURED_ROUNDS >= flagged >= 0.99 * MEASURED_ROUNDS, measured
    # Everything else agreed.
    others = {k: v for k, v in measured.items() if k != result}
    assert set(others) <= AGREEMENT and sum(others.values()) == (ENDPOINTS - 1) * MEASURED_ROUNDS, measured
    # Attributed: the differing element on that endpoint, and no mismatch anywhere else.
    mismatched = {(ep, el): v for (ep, el, kind), v in diffs.items() if kind == "mismatch" and v}
    if element is None:
        assert mismatched == {}, mismatched
    else:
        assert mismatched.get((endpoint, element)) == flagged, mismatched
        assert {ep for ep, _ in mismatched} == {endpoint}, mismatched
    line = harness.wait_for_log(s.envoy, *log)
    figure(f"{variant} log line: {line.split('wasm log ')[-1]}")


# ---------------------------------------------------------------------------------------------
# A baseline that fails costs comparisons, never a user's answer


@pytest.mark.parametrize("how", ["down", "slow"])
def test_failing_baseline_skips_comparisons_and_users_get_the_primary(noisy, how):
    # "down": a port bound but not listening, held for the whole test, so connections are
    # refused and no server the test starts next can be given the same port.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    baseline = held.getsockname()[1] if how == "down" else harness.Upstream("baseline", harness.Delayed(3.0, noisy_service.NoisyService())).start()
    try:
        s = noisy(baseline=baseline, mirror={"timeout_ms": 300}, component_log_level="wasm:debug")
        per_round = s.rounds(0, 2, only_ok=True)
    finally:
        held.close()
        if not isinstance(baseline, int):
            baseline.stop()
    n = s.sent
    got = sum(per_round, collections.Counter())
    assert got == {"skipped": n}, got
    want = "mirror_error" if how == "down" else "mirror_timeout"
    assert harness.counts_by(s.envoy, BASELINE_TOTAL, "result") == {want: n}
    # The canary got and answered every copy: the comparison was skipped for the baseline only.
    assert len(s.canary.take()) == n and harness.counts_by(s.envoy, MIRROR_TOTAL, "decision") == {"mirrored": n}
    assert len(s.primary.take()) == n
    line = harness.wait_for_log(s.envoy, "skipped", "baseline")
    figure(f"baseline {how}: {n} comparisons skipped; log: {line.split('wasm log ')[-1]}")


# ---------------------------------------------------------------------------------------------
# Bounds


WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord", "grove", "harbor", "indigo", "juniper",
         "kestrel", "lagoon", "meadow", "nectar", "orchid", "pebble", "quartz", "raven", "saffron", "tundra"]  # fmt: skip
DISTINCT_PATHS = 10_000
# Automatic endpoint labels a worker keeps (docs/comparison.md); past them, `other`.
ENDPOINTS_PER_WORKER = 100


def word_path(i: int) -> str:
    """/anything/<four words>/<i>: a slug of free-form words, which the automatic templating
    keeps as it is (only the number becomes {id}), so every i is an endpoint of its own, as an
    API of slugs or a crawler makes them."""
    words = "-".join(WORDS[(i // 20**k) % 20] for k in range(4))
    return f"/anything/{words}/{i}"


def test_distinct_paths_keep_endpoint_state_bounded(noisy):
    s = noisy()
    rss: dict[int, int] = {}
    lock = threading.Lock()
    done = [0]

    def send(conn: harness.Connection, paths: list[str]) -> None:
        for path in paths:
            assert conn.request("GET", path, [("host", HOST)]).status == 200
            with lock:
                done[0] += 1

    paths = [word_path(i) for i in range(DISTINCT_PATHS)]
    assert len(set(p.rsplit("/", 1)[0] for p in paths)) == DISTINCT_PATHS
    random.Random(7).shuffle(paths)
    for start, stop in ((0, 2000), (2000, DISTINCT_PATHS)):
        threads = [threading.Thread(target=send, args=(c, paths[start + i:stop:len(s.conns)])) for i, c in enumerate(s.conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s.wait_for_comparisons(stop, timeout=120)
        rss[stop] = harness.rss_kib(s.envoy.proc.pid)
    assert done[0] == DISTINCT_PATHS

    diffs = s.differences()
    endpoints = {ep for ep, _, _ in diffs}
    other = sum(v for (ep, _, _), v in diffs.items() if ep == "other")
    growth_mib = (rss[DISTINCT_PATHS] - rss[2000]) / 1024
    figure(
        f"{DISTINCT_PATHS} distinct endpoints: {len(endpoints)} endpoint series, {other:.0f} differences counted as "
        f"endpoint=\"other\"; Envoy RSS {rss[2000] / 1024:.1f} MiB after 2000, {rss[DISTINCT_PATHS] / 1024:.1f} MiB after "
        f"{DISTINCT_PATHS} ({growth_mib:+.1f} MiB)"
    )
    # Each answer carries a request id of its own, so each comparison has one difference: the
    # ones past the workers' caps all under `other`.
    cap = ENDPOINTS_PER_WORKER * s.envoy.concurrency
    assert sum(diffs.values()) == DISTINCT_PATHS, sum(diffs.values())
    assert len(endpoints - {"other"}) <= cap, len(endpoints)
    assert other == DISTINCT_PATHS - sum(v for (ep, _, _), v in diffs.items() if ep != "other") >= DISTINCT_PATHS - cap, other
    # Past the caps, 8000 more endpoints cost no more state. What may grow is Envoy's own
    # (buffers, allocator caches): measured 0, bounded with room to spare.
    assert growth_mib < 8, rss


def test_copy_reaches_canary_and_baseline_once_and_identical(noisy):
    s = noisy()
    requests = [
        # (method, path, extra headers, body)
        ("GET", "/anything/search?q=red+shoes&page=2", [("accept", "application/json"), ("cookie", "uid=user-1; theme=dark")], None),
        ("HEAD", "/anything/items", [], None),
        ("OPTIONS", "/anything/items", [("origin", "https://shop.example")], None),
        ("PUT", "/anything/carts/7", [("content-type", "application/json")], json.dumps({"sku": "A-1", "qty": 2}).encode()),
        ("DELETE", "/anything/carts/7/items/3", [("x-trace", "abc")], None),
        ("GET", "/anything/chunked", [("accept-encoding", "gzip")], None),
        ("POST", "/anything/orders", [("content-type", "application/json")], b'{"sku": "A-1"}'),
    ]
    for i, (method, path, extra, body) in enumerate(requests):
        conn = s.conns[i % len(s.conns)]
        assert conn.request(method, path, [("host", HOST), ("x-test-id", str(i)), *extra], body).status == 200
    copied = [r for r in requests if r[0] != "POST"]
    s.wait_for_comparisons(len(copied))
    assert harness.counts_by(s.envoy, MIRROR_TOTAL, "decision") == {"mirrored": len(copied), "not_idempotent": 1}

    def by_id(u: harness.Upstream) -> dict[str, harness.Received]:
        got = u.take()
        ids = [r.header("x-test-id") for r in got]
        assert len(ids) == len(set(ids)), f"{u.name} got a copy twice: {ids}"
        return {i: r for i, r in zip(ids, got)}

    at_primary, at_canary, at_baseline = by_id(s.primary), by_id(s.canary), by_id(s.baseline)
    assert set(at_canary) == set(at_baseline) == {str(i) for i, r in enumerate(requests) if r[0] != "POST"}
    for i, c in at_canary.items():
        b = at_baseline[i]
        assert (c.method, c.path, c.body) == (b.method, b.path, b.body), i
        assert sorted(c.headers) == sorted(b.headers), (i, c.headers, b.headers)
        method, path, extra, body = requests[int(i)]
        assert (c.method, c.path, c.body) == (method, path, body or b"")
        assert c.header("host") == "api-shadow:8080" and c.header("x-mirror") == "1", c.headers
        for name, value in extra:
            assert c.header_all(name) == [value], (name, c.headers)
        # The original reached the primary as the client sent it.
        assert at_primary[i].header("host") == HOST and at_primary[i].header("x-mirror") is None


def test_rate_limited_copies_stay_within_the_bucket(noisy):
    per_second = 2
    s = noisy(mirror={"max_per_second": per_second})
    sent = 40
    started = time.monotonic()
    for i in range(sent):
        assert s.conns[i % len(s.conns)].request("GET", "/json", [("host", HOST)]).status == 200
    elapsed = time.monotonic() - started
    harness.wait_until(lambda: sum(harness.counts_by(s.envoy, MIRROR_TOTAL, "decision").values()) == sent, what=f"{sent} decisions")
    decisions = harness.counts_by(s.envoy, MIRROR_TOTAL, "decision")
    mirrored = decisions.get("mirrored", 0)
    s.wait_for_comparisons(mirrored)
    # A bucket of `per_second` tokens per worker, refilled at `per_second` a second: at most
    # the full bucket plus the refill while the requests were sent, with a second to spare.
    allowance = len(s.conns) * per_second * (elapsed + 2)
    figure(f"max_per_second {per_second}: {decisions} of {sent} requests in {elapsed:.2f} s (allowance {allowance:.0f})")
    assert decisions.get("rate_limited", 0) > 0 and mirrored + decisions["rate_limited"] == sent, decisions
    assert 0 < mirrored <= allowance, (decisions, elapsed)
    assert len(s.canary.take()) == mirrored and len(s.baseline.take()) == mirrored
    assert len(s.primary.take()) == sent
