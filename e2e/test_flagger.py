"""Flagger's view of a rollout: the MetricTemplates' queries on a real Prometheus that scrapes a
real Envoy running the sidecar WasmPlugin of istio/flagger/.

The app answers like a real service, with a trace id of its own in every answer, and is both
the primary and the baseline (the sidecar's mirror.baseline is the primary's own Service). The
canary answers every fourth mirrored request with another price. So the comparisons are
`noise` (the canary differed from the baseline only in the trace id, once the filter has
learned it varies), `body_mismatch` (the price, and the trace id while it was being learned),
and the mismatch ratio must count `noise` as agreement. Prometheus (Debian's package) scrapes
Envoy every second with the stats settings of istio/mesh-config.yaml; the queries are the
MetricTemplates', templated the way Flagger templates them for the Canary in
istio/flagger/canary.yaml.
"""

from __future__ import annotations

import math
import threading
import uuid

import harness
import istio_model as im
from test_istio import istio_envoy_config, uid

# The answer is within this of the true share. rate() extrapolates each series over the
# window; all of them are scraped at the same instants from 0, so the error is far smaller.
TOLERANCE = 0.02
REQUESTS = 200
DIFFER_EVERY = 4
COMPARISONS = "progressive_delivery_comparisons_total"
MISMATCHES = {"status_mismatch", "header_mismatch", "body_mismatch", "mirror_error", "mirror_timeout"}


def traced(same: dict) -> harness.servers.Responder:
    """`same`, with a trace id drawn for each answer."""

    def respond(req: harness.Received):
        return harness.fixed(200, {**same, "trace_id": str(uuid.uuid4())})(req)

    return respond


class EveryNthDiffers:
    """A responder that answers like the primary, except every n-th request it receives."""

    def __init__(self, same: dict, n: int):
        self.same, self.n, self.seen, self.differed = same, n, 0, 0
        self.lock = threading.Lock()

    def __call__(self, req: harness.Received):
        with self.lock:
            self.seen += 1
            differ = self.seen % self.n == 0
            self.differed += differ
        return traced({**self.same, "price": 11} if differ else self.same)(req)


def canary_query(relpath: str) -> tuple[str, dict]:
    """A MetricTemplate's query as Flagger sends it for istio/flagger/canary.yaml, and the
    Canary's metric entry that refers to it."""
    template = im.one(relpath)
    canary_res = im.one("flagger/canary.yaml")
    (metric,) = [m for m in canary_res["spec"]["analysis"]["metrics"] if m.get("templateRef", {}).get("name") == template["metadata"]["name"]]
    query = im.flagger_query(
        template["spec"]["query"],
        name=canary_res["metadata"]["name"],
        namespace=canary_res["metadata"]["namespace"],
        target=canary_res["spec"]["targetRef"]["name"],
        service=canary_res["metadata"]["name"],
        interval=metric["interval"],
    )
    return query, metric


