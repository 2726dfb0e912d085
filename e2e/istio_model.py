"""What Istio and Flagger make of the manifests under istio/, for tests that run the result on a
real Envoy and a real Prometheus (there is no Kubernetes here).

Each function follows one piece of upstream code, named in its docstring; where upstream does
more than the tests need, the function does only the part named.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

import harness

ISTIO_DIR = harness.REPO / "istio"


def documents(root: Path = ISTIO_DIR) -> list[tuple[Path, dict]]:
    """Every YAML document under `root`, with its file."""
    return [(path, doc) for path in sorted(root.rglob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(relpath: str) -> dict:
    [doc] = [d for d in yaml.safe_load_all((ISTIO_DIR / relpath).read_text()) if d]
    return doc


# ---------------------------------------------------------------------------------------------
# WasmPlugin.spec.pluginConfig -> the filter's configuration string


def _as_struct(value):
    """What a google.protobuf.Struct keeps of a YAML value: every number is a double, which
    protojson writes without a fraction when it is whole (2000.0 -> 2000)."""
    if isinstance(value, dict):
        return {str(k): _as_struct(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_struct(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    return value


def plugin_configuration(wasmplugin: dict) -> str:
    """The plugin configuration Envoy hands the filter for this WasmPlugin. Istio stores
    `pluginConfig` as a google.protobuf.Struct (so every number is a double) and passes the
    filter the Struct's JSON text in a google.protobuf.StringValue."""
    return json.dumps(_as_struct(wasmplugin["spec"].get("pluginConfig") or {}), separators=(",", ":"))


def mirror_cluster(wasmplugin: dict) -> str | None:
    mirror = wasmplugin["spec"].get("pluginConfig", {}).get("mirror")
    return mirror.get("cluster", "canary") if mirror is not None else None


def baseline_cluster(wasmplugin: dict) -> str | None:
    mirror = wasmplugin["spec"].get("pluginConfig", {}).get("mirror") or {}
    return (mirror.get("baseline") or {}).get("cluster")


# ---------------------------------------------------------------------------------------------
# ProxyConfig -> Envoy stats_config

# Istio's own tag rules, in the order of tools/packaging/common/envoy_bootstrap.json: the ones
# before `extraStatTags`, then the ones after.
_ISTIO_TAGS_BEFORE = [
    ("cluster_name", r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"),
    ("tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
    ("response_code", r"_rq(_(\d{3}))$"),
    ("response_code_class", r"_rq(_(\dxx))$"),
    ("http_conn_manager_listener_prefix", r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
    ("http_conn_manager_prefix", r"^http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
    ("listener_address", r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
    ("mongo_prefix", r"^mongo\.(.+?)\.(collection|cmd|cx_|op_|delays_|decoding_)(.*?)$"),
]
_ISTIO_TAGS_AFTER = [
    ("cache", r"(cache\.(.+?)\.)"),
    ("component", r"(component\.(.+?)\.)"),
    ("tag", r"(tag\.(.+?);\.)"),
    ("wasm_filter", r"(wasm_filter\.(.+?)\.)"),
    ("authz_enforce_result", r"rbac(\.(allowed|denied))"),
    ("authz_dry_run_action", r"(\.istio_dry_run_(allow|deny)_)"),
    ("authz_dry_run_result", r"(\.shadow_(allowed|denied))"),
]
# pkg/bootstrap/config.go: requiredEnvoyStatsMatcherInclusionPrefixes, ...Suffixes, ...Regexes.
# `wasm` is in the required prefixes of recent Istio versions; older ones lack it.
ISTIO_REQUIRED_PREFIXES = ["cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm"]
_ISTIO_REQUIRED_SUFFIXES = ["rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied", "downstream_cx_active"]
_ISTIO_REQUIRED_REGEXES = [r"vhost\..*\.route\..*"]


def proxy_config(mesh_config: dict) -> dict:
    """meshConfig.defaultConfig of an IstioOperator."""
    assert mesh_config["kind"] == "IstioOperator", mesh_config["kind"]
    return mesh_config["spec"]["meshConfig"]["defaultConfig"]


def stats_config(proxy: dict, required_prefixes: list[str] | None = None) -> dict:
    """The `stats_config` Istio's bootstrap template renders for a ProxyConfig (tags from
    `extraStatTags`, inclusion list from `proxyStatsMatcher` plus Istio's required patterns).
    `required_prefixes` replaces Istio's list, e.g. to model a version without `wasm`."""
    matcher = proxy.get("proxyStatsMatcher", {})
    extra = proxy.get("extraStatTags", [])
    tags = [{"tag_name": n, "regex": r} for n, r in _ISTIO_TAGS_BEFORE]
    tags += [{"tag_name": t, "regex": f"({t}=\\.=(.*?);\\.;)"} for t in extra]
    tags += [{"tag_name": n, "regex": r} for n, r in _ISTIO_TAGS_AFTER]
    prefixes = list(matcher.get("inclusionPrefixes", []))
    prefixes += ISTIO_REQUIRED_PREFIXES if required_prefixes is None else required_prefixes
    patterns = [{"prefix": "reporter="}]
    patterns += [{"prefix": p} for p in prefixes]
    patterns += [{"suffix": s} for s in matcher.get("inclusionSuffixes", []) + _ISTIO_REQUIRED_SUFFIXES]
    patterns += [{"safe_regex": {"regex": r}} for r in matcher.get("inclusionRegexps", []) + _ISTIO_REQUIRED_REGEXES]
    patterns += [{"prefix": "component"}, {"prefix": "istio"}]
    return {
        "use_all_default_tags": False,
        "stats_tags": tags,
        "stats_matcher": {"inclusion_list": {"patterns": patterns}},
    }


# ---------------------------------------------------------------------------------------------
# MetricTemplate.spec.query -> PromQL

_FLAGGER_FUNCS = ("name", "namespace", "target", "service", "ingress", "interval")
_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)


def flagger_query(template: str, **model: str) -> str:
    """The query Flagger sends to Prometheus: MetricTemplate queries are Go text/templates
    whose functions `name`, `namespace`, `target`, `service`, `ingress` and `interval` return
    the canary's fields (flagger pkg/apis/flagger/v1beta1/metric.go, TemplateFunctions).
    Any other action is an error here, so a template using more than these fails the test
    instead of being half rendered."""
    missing = [f for f in _FLAGGER_FUNCS if f not in model]
    model = {**{f: "" for f in missing}, **model}

    def action(m: re.Match) -> str:
        word = m.group(1)
        if word not in _FLAGGER_FUNCS:
            raise ValueError(f"template action {{{{ {word} }}}} is not one of Flagger's functions {_FLAGGER_FUNCS}")
        return model[word]

    out = _ACTION.sub(action, template)
    assert "{{" not in out and "}}" not in out, out
    return out
