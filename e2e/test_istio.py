"""The manifests under istio/ run on a real Envoy the way Istio would run them.

There is no Kubernetes here, so each test builds the Envoy that Istio would build from a
manifest (istio_model.py says which part of Istio each step follows): the WasmPlugin's
`pluginConfig` as the filter's configuration, the mesh config's `extraStatTags` and
`proxyStatsMatcher` as Envoy's stats_config, the VirtualService's class matches as routes, and
clusters named as Istio names them (`outbound|PORT|SUBSET|HOST`). Then real requests go
through it. The schema check of the same files is test_crd_schema.py.
"""

from __future__ import annotations

import time

import pytest

import harness
import istio_model as im

GATEWAY = "wasmplugin-gateway.yaml"
SIDECARS = ["routing/wasmplugin-sidecar.yaml", "flagger/wasmplugin-sidecar.yaml"]
MESH = "mesh-config.yaml"
CLASS_HEADER = "x-user-class"
SAME = {"ok": True, "items": [1, 2, 3]}


def stats(required_prefixes: list[str] | None = None) -> dict:
    return im.stats_config(im.proxy_config(im.one(MESH)), required_prefixes)


def istio_envoy_config(wasmplugin: dict, routes: list[dict], clusters: dict[str, int], **stats_kw) -> dict:
    """An Envoy with the WasmPlugin's filter before the router, `routes`, a static cluster per
    name in `clusters` (name -> port) and Istio's stats_config from the mesh config."""
    filt = harness.wasm_filter(im.plugin_configuration(wasmplugin), failure_policy="FAIL_RELOAD")
    cfg = harness.bootstrap(
        http_filters=[filt, harness.ROUTER],
        routes=routes,
        clusters=[harness.static_cluster(n, p) for n, p in clusters.items()],
    )
    cfg["stats_config"] = stats(**stats_kw)
    cfg["stats_flush_interval"] = "0.2s"
    return cfg


def with_baseline(wasmplugin: dict, clusters: dict[str, int], primary_port: int) -> dict[str, int]:
    """`clusters` plus the WasmPlugin's mirror.baseline cluster, if it has one, on the primary's
    port: the baseline is the primary's own Service."""
    baseline = im.baseline_cluster(wasmplugin)
    return {**clusters, baseline: primary_port} if baseline else clusters


def classes_of(wasmplugin: dict) -> set[str]:
    c = wasmplugin["spec"]["pluginConfig"]["classification"]
    return {r["class"] for r in c.get("rules", [])} | {c.get("default_class", "stable")}


def bucket_rules(wasmplugin: dict) -> list[tuple]:
    rules = wasmplugin["spec"]["pluginConfig"]["classification"].get("rules", [])
    return [(r["class"], r["bucket"].get("cookie"), r["bucket"]["percent"], r["bucket"].get("seed", "")) for r in rules if "bucket" in r]


def uid(inside_cohort: bool, in_mirror_sample: bool | None = None, percent: float = 20) -> str:
    """A uid cookie value on the chosen side of the gateway's 5% cohort (seed api-v2) and,
    if asked, of the sidecar's sticky mirror sample."""
    for i in range(100_000):
        u = f"user-{i}"
        if (harness.bucket("api-v2", u) < 500) != inside_cohort:
            continue
        if in_mirror_sample is not None and (harness.bucket("mirror", u) < percent * 100) != in_mirror_sample:
            continue
        return u
    raise AssertionError("no such uid in 100000")


# ---------------------------------------------------------------------------------------------
# The manifests agree with each other


