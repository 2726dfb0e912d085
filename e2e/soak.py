"""Soak: minutes of mixed traffic through a real Envoy running the filter, sampling Envoy's
memory and the filter's pending mirrors every `interval` seconds; both must stay flat.

    .venv/bin/python e2e/soak.py [--seconds 600] [--interval 10] [--out target/soak/result.json]

(`make soak` runs it for SOAK_SECONDS, 600 by default; `make test` runs 60 s of it through
e2e/test_soak.py.) Traffic: one h2load per kind of request below, each at a fixed rate, over
HTTP/1.1 and HTTP/2: GETs of four classes picked by a header, a cookie, a query parameter and a
bucket rule, all mirrored; mirrored PUTs with a 2 KiB body; GETs of an excluded path; POSTs and
DELETEs, which this config does not mirror. The canary answers like the primary, except every
10th request, answered 500, and every 200th, answered after the timeout.

Flat, concretely (`check`): after the warm-up (samples before WARMUP_SECONDS), split the
samples into a first and a second half, each of at least MIN_PER_HALF samples (a short run
samples more often than `interval` to get them); Envoy's RSS (VmRSS) may grow by at most RSS_LIMIT_KIB
between the halves' medians and between their maxima, and Envoy's heap
(`server.memory_allocated`) by at most ALLOC_LIMIT_BYTES; so a climb shows whether it is steady
or in steps. The pending gauge, read every 0.5 s while the load runs (a read that
fails is a failure), never exceeds max_in_flight × workers and is 0 once the load has stopped. And the traffic was served right: every h2load request answered 2xx, each
upstream got what it should, every request classified and decided as its kind says, one
comparison per mirror, in the results the canary's answers allow.

Writes every sample, the traffic and the checks to `--out` (JSON) and prints a table; exits 1
when a check fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

WORKERS = 2
MAX_IN_FLIGHT = 64
TIMEOUT_MS = 1000
WARMUP_SECONDS = 20
# "Flat" compares two halves of the samples after the warm-up: each has at least this many, or
# the run proves nothing. A short run samples more often to get them.
MIN_PER_HALF = 10
# Reads of the pending gauge while the load runs (every 0.5 s), at least.
MIN_PENDING_READS = 10
RSS_LIMIT_KIB = 4 * 1024
ALLOC_LIMIT_BYTES = 2 * 1024 * 1024
ERROR_EVERY = 10
SLOW_EVERY = 200

REQUESTS = "progressive_delivery_requests_total"
MIRROR_TOTAL = "progressive_delivery_mirror_total"
COMPARISONS = "progressive_delivery_comparisons_total"
PENDING = "progressive_delivery_mirrors_pending"

COHORT_SEED = "soak"


def user_id(in_cohort: bool) -> str:
    """The first test user id on the wanted side of the 50% cohort (README's bucket formula)."""
    return next(f"user-{i}" for i in range(1000) if (harness.bucket(COHORT_SEED, f"user-{i}") < 5000) == in_cohort)


PLUGIN = {
    "classification": {
        "rules": [
            {"class": "insider", "cookie": {"name": "type", "exact": "insider"}},
            {"class": "beta", "header": {"name": "x-beta", "exact": "true"}},
            {"class": "preview", "query": {"name": "preview", "present": True}},
            {"class": "cohort", "bucket": {"header": "x-user-id", "percent": 50, "seed": COHORT_SEED}},
        ],
        "features": {"beta": ["new-checkout"], "insider": ["new-checkout", "debug"]},
    },
    "mirror": {
        "cluster": "canary",
        "methods": ["GET", "HEAD", "PUT"],
        "exclude_paths": ["/api/admin/"],
        "timeout_ms": TIMEOUT_MS,
        "max_in_flight": MAX_IN_FLIGHT,
        "compare": {"body": "json", "headers": ["content-type"], "ignore": ["/served_at"]},
    },
}


@dataclass
class Kind:
    """One h2load process: what it sends and what the filter must make of it."""

    name: str
    rps: int
    user_class: str
    decision: str
    paths: list[str]
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    h1: bool = False


def kinds() -> list[Kind]:
    items = ["/api/items", "/api/items?page=2&sort=price", "/api/profile", "/api/balance"]
    return [
        Kind("GET stable", 50, "stable", "mirrored", items),
        Kind("GET beta (header)", 30, "beta", "mirrored", items, headers=[("x-beta", "true")], h1=True),
        Kind("GET insider (cookie)", 30, "insider", "mirrored", items, headers=[("cookie", "session=4f2a9c; type=insider")]),
        Kind("GET preview (query)", 20, "preview", "mirrored", ["/api/items?preview", "/api/profile?preview=1"], h1=True),
        Kind("GET cohort (bucket)", 15, "cohort", "mirrored", items, headers=[("x-user-id", user_id(True))]),
        Kind("GET not in cohort", 15, "stable", "mirrored", items, headers=[("x-user-id", user_id(False))], h1=True),
        Kind("GET excluded path", 10, "stable", "path_excluded", ["/api/admin/stats"]),
        Kind("PUT 2 KiB", 20, "stable", "mirrored", ["/api/profile/settings"], method="PUT", body=b'{"tz": "%s"}' % (b"x" * 2040)),
        Kind("POST 1 KiB", 20, "stable", "not_idempotent", ["/api/orders"], method="POST", body=b'{"note": "%s"}' % (b"y" * 1010), h1=True),
        Kind("DELETE", 10, "stable", "not_idempotent", ["/api/sessions/old"], method="DELETE"),
    ]


ANSWER = {"items": [{"sku": f"sku-{i}", "price": i * 100} for i in range(8)], "currency": "EUR"}
SAME = harness.json_reply(ANSWER)
ERROR = harness.json_reply(ANSWER, status=500)
SLOW = harness.json_reply(ANSWER, delay=2.5 * TIMEOUT_MS / 1000, label="slow")


class Canary:
    """Answers like the primary, except every ERROR_EVERY-th request (500) and every
    SLOW_EVERY-th (after the timeout). Called on the upstream's one loop thread."""

    def __init__(self):
        self.n = 0

    def __call__(self, _seen: harness.Seen) -> harness.Reply:
        self.n += 1
        if self.n % SLOW_EVERY == SLOW_EVERY // 2:
            return SLOW
        if self.n % ERROR_EVERY == 0:
            return ERROR
        return SAME


def sample(e: harness.Envoy, t: float) -> dict:
    text = e.prometheus()
    server = harness.envoy_stats(e, "server.")

    def total(name: str, label: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for labels, v in harness.prometheus_samples(text, name):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0) + int(v)
        return out

    return {
        "t": round(t, 1),
        "rss_kib": harness.rss_kib(e.proc.pid),
        "memory_allocated": server.get("memory_allocated"),
        "memory_heap_size": server.get("memory_heap_size"),
        "pending": harness.prometheus_value(text, PENDING, {"canary_cluster": "canary"}),
        "requests": sum(total(REQUESTS, "user_class").values()),
        "decisions": {k: v for k, v in total(MIRROR_TOTAL, "decision").items() if v},
        "results": {k: v for k, v in total(COMPARISONS, "result").items() if v},
    }


def halves(values: list[float]) -> tuple[list[float], list[float]]:
    k = len(values) // 2
    return values[:k], values[len(values) - k:]


def growth(values: list[float]) -> tuple[float, float]:
    """(median of the second half − median of the first, max of the second − max of the first)."""
    first, second = halves(values)
    if not first:
        return 0.0, 0.0
    return statistics.median(second) - statistics.median(first), max(second) - max(first)


MEMORY = (("rss_kib", RSS_LIMIT_KIB, "KiB"), ("memory_allocated", ALLOC_LIMIT_BYTES, "bytes"))


def flat(samples: list[dict]) -> tuple[dict, list[str]]:
    """The memory series' growth after the warm-up, and how it is not flat (empty: flat)."""
    bad: list[str] = []
    steady = [s for s in samples if s["t"] >= WARMUP_SECONDS]
    growths = {}
    if len(steady) // 2 < MIN_PER_HALF:
        bad.append(f"only {len(steady) // 2} samples per half after the warm-up, fewer than {MIN_PER_HALF}: sample more often")
    for key, limit, unit in MEMORY:
        med, top = growth([s[key] for s in steady])
        growths[key] = {"median_growth": med, "max_growth": top, "limit": limit, "unit": unit}
        if med > limit or top > limit:
            bad.append(f"{key} grew {med:.0f} {unit} (medians) / {top:.0f} {unit} (maxima) between the halves, limit {limit}")
    return growths, bad


def check(result: dict) -> list[str]:
    """Every way the run was not flat or not correct, in words; empty when it passed."""
    result["flat"], bad = flat(result["samples"])
    result["samples_per_half"] = len([s for s in result["samples"] if s["t"] >= WARMUP_SECONDS]) // 2

    bound = MAX_IN_FLIGHT * WORKERS
    if result["pending_failed_reads"]:
        bad.append(f"{len(result['pending_failed_reads'])} reads of the pending gauge failed: {result['pending_failed_reads'][:3]}")
    if result["pending_reads"] < MIN_PENDING_READS:
        bad.append(f"only {result['pending_reads']} reads of the pending gauge while the load ran")
    if result["pending_max"] > bound:
        bad.append(f"pending reached {result['pending_max']}, over max_in_flight × workers = {bound}")
    if result["pending_after"] != 0:
        bad.append(f"{result['pending_after']} mirrors still pending after the load")

    t = result["traffic"]
    for k in t:
        if not k["clean"]:
            bad.append(f"{k['name']}: not every request answered 2xx: {k['h2load']}")
    sent = sum(k["sent"] for k in t)
    end = result["end"]
    if result["primary_got"] != sent:
        bad.append(f"the primary got {result['primary_got']} requests, {sent} were sent")
    want_classes: dict[str, int] = {}
    want_decisions: dict[str, int] = {}
    for k in t:
        want_classes[k["user_class"]] = want_classes.get(k["user_class"], 0) + k["sent"]
        want_decisions[k["decision"]] = want_decisions.get(k["decision"], 0) + k["sent"]
    if end["classes"] != want_classes:
        bad.append(f"classes counted {end['classes']}, sent {want_classes}")
    decisions = dict(end["decisions"])
    # Shedding is allowed (and counted); it takes from the mirrored.
    decisions["mirrored"] = decisions.get("mirrored", 0) + decisions.pop("overloaded", 0)
    if decisions != want_decisions:
        bad.append(f"decisions {end['decisions']}, sent {want_decisions} (overloaded counts as mirrored here)")
    mirrored = end["decisions"].get("mirrored", 0)
    results = end["results"]
    if sum(results.values()) != mirrored:
        bad.append(f"{sum(results.values())} comparisons for {mirrored} mirrors: {results}")
    canary = result["canary_replies"]
    if sum(canary.values()) != mirrored:
        bad.append(f"the canary got {sum(canary.values())} copies of {mirrored} mirrors")
    if set(results) - {"match", "status_mismatch", "mirror_timeout"}:
        bad.append(f"results other than the canary's answers can explain: {results}")
    # An answer is compared as what it was, or times out if it came late; slow ones always do.
    if results.get("match", 0) > canary.get("200", 0):
        bad.append(f"{results.get('match')} matches, the canary answered like the primary {canary.get('200', 0)} times")
    if results.get("status_mismatch", 0) > canary.get("500", 0):
        bad.append(f"{results.get('status_mismatch')} status mismatches, the canary answered 500 {canary.get('500', 0)} times")
    if results.get("mirror_timeout", 0) < canary.get("slow", 0):
        bad.append(f"{results.get('mirror_timeout', 0)} timeouts, the canary answered {canary.get('slow', 0)} too late")
    return bad


def run(seconds: float, interval: float = 10.0, out: Path | None = None, log=print) -> dict:
    """Runs the soak; returns the result (samples, traffic, totals, `failures`), written to `out`."""
    primary = harness.FastUpstream("primary", SAME).start()
    canary = harness.FastUpstream("canary", Canary()).start()
    e = harness.Envoy(harness.mirroring_envoy_config(PLUGIN, primary.port, canary.port), concurrency=WORKERS)
    loads: list[tuple[Kind, harness.H2load]] = []
    pending = None
    # Enough samples after the warm-up for MIN_PER_HALF in each half, with some to spare.
    interval = min(interval, max(0.5, (seconds - WARMUP_SECONDS) / (2 * MIN_PER_HALF + 4)))
    try:
        e.start()
        url = f"http://127.0.0.1:{e.listener_port}"
        started = time.monotonic()
        for k in kinds():
            n = int(k.rps * seconds)
            h = harness.H2load(
                [url + p for p in k.paths], n, clients=2, rps=k.rps / 2,
                headers=k.headers, h1=k.h1, method=k.method if k.method != "GET" else None, body=k.body,
            )
            loads.append((k, h.start()))

        samples: list[dict] = []
        # Between the memory samples too: the bound must hold at every moment we can see.
        pending = harness.GaugeSampler(e, PENDING, {"canary_cluster": "canary"}, interval=0.5).start()
        log(f"soak: {seconds:.0f} s, {sum(k.rps for k, _ in loads)} requests/s of {len(loads)} kinds; Envoy pid {e.proc.pid}, admin :{e.admin_port}")
        log(f"{'t (s)':>6} {'RSS MiB':>8} {'heap MiB':>8} {'pending':>7} {'requests':>9} {'req/s':>6}  {'mirrored':>8} {'match':>7} {'5xx':>6} {'timeout':>7}")
        next_at = 0.0
        while True:
            now = time.monotonic() - started
            s = sample(e, now)
            prev = samples[-1] if samples else None
            s["rps"] = round((s["requests"] - prev["requests"]) / (s["t"] - prev["t"]), 1) if prev else 0.0
            samples.append(s)
            r = s["results"]
            log(
                f"{s['t']:6.0f} {s['rss_kib'] / 1024:8.1f} {s['memory_allocated'] / 2**20:8.1f} {s['pending']!s:>7} "
                f"{s['requests']:9d} {s['rps']:6.0f}  {s['decisions'].get('mirrored', 0):8d} {r.get('match', 0):7d} "
                f"{r.get('status_mismatch', 0):6d} {r.get('mirror_timeout', 0):7d}"
            )
            if all(h.proc.poll() is not None for _, h in loads):
                break
            next_at += interval
            time.sleep(max(0.0, started + next_at - time.monotonic()))
        pending.stop()
        pending.failed += [f"t={s['t']}: no sample" for s in samples if s["pending"] is None]

        traffic = []
        for k, h in loads:
            got = h.wait(timeout=60)
            traffic.append(
                {
                    "name": k.name, "method": k.method, "rps": k.rps, "http": "1.1" if k.h1 else "2",
                    "user_class": k.user_class, "decision": k.decision, "sent": got.total, "clean": got.clean,
                    "h2load": {"succeeded": got.succeeded, "failed": got.failed, "errored": got.errored,
                               "timeout": got.timeout, "status": got.status},
                }
            )
        mirrored = lambda: harness.counts_by(e, MIRROR_TOTAL, "decision").get("mirrored", 0)  # noqa: E731
        harness.wait_until(
            lambda: sum(harness.counts_by(e, COMPARISONS, "result").values()) == mirrored()
            and harness.metric_now(e, PENDING, {"canary_cluster": "canary"}) == 0,
            30, 0.2, what="every mirror concluded and none pending",
        )
        replies: dict[str, int] = {}
        for (_, _, reply), n in canary.tally().items():
            replies[reply] = replies.get(reply, 0) + n
        text = e.prometheus()
        result = {
            "seconds": seconds,
            "interval": interval,
            "workers": WORKERS,
            "plugin_config": PLUGIN,
            "traffic": traffic,
            "samples": samples,
            "pending_max": max(pending.values + [s["pending"] for s in samples if s["pending"] is not None], default=0),
            "pending_reads": len(pending.values),
            "pending_failed_reads": pending.failed,
            "pending_after": harness.metric_now(e, PENDING, {"canary_cluster": "canary"}),
            "primary_got": primary.count(),
            "canary_replies": replies,
            "end": {
                "classes": {lbl["user_class"]: int(v) for lbl, v in harness.prometheus_samples(text, REQUESTS) if v},
                "decisions": {k: int(v) for k, v in harness.counts_by(e, MIRROR_TOTAL, "decision").items()},
                "results": {k: int(v) for k, v in harness.counts_by(e, COMPARISONS, "result").items()},
                "canary_cluster": harness.envoy_stats(e, "cluster.canary."),
                "primary_cluster": harness.envoy_stats(e, "cluster.primary."),
            },
            "flat": {},
            "envoy_log": str(e.log_path),
        }
        result["failures"] = check(result)
    finally:
        if pending is not None:
            pending.stop()
        for _, h in loads:
            h.stop()
        e.stop()
        primary.stop()
        canary.stop()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    return result


def summary(result: dict) -> str:
    end = result["end"]
    lines = [
        f"sent {sum(k['sent'] for k in result['traffic'])} requests, all 2xx: {all(k['clean'] for k in result['traffic'])}",
        f"decisions {end['decisions']}",
        f"results {end['results']}; canary answers {result['canary_replies']}",
        f"answers that came too late for the timeout besides the slow ones: "
        f"{end['results'].get('mirror_timeout', 0) - result['canary_replies'].get('slow', 0)}",
        f"pending max {result['pending_max']:.0f} in {result['pending_reads']} reads (bound {MAX_IN_FLIGHT * WORKERS}), "
        f"after the load {result['pending_after']}",
    ]
    lines.append(f"memory after the warm-up: {result['samples_per_half']} samples per half, every {result['interval']:.1f} s")
    for key, f in result["flat"].items():
        lines.append(f"{key}: growth {f['median_growth']:.0f} {f['unit']} (medians), {f['max_growth']:.0f} {f['unit']} (maxima), limit {f['limit']}")
    lines += [f"FAILED: {b}" for b in result["failures"]] or ["flat and correct"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--out", type=Path, default=harness.REPO / "target" / "soak" / "result.json")
    args = ap.parse_args()
    result = run(args.seconds, args.interval, args.out)
    print(summary(result))
    print(f"series in {args.out}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
