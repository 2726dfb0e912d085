"""Flagger's view of a rollout: the MetricTemplate's query on a real Prometheus that scrapes a
real Envoy running the sidecar WasmPlugin of istio/flagger/.

The canary answers every fourth mirrored request differently, so exactly a quarter of the
comparisons are body mismatches. Prometheus (Debian's package) scrapes Envoy every second with
the stats settings of istio/mesh-config.yaml; the query is the MetricTemplate's, templated the
way Flagger templates it for the Canary in istio/flagger/canary.yaml.
"""

from __future__ import annotations

import threading

import harness
import istio_model as im
from test_istio import istio_envoy_config, uid

# The answer is within this of the true share. rate() extrapolates each series over the
# window; all of them are scraped at the same instants from 0, so the error is far smaller.
TOLERANCE = 0.02
REQUESTS = 200
DIFFER_EVERY = 4


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
        body = {**self.same, "price": 11} if differ else self.same
        return harness.fixed(200, body)(req)


def test_mismatch_ratio_query_on_real_prometheus(envoy, upstream, prometheus):
    sidecar = im.one("flagger/wasmplugin-sidecar.yaml")
    template = im.one("flagger/metrictemplate.yaml")
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

    same = {"price": 10, "currency": "EUR"}
    cluster = im.mirror_cluster(sidecar)
    # The primary's and the canary's timestamps differ on every answer: ignored by the config.
    app = upstream("app", harness.fixed(200, {**same, "timestamp": 1}))
    canary = EveryNthDiffers({**same, "timestamp": 2}, DIFFER_EVERY)
    canary_up = upstream("canary", canary)
    e = envoy(istio_envoy_config(sidecar, [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}], {"app": app.port, cluster: canary_up.port}))
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
    want = canary.differed / compared
    assert want == 1 / DIFFER_EVERY

    counts = {"body_mismatch": canary.differed, "match": compared - canary.differed}
    harness.wait_until(
        lambda: harness.counts_by(e, "progressive_delivery_comparisons_total", "result", canary_cluster=cluster) == counts,
        what=f"Envoy counted {counts}",
    )
    # Prometheus has scraped the final counts once its own sum agrees with Envoy.
    total = f'sum(progressive_delivery_comparisons_total{{canary_cluster="{cluster}"}})'
    harness.wait_until(lambda: prom.scalar(total) == compared, timeout=15, what="Prometheus has the final counts")

    got = prom.scalar(query)
    print(f"\nFlagger query ({metric['interval']}):\n{query}\n= {got} (true share {want})")
    assert got is not None, "the query returned no series"
    assert abs(got - want) <= TOLERANCE, (got, want)
    # Against the Canary's threshold this is a failed check: the canary would be rolled back.
    assert got > metric["thresholdRange"]["max"]

    # The query selects this canary only: another canary's comparisons in the same Prometheus
    # would not match the target's cluster name.
    other = im.flagger_query(template["spec"]["query"], namespace="shop", target="checkout", interval="1m")
    assert prom.query(other) == []