def test_manifests_agree_on_classes_clusters_and_routes():
    gateway = im.one(GATEWAY)
    produced = classes_of(gateway)
    cls = gateway["spec"]["pluginConfig"]["classification"]
    assert cls["trust_incoming_header"] is False and "mirror" not in gateway["spec"]["pluginConfig"]

    routed_to_canary: set[str] = set()
    vs = im.one("routing/virtualservice.yaml")
    dr = im.one("routing/destinationrule.yaml")
    subsets = {s["name"] for s in dr["spec"]["subsets"]}
    for route in vs["spec"]["http"]:
        for dest in route["route"]:
            assert dest["destination"]["host"] == dr["spec"]["host"]
            assert dest["destination"]["subset"] in subsets
        for m in route.get("match", []):
            value = m["headers"][CLASS_HEADER]["exact"]
            assert value in produced, f"VirtualService matches class {value!r} the gateway never writes"
            if route["route"][0]["destination"]["subset"] == "canary":
                routed_to_canary.add(value)
    canary = im.one("flagger/canary.yaml")
    flagger_routed = {m["headers"][CLASS_HEADER]["exact"] for m in canary["spec"]["analysis"]["match"]}
    assert flagger_routed == routed_to_canary and flagger_routed <= produced
    assert canary["spec"]["analysis"]["mirror"] is False

    port = vs["spec"]["http"][0]["route"][0]["destination"]["port"]["number"]
    expected_cluster = {
        "routing/wasmplugin-sidecar.yaml": f"outbound|{port}|canary|{dr['spec']['host']}",
        "flagger/wasmplugin-sidecar.yaml": (
            f"outbound|{canary['spec']['service']['port']}||"
            f"{canary['spec']['targetRef']['name']}-canary.{canary['metadata']['namespace']}.svc.cluster.local"
        ),
    }
    for path in SIDECARS:
        sidecar = im.one(path)
        c = sidecar["spec"]["pluginConfig"]["classification"]
        assert c["trust_incoming_header"] is True, path
        assert c.get("header", CLASS_HEADER) == cls.get("header", CLASS_HEADER), path
        # Same classes and the same cohort, so a request without the header is classified
        # on an inner hop as the gateway would have.
        assert classes_of(sidecar) == produced, path
        assert bucket_rules(sidecar) == bucket_rules(gateway), path
        assert im.mirror_cluster(sidecar) == expected_cluster[path], path
        mirrored = set(sidecar["spec"]["pluginConfig"]["mirror"]["classes"])
        assert mirrored <= produced and not mirrored & routed_to_canary, path
        assert [m["mode"] for m in sidecar["spec"]["match"]] == ["SERVER"], path


# ---------------------------------------------------------------------------------------------
# Each WasmPlugin's pluginConfig in the filter


@pytest.mark.parametrize("path", [GATEWAY, *SIDECARS])
def test_plugin_config_is_accepted_by_the_filter(envoy, upstream, path):
    """The filter validates the pluginConfig exactly as Istio would deliver it (a Struct's JSON,
    numbers as doubles): a config error would make Envoy refuse to start."""
    plugin = im.one(path)
    primary = upstream("primary", harness.fixed(200, SAME))
    clusters = {"primary": primary.port}
    if im.mirror_cluster(plugin):
        clusters[im.mirror_cluster(plugin)] = upstream("canary", harness.fixed(200, SAME)).port
    e = envoy(istio_envoy_config(plugin, [{"match": {"prefix": "/"}, "route": {"cluster": "primary"}}], with_baseline(plugin, clusters, primary.port)))
    assert e.request("GET", "/api/items").status == 200
    # The primary is also a sidecar's baseline: its marked copy is not the request.
    (got,) = [r for r in primary.take() if r.header("x-mirror") is None]
    assert got.header(CLASS_HEADER) in classes_of(plugin)
    assert "invalid configuration" not in e.log()


def vs_routes(vs: dict, cluster_of_subset) -> list[dict]:
    """The VirtualService's HTTP routes as Envoy routes: a `headers: {NAME: {exact: V}}` match
    becomes a header matcher, each destination subset its Istio cluster."""
    out = []
    for route in vs["spec"]["http"]:
        cluster = cluster_of_subset(route["route"][0]["destination"]["subset"])
        for m in route.get("match") or [{}]:
            headers = [{"name": n, "string_match": {"exact": v["exact"]}} for n, v in m.get("headers", {}).items()]
            out.append({"match": {"prefix": "/", "headers": headers}, "route": {"cluster": cluster}})
    return out