def test_mismatch_and_latency_queries_on_real_prometheus(envoy, upstream, prometheus):
    sidecar = im.one("flagger/wasmplugin-sidecar.yaml")
    canary_res = im.one("flagger/canary.yaml")
    mismatch_query, mismatch_metric = canary_query("flagger/metrictemplate.yaml")
    latency_query, latency_metric = canary_query("flagger/metrictemplate-latency.yaml")

    cluster, baseline = im.mirror_cluster(sidecar), im.baseline_cluster(sidecar)
    ns, target, port = canary_res["metadata"]["namespace"], canary_res["spec"]["targetRef"]["name"], canary_res["spec"]["service"]["port"]
    # The baseline is Flagger's primary Service: the version in production.
    assert baseline == f"outbound|{port}||{target}-primary.{ns}.svc.cluster.local"

    same = {"price": 10, "currency": "EUR"}
    # The primary's and the canary's timestamps differ on every answer: ignored by the config.
    app = upstream("app", traced({**same, "timestamp": 1}))
    canary = EveryNthDiffers({**same, "timestamp": 2}, DIFFER_EVERY)
    canary_up = upstream("canary", canary)
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]
    e = envoy(istio_envoy_config(sidecar, routes, {"app": app.port, cluster: canary_up.port, baseline: app.port}))
    prom = prometheus([f"127.0.0.1:{e.admin_port}"])
    harness.wait_until(prom.targets_up, timeout=20, what="Prometheus scraping Envoy")

    # Half the users are in the sticky mirror sample: their reads are compared, the others' not.
    sampled = [uid(False, True, sidecar["spec"]["pluginConfig"]["mirror"]["percent"])]
    unsampled = [uid(False, False, sidecar["spec"]["pluginConfig"]["mirror"]["percent"])]
    for i in range(REQUESTS):
        who = sampled[0] if i % 2 == 0 else unsampled[0]
        assert e.request("GET", f"/api/prices/{i}", [("cookie", f"uid={who}")]).status == 200
    compared = REQUESTS // 2
    harness.wait_until(lambda: canary.seen == compared, what=f"{compared} mirrors at the canary")
    assert canary.differed == compared // DIFFER_EVERY

    harness.wait_until(
        lambda: sum(harness.counts_by(e, COMPARISONS, "result", canary_cluster=cluster).values()) == compared,
        what=f"Envoy counted {compared} comparisons",
    )
    counts = harness.counts_by(e, COMPARISONS, "result", canary_cluster=cluster)
    # Every price change is a mismatch; the trace id is a mismatch only until it is learned.
    assert counts.get("body_mismatch", 0) >= canary.differed and counts.get("noise", 0) >= compared / 2, counts
    assert set(counts) <= {"noise", "body_mismatch", "match"}, counts
    want = sum(v for k, v in counts.items() if k in MISMATCHES) / sum(v for k, v in counts.items() if k != "skipped")
    # Prometheus has scraped the final counts once its own sum agrees with Envoy.
    total = f'sum(progressive_delivery_comparisons_total{{canary_cluster="{cluster}"}})'
    harness.wait_until(lambda: prom.scalar(total) == compared, timeout=15, what="Prometheus has the final counts")

    got = prom.scalar(mismatch_query)
    print(f"\nFlagger query ({mismatch_metric['interval']}):\n{mismatch_query}\n= {got} (Envoy's counts {counts}: {want})")
    assert got is not None, "the query returned no series"
    assert abs(got - want) <= TOLERANCE, (got, want)
    # `noise` was agreement: counted as a mismatch the share would be over 0.9.
    noise_as_mismatch = (compared - counts.get("match", 0)) / compared
    assert noise_as_mismatch - got > 0.5, (got, noise_as_mismatch)
    # Against the Canary's threshold this is a failed check: the canary would be rolled back.
    assert got > mismatch_metric["thresholdRange"]["max"]

    # Both histograms have the compared requests; the ratio of their p99s is a number.
    for name in ("progressive_delivery_mirror_duration_ms", "progressive_delivery_baseline_duration_ms"):
        count = f'sum({name}_count{{canary_cluster="{cluster}"}})'
        harness.wait_until(lambda: prom.scalar(count) == compared, timeout=15, what=f"Prometheus has {name}")
    ratio = prom.scalar(latency_query)
    print(f"\nFlagger query ({latency_metric['interval']}):\n{latency_query}\n= {ratio}")
    assert ratio is not None and math.isfinite(ratio) and ratio > 0, ratio

    # The queries select this canary only: another canary's comparisons in the same Prometheus
    # would not match the target's cluster name.
    for relpath in ("flagger/metrictemplate.yaml", "flagger/metrictemplate-latency.yaml"):
        other = im.flagger_query(im.one(relpath)["spec"]["query"], namespace="shop", target="checkout", interval="1m")
        assert prom.query(other) == [], relpath
