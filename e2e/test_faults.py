"""Canary faults under load: h2load drives GETs through a real Envoy running the filter while
the canary is stopped, restarted, made slower than `timeout_ms`, made to reset connections, to
answer 5xx, and to answer bodies over `compare.max_body_bytes`.

Users must never see any of it (every answer 2xx, the primary gets every request), each
comparison must land in the result the README documents for that fault, the comparisons must add
up to the mirrors sent, and pending mirrors must stay within `max_in_flight` per worker, the
excess shed as `overloaded`. Envoy's own cluster stats must show the fault happened on the
canary cluster and nothing happened on the primary's.

The upstreams are `harness.FastUpstream`s (one asyncio loop each), whose answer can be switched
while load runs.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Callable

import pytest

import harness

MIRROR_TOTAL = "progressive_delivery_mirror_total"
COMPARISONS = "progressive_delivery_comparisons_total"
PENDING = "progressive_delivery_mirrors_pending"

WORKERS = 2
MAX_IN_FLIGHT = 32
TIMEOUT_MS = 1000
COMPARE_LIMIT = 4096
# Per phase: 4 HTTP/2 connections at 50 requests/s each, 4 s. Mirrors to a canary slower than
# the timeout then arrive at ~100/s per worker against 32 slots freed once a second: the slow
# phase overloads the filter for certain, on any machine that runs the load at all.
CLIENTS = 4
RPS_PER_CLIENT = 50
REQUESTS = 800

PLUGIN = {
    "classification": {"rules": [{"class": "beta", "header": {"name": "x-beta", "exact": "true"}}]},
    "mirror": {
        "cluster": "canary",
        "timeout_ms": TIMEOUT_MS,
        "max_in_flight": MAX_IN_FLIGHT,
        "compare": {"body": "json", "headers": ["content-type"], "max_body_bytes": COMPARE_LIMIT},
    },
}

BODY = {"items": [{"id": i, "sku": f"sku-{i}"} for i in range(5)], "total": 5}
SAME = harness.json_reply(BODY)
SLOW = harness.json_reply(BODY, delay=3 * TIMEOUT_MS / 1000, label="slow")
RESET = harness.Reply(reset=True)
ERROR = harness.json_reply(BODY, status=503)
# Over compare.max_body_bytes, and not what the primary answered either: `skipped` means it
# was not compared at all.
OVERSIZED = harness.json_reply({"items": ["x" * 1000] * 64}, label="oversized")

# Primary cluster counters that would show a failure on the users' path: none may move.
PRIMARY_ERRORS = [
    "upstream_cx_connect_fail",
    "upstream_rq_timeout",
    "upstream_rq_rx_reset",
    "upstream_rq_tx_reset",
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_rq_pending_failure_eject",
    "upstream_rq_pending_overflow",
    "upstream_rq_4xx",
    "upstream_rq_5xx",
]


@dataclass
class Phase:
    name: str
    # What is done to the canary before the load starts.
    act: Callable[[harness.FastUpstream], None]
    # The only comparison result this fault may produce (README, "Mirroring and comparison").
    result: str
    # Canary cluster counters of Envoy that must have moved.
    canary_stats: list[str] = field(default_factory=list)
    # Whether the canary gets the copies (not when its port is closed).
    canary_receives: bool = True


def answer(reply: harness.Reply) -> Callable[[harness.FastUpstream], None]:
    def act(canary: harness.FastUpstream) -> None:
        canary.reply = reply

    return act


PHASES = [
    Phase("normal", answer(SAME), "match", ["upstream_rq_2xx"]),
    Phase("stopped", lambda c: c.close_port(), "mirror_error", ["upstream_cx_connect_fail"], canary_receives=False),
    Phase("restarted", lambda c: c.open_port(), "match", ["upstream_rq_2xx"]),
    Phase("slow", answer(SLOW), "mirror_timeout", ["upstream_rq_timeout"]),
    Phase("reset", answer(RESET), "mirror_error", ["upstream_cx_destroy_remote_with_active_rq"]),
    Phase("5xx", answer(ERROR), "status_mismatch", ["upstream_rq_5xx"]),
    Phase("oversized", answer(OVERSIZED), "skipped", ["upstream_rq_2xx"]),
    Phase("normal again", answer(SAME), "match", ["upstream_rq_2xx"]),
]


# Reads of the pending gauge each phase must have taken while its load ran. The sampler reads,
# then pauses 20 ms, through ~4 s of load: some 180 reads here, far more than this on any
# machine that runs the load at all.
MIN_READS_UNDER_LOAD = 10


def pending_sampler(e: harness.Envoy) -> harness.GaugeSampler:
    return harness.GaugeSampler(e, PENDING, {"canary_cluster": "canary"})


@dataclass
class Snapshot:
    decisions: dict[str, float]
    results: dict[str, float]
    canary: dict[str, int]
    primary: dict[str, int]
    ingress: dict[str, int]
    primary_got: int
    canary_got: int

    @staticmethod
    def take(e: harness.Envoy, primary: harness.FastUpstream, canary: harness.FastUpstream) -> "Snapshot":
        return Snapshot(
            decisions=harness.counts_by(e, MIRROR_TOTAL, "decision"),
            results=harness.counts_by(e, COMPARISONS, "result"),
            canary=harness.envoy_stats(e, "cluster.canary."),
            primary=harness.envoy_stats(e, "cluster.primary."),
            ingress=harness.envoy_stats(e, "http.ingress."),
            primary_got=primary.count(),
            canary_got=canary.count(),
        )


def delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def settled(e: harness.Envoy, before: Snapshot) -> bool:
    """Every mirror of the phase has been concluded: one comparison per mirrored or
    dispatch_failed request, and nothing pending."""
    d = delta(harness.counts_by(e, MIRROR_TOTAL, "decision"), before.decisions)
    r = delta(harness.counts_by(e, COMPARISONS, "result"), before.results)
    pending = harness.metric_now(e, PENDING, {"canary_cluster": "canary"})
    return sum(r.values()) == d.get("mirrored", 0) + d.get("dispatch_failed", 0) and pending == 0


def load(e: harness.Envoy, requests: int = REQUESTS) -> harness.H2load:
    url = f"http://127.0.0.1:{e.listener_port}"
    paths = ["/api/items", "/api/items?page=2", "/api/profile"]
    return harness.H2load([url + p for p in paths], requests, clients=CLIENTS, rps=RPS_PER_CLIENT).start()


def test_canary_faults_under_load(envoy, fast_upstream):
    primary = fast_upstream("primary", SAME)
    canary = fast_upstream("canary", SAME)
    e = envoy(harness.mirroring_envoy_config(PLUGIN, primary.port, canary.port), concurrency=WORKERS)
    bound = MAX_IN_FLIGHT * WORKERS
    table = []
    with pending_sampler(e) as sampler:
        for phase in PHASES:
            phase.act(canary)
            before = Snapshot.take(e, primary, canary)
            mark = sampler.mark()
            got = load(e).wait(timeout=120)
            under_load = len(sampler.values) - mark
            harness.wait_until(lambda: settled(e, before), 30, 0.1, what=f"{phase.name}: every mirror concluded")
            after = Snapshot.take(e, primary, canary)
            row = {
                "phase": phase.name,
                "requests": got.total,
                "2xx": got.status["2xx"],
                "decisions": delta(after.decisions, before.decisions),
                "results": delta(after.results, before.results),
                "pending_max": max(sampler.values[mark:], default=0),
                "pending_reads_under_load": under_load,
                "canary_got": after.canary_got - before.canary_got,
                "canary_cluster": delta(after.canary, before.canary),
                "primary_cluster": delta(after.primary, before.primary),
            }
            table.append(row)
            print(json.dumps(row))
            ctx = f"phase {phase.name}: {row}"

            # Users: every request answered 2xx by the primary.
            assert got.clean and got.total == REQUESTS, f"{ctx}\n{got.output}"
            assert after.primary_got - before.primary_got == REQUESTS, ctx
            ingress = delta(after.ingress, before.ingress)
            assert ingress.get("downstream_rq_2xx") == REQUESTS and not ingress.get("downstream_rq_5xx"), ingress

            # The filter: one decision per request, one comparison per mirror, in the fault's result.
            decisions, results = row["decisions"], row["results"]
            assert sum(decisions.values()) == REQUESTS, ctx
            assert set(decisions) <= {"mirrored", "overloaded"}, ctx
            assert decisions.get("mirrored", 0) > 0 and results == {phase.result: decisions["mirrored"]}, ctx
            if phase.name == "slow":
                assert decisions.get("overloaded", 0) > 0, f"the slow canary never filled the pending store: {ctx}"
            assert row["pending_max"] <= bound and under_load >= MIN_READS_UNDER_LOAD, ctx
            assert sampler.failed == [], ctx
            assert row["canary_got"] == (decisions["mirrored"] if phase.canary_receives else 0), ctx

            # Envoy's view: the fault on the canary cluster, nothing on the primary's.
            for stat in phase.canary_stats:
                assert row["canary_cluster"].get(stat, 0) > 0, f"{stat} did not move: {ctx}"
            primary_stats = row["primary_cluster"]
            assert primary_stats.get("upstream_rq_2xx") == REQUESTS, ctx
            assert {s: primary_stats[s] for s in PRIMARY_ERRORS if primary_stats.get(s)} == {}, ctx

    out = harness.LOG_DIR / "faults-phases.json"
    harness.LOG_DIR.mkdir(exist_ok=True)
    out.write_text(json.dumps({"bound": bound, "phases": table}, indent=1))


# The faults one after another under one uninterrupted load, each held for 1.5 s: switches land
# on requests in flight (a stop cuts open connections, a restart meets a pool of dead ones).
FLAPS = [answer(SAME), lambda c: c.close_port(), lambda c: c.open_port(), answer(SLOW), answer(RESET), answer(ERROR), answer(OVERSIZED), answer(SAME)]
FLAP_SECONDS = 1.5


def test_canary_flapping_under_load(envoy, fast_upstream):
    primary = fast_upstream("primary", SAME)
    canary = fast_upstream("canary", SAME)
    e = envoy(harness.mirroring_envoy_config(PLUGIN, primary.port, canary.port), concurrency=WORKERS)
    requests = int(CLIENTS * RPS_PER_CLIENT * FLAP_SECONDS * (len(FLAPS) + 1))
    before = Snapshot.take(e, primary, canary)
    with pending_sampler(e) as sampler:
        run = load(e, requests)
        for act in FLAPS:
            act(canary)
            try:
                run.proc.wait(FLAP_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
        got = run.wait(timeout=120)
        under_load = len(sampler.values)
        harness.wait_until(lambda: settled(e, before), 30, 0.1, what="every mirror concluded")
    after = Snapshot.take(e, primary, canary)
    decisions = delta(after.decisions, before.decisions)
    results = delta(after.results, before.results)
    replies = {}
    for (_, _, reply), n in canary.tally().items():
        replies[reply] = replies.get(reply, 0) + n
    ctx = f"decisions {decisions}, results {results}, canary replies {replies}"
    print(ctx, f"pending max {max(sampler.values, default=0)} in {under_load} reads under load")

    assert got.clean and got.total == requests, got.output
    assert after.primary_got - before.primary_got == requests
    assert sum(decisions.values()) == requests and set(decisions) <= {"mirrored", "overloaded"}, ctx
    assert sum(results.values()) == decisions["mirrored"], ctx
    # Every fault showed, in its own result; an answer can only be compared as what it was.
    assert set(results) == {"match", "mirror_error", "mirror_timeout", "status_mismatch", "skipped"}, ctx
    assert results["match"] <= replies["200"], ctx
    assert results["status_mismatch"] <= replies["503"], ctx
    assert results["skipped"] <= replies["oversized"], ctx
    assert max(sampler.values, default=0) <= MAX_IN_FLIGHT * WORKERS and under_load >= MIN_READS_UNDER_LOAD, under_load
    assert sampler.failed == []
    canary_stats = delta(after.canary, before.canary)
    for stat in ("upstream_cx_connect_fail", "upstream_rq_timeout", "upstream_cx_destroy_remote_with_active_rq"):
        assert canary_stats.get(stat, 0) > 0, (stat, canary_stats)
    primary_stats = delta(after.primary, before.primary)
    assert primary_stats.get("upstream_rq_2xx") == requests, primary_stats
    assert {s: primary_stats[s] for s in PRIMARY_ERRORS if primary_stats.get(s)} == {}, primary_stats


def one_by_one(e: harness.Envoy, n: int) -> dict[str, float]:
    """Sends n GETs one after another (each answered 200 by the primary); returns the
    comparisons once all n are counted."""
    for i in range(n):
        assert e.request("GET", f"/api/one/{i}").status == 200
    harness.wait_until(lambda: sum(harness.counts_by(e, COMPARISONS, "result").values()) >= n, 30, what=f"{n} comparisons")
    return harness.counts_by(e, COMPARISONS, "result")


# Envoy buffers a callout's whole response body, up to its runtime key
# http.async_response_buffer_limit (32 MiB by default); one byte more and it resets the callout.
ENVOY_CALLOUT_LIMIT = 32 * 1024 * 1024
BODY_LIMITS = [
    # (id, canary body bytes, result, Envoy's warning logged)
    ("at Envoy's limit", ENVOY_CALLOUT_LIMIT, "skipped", False),
    ("over Envoy's limit", ENVOY_CALLOUT_LIMIT + 1, "mirror_error", True),
]


@pytest.mark.parametrize("size,result,warned", [b[1:] for b in BODY_LIMITS], ids=[b[0] for b in BODY_LIMITS])
def test_canary_body_against_envoys_callout_buffer(envoy, fast_upstream, size, result, warned):
    """Over compare.max_body_bytes a canary answer is `skipped` however large, up to the size
    Envoy buffers for a callout; past that Envoy resets the callout and the filter never sees an
    answer: `mirror_error`."""
    primary = fast_upstream("primary", SAME)
    canary = fast_upstream("canary", harness.Reply(body=b" " * size))
    plugin = {**PLUGIN, "mirror": {**PLUGIN["mirror"], "timeout_ms": 10000}}
    e = envoy(harness.mirroring_envoy_config(plugin, primary.port, canary.port), concurrency=1)
    assert one_by_one(e, 2) == {result: 2}
    assert ("buffer size limit for async client response body" in e.log()) == warned


STALLS = [
    # (id, the canary's reply after its headers and half its body, timeout_ms, result)
    ("rest after the timeout", dict(stall=2.0), 200, "mirror_timeout"),
    ("reset before the timeout", dict(stall=0.05, reset=True), 1000, "mirror_error"),
]


@pytest.mark.parametrize("reply,timeout_ms,result", [s[1:] for s in STALLS], ids=[s[0] for s in STALLS])
def test_body_stalled_after_the_headers(envoy, fast_upstream, reply, timeout_ms, result):
    """When Envoy's callout timeout fires after the canary's headers came, Envoy cannot answer
    504 any more and resets the callout instead; the filter sees a reset either way, and tells
    the timeout from a canary that broke the connection by when the reset came."""
    primary = fast_upstream("primary", SAME)
    canary = fast_upstream("canary", harness.json_reply(BODY, **reply))
    plugin = {**PLUGIN, "mirror": {**PLUGIN["mirror"], "timeout_ms": timeout_ms}}
    e = envoy(harness.mirroring_envoy_config(plugin, primary.port, canary.port), concurrency=1)
    assert one_by_one(e, 5) == {result: 5}
    timeouts = harness.envoy_stats(e, "cluster.canary.").get("upstream_rq_timeout", 0)
    assert timeouts == (5 if result == "mirror_timeout" else 0)