def test_gateway_classifies_at_the_edge_and_the_virtualservice_routes_classes(envoy, upstream):
    gateway = im.one(GATEWAY)
    vs = im.one("routing/virtualservice.yaml")
    host = im.one("routing/destinationrule.yaml")["spec"]["host"]
    stable = upstream("stable", harness.fixed(200, SAME))
    canary = upstream("canary", harness.fixed(200, SAME))
    cluster = lambda subset: f"outbound|8080|{subset}|{host}"  # noqa: E731
    e = envoy(istio_envoy_config(gateway, vs_routes(vs, cluster), {cluster("stable"): stable.port, cluster("canary"): canary.port}))

    outside, inside = uid(inside_cohort=False), uid(inside_cohort=True)
    cases = [
        # (request headers, upstream reached, class seen there, features seen there)
        ([("cookie", f"uid={outside}")], "stable", "stable", None),
        ([("cookie", f"uid={outside}"), (CLASS_HEADER, "beta"), ("x-features", "api-v2")], "stable", "stable", None),
        ([("cookie", f"uid={outside}; beta_opt_in=true")], "canary", "beta", "api-v2"),
        ([("cookie", f"uid={inside}")], "canary", "cohort", "api-v2"),
        ([("cookie", f"uid={inside}"), (CLASS_HEADER, "stable")], "canary", "cohort", "api-v2"),
    ]
    ups = {"stable": stable, "canary": canary}
    for headers, where, cls, features in cases:
        r = e.request("GET", "/api/items", headers)
        assert r.status == 200, headers
        (got,) = ups[where].take()
        assert (got.header(CLASS_HEADER), got.header("x-features")) == (cls, features), headers
        assert not ups["canary" if where == "stable" else "stable"].take(), headers

    # A first visit gets its uid from the gateway, and is classified by it at once.
    r = e.request("GET", "/")
    cookie = r.header("set-cookie")
    assert cookie and cookie.startswith("uid="), r.headers
    new_uid = cookie.split(";")[0].split("=", 1)[1]
    where = "canary" if harness.bucket("api-v2", new_uid) < 500 else "stable"
    (got,) = ups[where].take()
    assert got.header(CLASS_HEADER) == ("cohort" if where == "canary" else "stable")
    text = e.prometheus()
    assert harness.prometheus_value(text, "progressive_delivery_requests_total", {"user_class": "beta"}) == 1, text


@pytest.mark.parametrize("path", SIDECARS)
def test_sidecar_trusts_the_edge_and_mirrors_stable_reads(envoy, upstream, path):
    sidecar = im.one(path)
    mirror = sidecar["spec"]["pluginConfig"]["mirror"]
    cluster = mirror["cluster"]
    app = upstream("app", harness.fixed(200, {**SAME, "timestamp": 1}))
    canary = upstream("canary", harness.fixed(200, {**SAME, "timestamp": 2}))
    e = envoy(istio_envoy_config(sidecar, [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}], with_baseline(sidecar, {"app": app.port, cluster: canary.port}, app.port)))

    sampled = uid(inside_cohort=False, in_mirror_sample=True, percent=mirror["percent"])
    unsampled = uid(inside_cohort=False, in_mirror_sample=False, percent=mirror["percent"])
    requests = [
        # (method, path, headers, decision)
        ("GET", "/api/items", [("cookie", f"uid={sampled}"), (CLASS_HEADER, "stable")], "mirrored"),
        ("GET", "/api/items?page=2", [("cookie", f"uid={sampled}")], "mirrored"),
        ("GET", "/api/items", [("cookie", f"uid={unsampled}")], "not_sampled"),
        ("GET", "/api/items", [("cookie", f"uid={sampled}"), (CLASS_HEADER, "beta")], "class_excluded"),
        ("POST", "/api/orders", [("cookie", f"uid={sampled}")], "not_idempotent"),
        ("GET", "/api/logout", [("cookie", f"uid={sampled}")], "path_excluded"),
    ]
    for method, p, headers, _ in requests:
        assert e.request(method, p, headers, b"{}" if method == "POST" else None).status == 200
    # The class decided at the edge is kept on this inner hop. (The app is also the baseline:
    # its marked copies are not requests of the client.)
    originals = [r for r in app.take() if r.header("x-mirror") is None]
    assert [r.header(CLASS_HEADER) for r in originals] == ["stable", "stable", "stable", "beta", "stable", "stable"]

    harness.wait_until(lambda: harness.counts_by(e, "progressive_delivery_comparisons_total", "result") == {"match": 2}, what="2 matches")
    expected: dict[str, float] = {}
    for *_, decision in requests:
        expected[decision] = expected.get(decision, 0) + 1
    assert harness.counts_by(e, "progressive_delivery_mirror_total", "decision", canary_cluster=cluster) == expected
    copies = canary.take()
    assert sorted(r.path for r in copies) == ["/api/items", "/api/items?page=2"]
    assert {r.header("x-mirror") for r in copies} == {"1"}


