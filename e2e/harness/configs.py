"""Envoy bootstraps: the shipped envoy.yaml on free ports, or one built from parts (`bootstrap`,
`wasm_filter`, `class_routes`, `static_cluster`). Every bootstrap takes its stats_tags from the
shipped envoy.yaml, so tests see the metric labels users get."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml

from .process import REPO

WASM = Path(os.environ.get("PD_WASM", REPO / "dist" / "progressive_delivery.wasm"))
# The test-only build that traps on purpose (`make panic-probe`, src/host/panic_probe.rs).
PANIC_PROBE_WASM = Path(
    os.environ.get("PD_PANIC_PROBE_WASM", REPO / "target" / "panic-probe" / "progressive_delivery_panic_probe.wasm")
)
SHIPPED_ENVOY_YAML = REPO / "envoy.yaml"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def bucket(seed: str, key: str) -> int:
    """The documented bucket formula (README: "Sticky cohorts"), computed independently of the
    filter: SHA-256 of "seed:key", first 8 bytes big-endian, modulo 10000. Mirror sampling
    uses it with the seed "mirror"."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") % 10000


def shipped_config_on(ports: dict[str, int]) -> dict:
    """envoy.yaml as shipped, with its listener and admin on free ports (0) and each cluster
    named in `ports` (primary, canary) pointed at that port."""
    cfg = yaml.safe_load(SHIPPED_ENVOY_YAML.read_text())
    cfg["admin"]["address"]["socket_address"]["port_value"] = 0
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = 0
    for cluster in cfg["static_resources"]["clusters"]:
        sa = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        sa["port_value"] = ports[cluster["name"]]
    return cfg


def wasm_filter(plugin_config: dict | str | None, *, wasm: Path | str = WASM, code: dict | None = None, failure_policy: str = "FAIL_CLOSED") -> dict:
    """The `envoy.filters.http.wasm` filter running progressive-delivery with `plugin_config`
    (a dict is sent as JSON, a str as is, None leaves `configuration` out). The module is the
    local file `wasm`, or `code` when given (an AsyncDataSource, e.g. `remote_code(...)`)."""
    config: dict = {
        "name": "progressive-delivery",
        "root_id": "progressive-delivery",
        "failure_policy": failure_policy,
        "vm_config": {
            "vm_id": "progressive-delivery",
            "runtime": "envoy.wasm.runtime.v8",
            "code": code if code is not None else {"local": {"filename": str(wasm)}},
        },
    }
    if plugin_config is not None:
        value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value}
    return {
        "name": "progressive-delivery",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": config},
    }


def remote_code(uri: str, cluster: str, sha256: str, retries: int = 0) -> dict:
    """vm_config.code fetching the module over HTTP from `uri` through Envoy's `cluster`, loaded
    only if its SHA-256 is `sha256` (hex). Retries back off 50 ms at most, so a test that expects
    the load to fail does not wait out Envoy's default back-off."""
    retry = {"num_retries": retries, "retry_back_off": {"base_interval": "0.05s", "max_interval": "0.05s"}}
    return {"remote": {"http_uri": {"uri": uri, "cluster": cluster, "timeout": "5s"}, "sha256": sha256, "retry_policy": retry}}


def class_routes(to: dict[str, str], default: str, header: str = "x-user-class") -> list[dict]:
    """Routes sending each class in `to` to its cluster and everything else to `default`."""
    routes = [
        {"match": {"prefix": "/", "headers": [{"name": header, "string_match": {"exact": cls}}]}, "route": {"cluster": cluster}}
        for cls, cluster in to.items()
    ]
    return routes + [{"match": {"prefix": "/"}, "route": {"cluster": default}}]


def static_cluster(name: str, port: int) -> dict:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    return {
        "name": name,
        "connect_timeout": "1s",
        "type": "STATIC",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


def bootstrap(*, http_filters: list[dict], routes: list[dict], clusters: list[dict]) -> dict:
    """A bootstrap with one HTTP listener, an admin endpoint and envoy.yaml's stats_tags; ports
    are filled in by Envoy.start."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {"name": "e2e", "virtual_hosts": [{"name": "e2e", "domains": ["*"], "routes": routes}]},
        "http_filters": http_filters,
    }
    listener = {
        "name": "ingress",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }
    return {
        "node": {"id": "e2e", "cluster": "e2e"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_config": {"stats_tags": yaml.safe_load(SHIPPED_ENVOY_YAML.read_text())["stats_config"]["stats_tags"]},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


def classifying_envoy_config(plugin_config: dict | str | None, upstreams: dict, to: dict[str, str], default: str) -> dict:
    """The common case: the filter, routes on x-user-class, one static cluster per upstream."""
    return bootstrap(
        http_filters=[wasm_filter(plugin_config), ROUTER],
        routes=class_routes(to, default),
        clusters=[static_cluster(name, up.port) for name, up in upstreams.items()],
    )


def mirroring_envoy_config(plugin_config: dict | str | None, primary, canary, canary_cluster: bool = True, canary_name: str = "canary") -> dict:
    """The filter with `plugin_config`, every route to cluster `primary`, and a static cluster
    `canary_name` for the filter's mirror callouts (left out with canary_cluster=False). An int
    instead of an Upstream is a port (e.g. free_port(), where nothing listens). Histograms are
    merged every 200 ms, so their `_count` shows up on /stats/prometheus quickly."""
    port = lambda u: u if isinstance(u, int) else u.port  # noqa: E731
    clusters = [static_cluster("primary", port(primary))] + ([static_cluster(canary_name, port(canary))] if canary_cluster else [])
    cfg = bootstrap(http_filters=[wasm_filter(plugin_config), ROUTER], routes=[{"match": {"prefix": "/"}, "route": {"cluster": "primary"}}], clusters=clusters)
    cfg["stats_flush_interval"] = "0.2s"
    return cfg