# ---------------------------------------------------------------------------------------------
# The mesh config's stats settings


@pytest.mark.parametrize(
    "required,ours,exported",
    [
        (None, True, True),  # today's Istio: `wasm` is among its own prefixes
        ([p for p in im.ISTIO_REQUIRED_PREFIXES if p != "wasm"], True, True),  # older Istio
        ([p for p in im.ISTIO_REQUIRED_PREFIXES if p != "wasm"], False, False),  # control
    ],
    ids=["istio-default", "without-wasm-prefix", "control-neither"],
)
def test_mesh_stats_settings_export_labelled_metrics(envoy, upstream, required, ours, exported):
    """With the mesh config, Istio's stats matcher keeps the filter's metrics and its
    extraStatTags label them; the control shows the matcher really drops what it does not
    include, so the first two cases are not passing by accident."""
    proxy = im.proxy_config(im.one(MESH))
    if not ours:
        proxy = {**proxy, "proxyStatsMatcher": {}}
    sidecar = im.one("flagger/wasmplugin-sidecar.yaml")
    cluster = im.mirror_cluster(sidecar)
    app = upstream("app", harness.fixed(200, SAME))
    canary = upstream("canary", harness.fixed(200, SAME))
    cfg = istio_envoy_config(sidecar, [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}], with_baseline(sidecar, {"app": app.port, cluster: canary.port}, app.port))
    cfg["stats_config"] = im.stats_config(proxy, required)
    e = envoy(cfg)
    assert e.request("GET", "/api/items", [("cookie", f"uid={uid(False, True)}")]).status == 200
    harness.wait_until(lambda: canary.take(), what="the mirror reached the canary")
    if not exported:
        # A rejected stat is never created, so there is nothing to wait for but the reply:
        # the canary has answered, and the comparison concludes on that reply.
        time.sleep(1.0)
        text = e.prometheus()
        assert "progressive_delivery" not in text, [l for l in text.splitlines() if "progressive_delivery" in l][:5]
        return
    harness.wait_until(
        lambda: harness.counts_by(e, "progressive_delivery_comparisons_total", "result", canary_cluster=cluster, user_class="stable") == {"match": 1},
        what="a labelled comparison",
    )
    text = e.prometheus()
    names = {line.split("{")[0] for line in text.splitlines() if line.startswith("progressive_delivery_")}
    assert names >= {
        "progressive_delivery_requests_total",
        "progressive_delivery_mirror_total",
        "progressive_delivery_comparisons_total",
        "progressive_delivery_mirrors_pending",
    }, names
    # Every label came out of the name: no tag left encoded in a metric name.
    assert not [n for n in names if "=" in n or "user_class" in n], names
