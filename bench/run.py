"""`make bench`: the filter side by side with no filter, a filter that does nothing, Envoy's
own mirroring and Envoy's Lua filter, on this machine, in one run.

Every scenario is an Envoy (`--concurrency 1`) in front of the same upstream: another Envoy
whose `direct_response` listeners answer a fixed 2 KB JSON body, one as the primary and one as
the canary (cheap and native, so the upstream is not what is measured). h2load drives each
scenario over HTTP/1.1 and HTTP/2 at saturation (req/s, and Envoy's CPU time per request) and,
for the scenarios the latency and CPU targets name, at a light fixed rate (p50 and p99 from
h2load's per-request log). Rounds interleave the scenarios, each round in a different order,
so machine noise falls on all of them alike. Each ratio is taken within a round, then its
median over rounds is reported with its spread (min-max); a target is met when the median
is, and the table says whether every round agreed. A last run holds a canary slower than the
filter's timeout for 60 s and samples Envoy's RSS.

Before anything is measured each scenario proves it does what it claims: the request is
answered, the classifying ones wrote the class header (their route needs it), the mirroring
ones mirrored (the canary and baseline clusters answered copies, the filter counted them
`mirrored` and compared them as the scenario implies). After the run the same counters must
show every request mirrored and compared; a broken mirror fails the bench instead of looking
fast.

    .venv/bin/python bench/run.py [--rounds N] [--seconds S] [--rss-seconds S] [--out FILE]
                                  [--scenarios a,b,...]  (a subset: ratios and targets of the
                                  others are left out; --rss-seconds 0 skips the slow canary)

`mirror_json_baseline` is `mirror_json` with a baseline: a third upstream answering like the
primary (another timestamp and request id), which gets a copy of every mirrored request and
against which the canary is judged, noise set aside.

`grpc_mirror` and `grpc_native_mirror` are the same comparison for gRPC, over HTTP/2 only: a
unary call (`/bench.v1.Catalog/GetProduct`, a 1 KB request message sent by h2load with
`content-type: application/grpc` and `te: trailers`) mirrored by the filter (method declared,
`compare.body: protobuf`) or by Envoy's `request_mirror_policies`. The gRPC upstream is Envoy
too: a `direct_response` of a 1 KB protobuf message behind the `grpc_http1_reverse_bridge`
filter, which frames it and adds the `grpc-status` trailer, so the answers are real gRPC. Their
pre-check is a real grpcio call (status OK, the message back).

Results go to bench/results.json (every run, the medians, ratios and targets) and the tables
to stdout. Numbers are only comparable within one run: these machines are noisy.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "e2e"))

import harness  # noqa: E402

NOOP_WASM = REPO / "target" / "noop" / "noop_filter.wasm"
FLOOR_WASM = REPO / "target" / "noop" / "floor_filter.wasm"


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    # Also measured at the light fixed rate: the scenarios a latency or CPU ratio names.
    light: bool = False
    protocols: tuple[str, ...] = ("h1", "h2")
    # In a plain `make bench`; the others run when `--scenarios` names them.
    default: bool = True


SCENARIOS = [
    Scenario("none", "no Wasm filter: the ceiling", light=True),
    Scenario("noop", "a Proxy-Wasm filter that does nothing ([`bench/noop/`](../bench/noop/), same SDK, profile and wasm-opt passes): the floor of any Wasm filter", light=True),
    Scenario("floor", "the classification floor ([`bench/noop/src/floor.rs`](../bench/noop/src/floor.rs)): whole header map read, one header written, route re-picked, one counter; no rule, no logic", light=True),
    Scenario("floor_names", "`floor` reading only the 6 headers `classify` needs, one `get_map_value` each, instead of the whole map"),
    Scenario("floor_noreroute", "`floor` without `clear_route_cache`"),
    Scenario("empty_config", "this filter without configuration: host calls only (headers read and written, route re-picked, counted)"),
    Scenario("classify", "this filter with 5 rules (header, cookie, regex, query, bucket), no mirror", light=True),
    Scenario("classify_nobucket", "this filter with `lua_classify`'s 4 rules (header, cookie, contains, query)"),
    Scenario("classify_noreroute", "`classify` with `reroute: false`: no `clear_route_cache`, so routes do not see the class"),
    Scenario("lua_classify", "Envoy's Lua filter with the same 4 rules, writing the class header and re-picking the route (`clearRouteCache`)"),
    Scenario("native_mirror", "Envoy's own `request_mirror_policies` to the canary (C++, fire and forget, no comparison)", light=True),
    Scenario("mirror_floor", "the mirror floor ([`bench/noop/src/floor.rs`](../bench/noop/src/floor.rs), word `mirror`): `floor`, plus the request headers handed to the root context over the shared queue (one wake-up per burst), the callout dispatched there, the canary's reply headers and the primary's response headers read; no comparison, no metric per result", light=True),
    Scenario("mirror_nobody", "classify + mirror every GET + compare status and `content-type`, `compare.body: none` (the copy, the callout, both answers' headers, metrics)"),
    Scenario("mirror_bytes", "classify + mirror every GET + compare status, `content-type` and the body (`bytes`: XXH64 of both)", light=True),
    Scenario("mirror_json", "the same with `body: json` ignoring `/timestamp` and `/request_id`, which the canary answers differently, so both 2 KB bodies are read", light=True),
    Scenario("mirror_json_baseline", "`mirror_json` with a baseline: a third upstream answering like the primary gets a copy too", light=True),
    Scenario("grpc_native_mirror", "Envoy's `request_mirror_policies` for a unary gRPC call (1 KB message each way), HTTP/2 only", light=True, protocols=("h2",)),
    Scenario("grpc_mirror", "the filter mirroring the same call: method declared, `compare.body: protobuf`, HTTP/2 only", light=True, protocols=("h2",)),
    # `make bench-host-calls`: the floor probe making each call 21 times per request, and
    # variants without one call, so that call's cost stands out of the machine's noise.
    Scenario("calls", "the floor probe, every call 21 times per request: whole header map read, header written, `clear_route_cache`, counter", default=False),
    Scenario("calls_names", "`calls` reading the 6 headers `classify` needs one `get_map_value` each, instead of the whole map", default=False),
    Scenario("calls_noread", "`calls` without the read", default=False),
    Scenario("calls_nowrite", "`calls` without the header write", default=False),
    Scenario("calls_noreroute", "`calls` without `clear_route_cache`", default=False),
    Scenario("calls_nocount", "`calls` without the counter", default=False),
]
NAMES = [s.name for s in SCENARIOS]
DEFAULT_NAMES = [s.name for s in SCENARIOS if s.default]
BY_NAME = {s.name: s for s in SCENARIOS}
MIRROR_SCENARIOS = ("mirror_nobody", "mirror_bytes", "mirror_json", "mirror_json_baseline", "grpc_mirror")
JSON_SCENARIOS = ("mirror_json", "mirror_json_baseline")
GRPC_SCENARIOS = ("grpc_native_mirror", "grpc_mirror")
# Envoy's own mirroring: no filter counter, only the canary cluster's.
NATIVE_MIRROR_SCENARIOS = ("native_mirror", "grpc_native_mirror")
# Their route needs the class header, so a request the filter did not classify is refused.
# Without `clear_route_cache` too (`*_noreroute`): Envoy's Wasm host clears the route cache
# itself when a filter writes a request header, so their routes see the class all the same.
CLASSIFYING = ("classify", "classify_nobucket", "classify_noreroute", "lua_classify")
# The probe's plugin configuration: what it reads and whether it re-picks the route.
FLOOR_CONFIG = {"floor": "map", "floor_names": "names", "floor_noreroute": "map noreroute", "mirror_floor": "map mirror"}
CALLS_TIMES = 21
CALLS_CONFIG = {
    "calls": "map",
    "calls_names": "names",
    "calls_noread": "map noread",
    "calls_nowrite": "map nowrite",
    "calls_noreroute": "map noreroute",
    "calls_nocount": "map nocount",
}
# What one call costs: (the scenario with it, the one without it), over CALLS_TIMES.
HOST_CALLS = [
    ("whole request header map read (`get_map_bytes`)", "calls", "calls_noread"),
    ("6 single header reads (`get_map_value_bytes`)", "calls_names", "calls_noread"),
    ("one request header written (`set_map_value_bytes`)", "calls", "calls_nowrite"),
    ("`clear_route_cache` (`call_foreign_function`)", "calls", "calls_noreroute"),
    ("one counter incremented (`increment_metric`)", "calls", "calls_nocount"),
]
PROTOCOLS = ["h1", "h2"]
H2LOAD = shutil.which("h2load") or "h2load"

# The request every scenario serves: a realistic cookie header and user agent, so the
# classification rules have something to read.
PATH = "/api/items?page=2&sort=price"
REQUEST_HEADERS = [
    ("cookie", "session=4f2a9c1e7b3d4a5f8e6c2b1a0d9e8f7c; uid=user-4242; theme=dark; consent=analytics,ads; _ga=GA1.2.123456789.1700000000"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
    ("accept", "application/json"),
]

# Five rules, one of each kind, the matching one last so every rule is evaluated.
CLASSIFICATION = {
    "header": "x-user-class",
    "default_class": "stable",
    "rules": [
        {"class": "insider", "header": {"name": "x-employee", "exact": "true"}},
        {"class": "beta", "cookie": {"name": "beta_opt_in", "exact": "true"}},
        {"class": "chrome", "header": {"name": "user-agent", "regex": ".*Chrome/1[0-9]{2}\\..*"}},
        {"class": "preview", "query": {"name": "preview", "present": True}},
        {"class": "cohort", "bucket": {"cookie": "uid", "percent": 50, "seed": "bench"}},
    ],
    "features_header": "x-features",
    "features": {"beta": ["new-checkout"], "cohort": ["new-checkout"]},
}


# classify's rules without the bucket, which Lua has no SHA-256 for, and `contains` in place of
# the regex, which Lua patterns cannot express: the two sides of the Lua comparison run exactly
# these, the matching rule (none: the default class) last.
CLASSIFICATION_NOBUCKET = {
    "header": "x-user-class",
    "default_class": "stable",
    "rules": [
        {"class": "insider", "header": {"name": "x-employee", "exact": "true"}},
        {"class": "beta", "cookie": {"name": "beta_opt_in", "exact": "true"}},
        {"class": "chrome", "header": {"name": "user-agent", "contains": "Chrome/"}},
        {"class": "preview", "query": {"name": "preview", "present": True}},
    ],
}

LUA_CLASSIFY = """
local function cookie(value, name)
  if value == nil then return nil end
  for k, v in string.gmatch(value, "([^=;%s]+)=([^;]*)") do
    if k == name then return v end
  end
  return nil
end

local function has_query(path, name)
  local query = string.match(path, "%?(.*)$")
  if query == nil then return false end
  for pair in string.gmatch(query, "[^&]+") do
    if (string.match(pair, "^([^=]*)")) == name then return true end
  end
  return false
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local class = "stable"
  local ua = headers:get("user-agent")
  if headers:get("x-employee") == "true" then
    class = "insider"
  elseif cookie(headers:get("cookie"), "beta_opt_in") == "true" then
    class = "beta"
  elseif ua ~= nil and string.find(ua, "Chrome/", 1, true) then
    class = "chrome"
  elseif has_query(headers:get(":path") or "", "preview") then
    class = "preview"
  end
  headers:replace("x-user-class", class)
  handle:clearRouteCache()
end
"""


GRPC_PATH = "/bench.v1.Catalog/GetProduct"


def protobuf_message(size: int) -> bytes:
    """A message of about `size` bytes: field 1 (varint 7) and field 2 (a string)."""
    n = size - 5
    return bytes([0x08, 7, 0x12, (n & 0x7F) | 0x80, n >> 7]) + b"x" * n


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def lua_filter(source: str) -> dict:
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": source},
        },
    }


def upstream_body(timestamp: int = 1700000000, request_id: str = "r-0001") -> bytes:
    """A 2 KB JSON document. The canary of mirror_json answers with another timestamp and
    request id, the two ignored fields: its bodies differ in bytes, so the comparison has to
    parse and walk both, as it would in production; everywhere else the bodies are identical."""
    items = [{"id": i, "sku": f"SKU-{i:05d}", "name": f"Item number {i}", "price": 10 + i * 0.25, "tags": ["a", "b"]} for i in range(20)]
    doc = {"account": "andrew", "currency": "EUR", "items": items, "timestamp": timestamp, "request_id": request_id}
    body = json.dumps(doc).encode()
    assert 1900 <= len(body) <= 2200, len(body)
    return body


def plugin_config(scenario: str) -> dict | None:
    if scenario == "classify":
        return {"classification": CLASSIFICATION}
    if scenario == "classify_nobucket":
        return {"classification": CLASSIFICATION_NOBUCKET}
    if scenario == "classify_noreroute":
        return {"classification": CLASSIFICATION | {"reroute": False}}
    # The bench measures what a mirror costs, not how the filter sheds: with 128 streams in
    # flight a burst can leave more than the default 256 mirrors pending (the gRPC canary, an
    # Envoy behind a bridge, answers slowest), and a shed copy fails the after-run check.
    if scenario == "grpc_mirror":
        mirror = {"cluster": "canary", "percent": 100, "max_in_flight": 1024, "grpc": {"methods": ["/bench.v1.Catalog/Get*"]}, "compare": {"body": "protobuf"}}
        return {"classification": CLASSIFICATION, "mirror": mirror}
    if scenario in MIRROR_SCENARIOS:
        compare: dict = {"headers": ["content-type"], "body": "bytes"}
        if scenario == "mirror_nobody":
            compare = {"headers": ["content-type"], "body": "none"}
        if scenario in JSON_SCENARIOS:
            compare = {"headers": ["content-type"], "body": "json", "ignore": ["/timestamp", "/request_id"]}
        mirror = {"cluster": "canary", "methods": ["GET"], "percent": 100, "max_in_flight": 1024, "compare": compare}
        if scenario == "mirror_json_baseline":
            mirror["baseline"] = {"cluster": "baseline", "percent": 100}
        return {"classification": CLASSIFICATION, "mirror": mirror}
    # empty_config: the filter with no configuration at all.
    return None


# ---------------------------------------------------------------------------------------------
# Envoys


def hcm_listener(name: str, port: int, routes: list[dict], http_filters: list[dict]) -> dict:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": name,
                            "codec_type": "AUTO",
                            "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
                            "http_filters": http_filters,
                        },
                    }
                ]
            }
        ],
    }


def grpc_listeners(primary: int, canary: int, inner: int) -> list[dict]:
    """gRPC answers without a gRPC server: `inner` answers a plain protobuf body, and the
    reverse bridge in front of it turns that into a gRPC answer (framed, `grpc-status: 0` in
    the trailers). Not one listener: Envoy turns a direct response to a gRPC request into a
    gRPC error of its own."""
    answer = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_bytes": base64.b64encode(protobuf_message(1024)).decode()}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/x-protobuf"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
    }
    bridge = {
        "name": "envoy.filters.http.grpc_http1_reverse_bridge",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfig",
            "content_type": "application/x-protobuf",
            "withhold_grpc_frames": True,
        },
    }
    to_inner = [{"match": {"prefix": "/"}, "route": {"cluster": "grpc_inner"}}]
    return [
        hcm_listener("grpc_primary", primary, to_inner, [bridge, harness.ROUTER]),
        hcm_listener("grpc_canary", canary, to_inner, [bridge, harness.ROUTER]),
        hcm_listener("grpc_inner", inner, [answer], [harness.ROUTER]),
    ]


def h2_cluster(cluster: dict) -> dict:
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return cluster


def direct_response_listener(name: str, port: int, body: bytes, delay: str | None = None) -> dict:
    filters = []
    if delay:
        filters.append(
            {
                "name": "envoy.filters.http.fault",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                    "delay": {"fixed_delay": delay, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
                    "max_active_faults": 100000,
                },
            }
        )
    filters.append(harness.ROUTER)
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": name,
                            "codec_type": "AUTO",
                            "route_config": {
                                "virtual_hosts": [
                                    {
                                        "name": name,
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"prefix": "/"},
                                                "direct_response": {"status": 200, "body": {"inline_string": body.decode()}},
                                                "response_headers_to_add": [
                                                    {"header": {"key": "content-type", "value": "application/json"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                                                ],
                                            }
                                        ],
                                    }
                                ]
                            },
                            "http_filters": filters,
                        },
                    }
                ]
            }
        ],
    }


@dataclass
class Upstreams:
    primary: int = field(default_factory=harness.free_port)
    canary: int = field(default_factory=harness.free_port)
    canary_json: int = field(default_factory=harness.free_port)
    baseline: int = field(default_factory=harness.free_port)
    slow_canary: int = field(default_factory=harness.free_port)
    grpc_primary: int = field(default_factory=harness.free_port)
    grpc_canary: int = field(default_factory=harness.free_port)
    grpc_inner: int = field(default_factory=harness.free_port)

    def config(self, slow_delay: str) -> dict:
        body = upstream_body()
        cfg = harness.bootstrap(http_filters=[harness.ROUTER], routes=[], clusters=[])
        cfg["static_resources"]["listeners"] = [
            direct_response_listener("primary", self.primary, body),
            direct_response_listener("canary", self.canary, body),
            direct_response_listener("canary_json", self.canary_json, upstream_body(1700000042, "r-9999")),
            direct_response_listener("baseline", self.baseline, upstream_body(1700000007, "r-0007")),
            direct_response_listener("slow_canary", self.slow_canary, body, delay=slow_delay),
            *grpc_listeners(self.grpc_primary, self.grpc_canary, self.grpc_inner),
        ]
        cfg["static_resources"]["clusters"] = [harness.static_cluster("grpc_inner", self.grpc_inner)]
        return cfg


def scenario_config(scenario: str, up: Upstreams, canary_port: int | None = None, timeout_ms: int | None = None) -> dict:
    route: dict = {"cluster": "primary", "timeout": "10s"}
    if scenario in NATIVE_MIRROR_SCENARIOS:
        route["request_mirror_policies"] = [{"cluster": "canary"}]
    routes = [{"match": {"prefix": "/"}, "route": route}]
    if scenario in CLASSIFYING:
        routes = [
            {"match": {"prefix": "/", "headers": [{"name": "x-user-class", "present_match": True}]}, "route": route},
            {"match": {"prefix": "/"}, "direct_response": {"status": 421, "body": {"inline_string": "not classified"}}},
        ]
    if scenario in FLOOR_CONFIG:
        # The header the probe writes, exactly: a failed read (another value) or write is refused.
        routes = [
            {"match": {"prefix": "/", "headers": [{"name": "x-user-class", "string_match": {"exact": "stable"}}]}, "route": route},
            {"match": {"prefix": "/"}, "direct_response": {"status": 421, "body": {"inline_string": "no class written"}}},
        ]
    filters = []
    if scenario == "noop":
        filters.append(harness.wasm_filter(None, wasm=NOOP_WASM))
    elif scenario in FLOOR_CONFIG:
        filters.append(harness.wasm_filter(FLOOR_CONFIG[scenario], wasm=FLOOR_WASM))
    elif scenario in CALLS_CONFIG:
        filters.append(harness.wasm_filter(f"{CALLS_CONFIG[scenario]} x{CALLS_TIMES}", wasm=FLOOR_WASM))
    elif scenario == "lua_classify":
        filters.append(lua_filter(LUA_CLASSIFY))
    elif scenario not in ("none", *NATIVE_MIRROR_SCENARIOS):
        cfg = plugin_config(scenario)
        if cfg is not None and timeout_ms is not None:
            cfg["mirror"]["timeout_ms"] = timeout_ms
        filters.append(harness.wasm_filter(cfg, failure_policy="FAIL_RELOAD"))
    filters.append(harness.ROUTER)
    if canary_port is None:
        canary_port = up.canary_json if scenario in JSON_SCENARIOS else up.canary
    clusters = [harness.static_cluster("primary", up.primary), harness.static_cluster("canary", canary_port)]
    if scenario in GRPC_SCENARIOS:
        clusters = [h2_cluster(harness.static_cluster("primary", up.grpc_primary)), h2_cluster(harness.static_cluster("canary", up.grpc_canary))]
    if scenario == "mirror_json_baseline":
        clusters.append(harness.static_cluster("baseline", up.baseline))
    return harness.bootstrap(http_filters=filters, routes=routes, clusters=clusters)


def start_envoy(config: dict, name: str) -> harness.Envoy:
    e = harness.Envoy(config, name=name, concurrency=1, log_level="warning")
    return e.start()


# ---------------------------------------------------------------------------------------------
# Load


@dataclass
class Run:
    scenario: str
    protocol: str
    load: str  # "saturation" or "light"
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    # Envoy's CPU time (user + system) per request over the run, in microseconds: robust to
    # the load generator and other processes competing for the cores, unlike req/s.
    cpu_us: float


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def h2load(port: int, protocol: str, load: str, seconds: float, light_rps: int, grpc_request: Path | None = None) -> tuple[float, list[float], int, int]:
    """Runs h2load; returns (req/s, per-request latencies in ms, requests, non-2xx). No warm-up
    inside the run (see `measure`), so every request it counts is in the CPU window too. With
    `grpc_request` (a file holding one length-prefixed message), each request is a gRPC call
    carrying it."""
    with tempfile.NamedTemporaryFile(prefix="pd-h2load-", suffix=".log", delete=False) as f:
        log_path = f.name
    path = GRPC_PATH if grpc_request else PATH
    args = [H2LOAD, f"http://127.0.0.1:{port}{path}", "-t", "1", f"--duration={seconds:g}", f"--log-file={log_path}"]
    for name, value in REQUEST_HEADERS:
        args += ["-H", f"{name}: {value}"]
    if grpc_request:
        args += ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(grpc_request)]
    if protocol == "h1":
        args.append("--h1")
    if load == "saturation":
        args += ["-c", "32"] if protocol == "h1" else ["-c", "4", "-m", "32"]
    else:
        # A fixed rate well below saturation, as Envoy's benchmarking guide asks for latency.
        clients = 4
        args += ["-c", str(clients), "-m", "1", f"--rps={light_rps // clients}"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
        if out.returncode != 0:
            raise RuntimeError(f"h2load failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out.stdout)
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out.stdout)
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", out.stdout)
        if not (m and codes and done):
            raise RuntimeError(f"cannot read h2load's summary:\n{out.stdout}")
        latencies = []
        with open(log_path) as log:
            for line in log:
                parts = line.split()
                if len(parts) == 3:
                    latencies.append(int(parts[2]) / 1000.0)
        non_2xx = sum(int(codes.group(i)) for i in (2, 3, 4))
        return float(m.group(1)), latencies, int(done.group(1)), non_2xx
    finally:
        os.unlink(log_path)


WARM_UP_SECONDS = 1.0


def measure(e: harness.Envoy, scenario: str, protocol: str, load: str, rnd: int, args, grpc_request: Path | None = None) -> Run:
    """One measured run. A separate, unmeasured h2load warms up first (connections, the VM's
    caches); then Envoy's CPU time is read right before the measured h2load starts and after
    the last mirror it caused has finished, and divided by the requests that h2load counted:
    one window for both."""
    # Only the filter's mirrors are waited for (Envoy's own shadows are not counted anywhere
    # the filter's gauge is): each wait asks Envoy's admin, which costs Envoy CPU too.
    mirrors = scenario in MIRROR_SCENARIOS
    h2load(e.listener_port, protocol, load, WARM_UP_SECONDS, args.light_rps, grpc_request)
    if mirrors:
        drain(e)
    cpu0 = cpu_seconds(e.proc.pid)
    rps, lat, n, bad = h2load(e.listener_port, protocol, load, args.seconds, args.light_rps, grpc_request)
    if mirrors:
        # The mirrors still in flight belong to this run's cost.
        drain(e)
    cpu_us = (cpu_seconds(e.proc.pid) - cpu0) / max(n, 1) * 1e6
    lat.sort()
    return Run(scenario, protocol, load, rnd, rps, percentile(lat, 0.50), percentile(lat, 0.99), n, bad, cpu_us)


def pending_mirrors(e: harness.Envoy) -> float:
    # Only this gauge, not every stat: the question is asked inside the CPU window.
    text = e.admin("/stats/prometheus?filter=progressive_delivery_mirrors_pending")
    return sum(v for _, v in harness.prometheus_samples(text, "progressive_delivery_mirrors_pending"))


def drain(e: harness.Envoy, timeout: float = 30) -> None:
    """Waits until the filter has no mirror pending, so one run's mirrors do not load the next."""
    deadline = time.monotonic() + timeout
    while pending_mirrors(e) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """Time on a CPU of every thread of `pid`, in nanoseconds from the scheduler
    (`/proc/PID/task/TID/schedstat`). `/proc/PID/stat`'s utime and stime count 10 ms ticks: at
    1000 req/s for 3 s that is a step of 3.3 µs per request, 4% of a light-load figure, wider
    than the 6% a target allows. Envoy's threads live as long as it does, so none is missed."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended between the listing and the read
    return total / 1e9


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> dict:
    cpu = ""
    try:
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
    except OSError:
        pass
    envoy_version = subprocess.run([str(harness.ENVOY_BIN), "--version"], capture_output=True, text=True).stdout.strip().split("version:")[-1].strip()
    h2 = subprocess.run([H2LOAD, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "envoy": envoy_version,
        "h2load": h2,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def medians(runs: list[Run]) -> dict:
    out: dict = {}
    for r in runs:
        key = (r.scenario, r.protocol, r.load)
        out.setdefault(key, []).append(r)
    result: dict = {}
    for (s, p, l), rs in out.items():
        result.setdefault(s, {}).setdefault(p, {})[l] = {
            "rps": statistics.median(x.rps for x in rs),
            "p50_ms": statistics.median(x.p50_ms for x in rs),
            "p99_ms": statistics.median(x.p99_ms for x in rs),
            "cpu_us": statistics.median(x.cpu_us for x in rs),
            "rounds": len(rs),
        }
    return result


# (name, numerator scenario, denominator scenario, load, measure)
RATIOS = [
    ("classify/noop req/s", "classify", "noop", "saturation", "rps"),
    ("noop/none req/s", "noop", "none", "saturation", "rps"),
    ("empty_config/noop req/s", "empty_config", "noop", "saturation", "rps"),
    ("floor/noop req/s", "floor", "noop", "saturation", "rps"),
    ("classify/floor req/s", "classify", "floor", "saturation", "rps"),
    ("floor_names/floor req/s", "floor_names", "floor", "saturation", "rps"),
    ("floor_noreroute/floor req/s", "floor_noreroute", "floor", "saturation", "rps"),
    ("classify_noreroute/classify req/s", "classify_noreroute", "classify", "saturation", "rps"),
    ("classify_nobucket/lua_classify req/s", "classify_nobucket", "lua_classify", "saturation", "rps"),
    ("mirror_bytes/native_mirror req/s", "mirror_bytes", "native_mirror", "saturation", "rps"),
    ("mirror_floor/native_mirror req/s", "mirror_floor", "native_mirror", "saturation", "rps"),
    ("mirror_nobody/mirror_floor req/s", "mirror_nobody", "mirror_floor", "saturation", "rps"),
    ("mirror_bytes/mirror_floor req/s", "mirror_bytes", "mirror_floor", "saturation", "rps"),
    ("p99 light mirror_floor/native_mirror", "mirror_floor", "native_mirror", "light", "p99_ms"),
    ("CPU/request light mirror_floor/native_mirror", "mirror_floor", "native_mirror", "light", "cpu_us"),
    ("mirror_json/native_mirror req/s", "mirror_json", "native_mirror", "saturation", "rps"),
    ("mirror_json_baseline/mirror_json req/s", "mirror_json_baseline", "mirror_json", "saturation", "rps"),
    ("mirror_json_baseline/native_mirror req/s", "mirror_json_baseline", "native_mirror", "saturation", "rps"),
    ("CPU/request light floor/noop", "floor", "noop", "light", "cpu_us"),
    ("p99 light mirror_bytes/native_mirror", "mirror_bytes", "native_mirror", "light", "p99_ms"),
    ("CPU/request light mirror_bytes/native_mirror", "mirror_bytes", "native_mirror", "light", "cpu_us"),
    ("CPU/request light classify/noop", "classify", "noop", "light", "cpu_us"),
    ("CPU/request light mirror_json_baseline/mirror_json", "mirror_json_baseline", "mirror_json", "light", "cpu_us"),
    ("grpc_mirror/grpc_native_mirror req/s", "grpc_mirror", "grpc_native_mirror", "saturation", "rps"),
    ("p99 light grpc_mirror/grpc_native_mirror", "grpc_mirror", "grpc_native_mirror", "light", "p99_ms"),
    ("CPU/request light grpc_mirror/grpc_native_mirror", "grpc_mirror", "grpc_native_mirror", "light", "cpu_us"),
]


def ratios(runs: list[Run]) -> dict:
    """Every ratio whose two scenarios were run: taken within each round, where both sides saw
    the same moment of the machine, then the median over rounds and the spread (min, max)."""
    by = {(r.scenario, r.protocol, r.load, r.round): r for r in runs}
    rounds = sorted({r.round for r in runs})
    out: dict = {}
    for p in PROTOCOLS:
        out[p] = {}
        for name, a, b, load, measure in RATIOS:
            per_round = [
                getattr(by[(a, p, load, k)], measure) / getattr(by[(b, p, load, k)], measure)
                for k in rounds
                if (a, p, load, k) in by and (b, p, load, k) in by
            ]
            if per_round:
                out[p][name] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round), "rounds": per_round}
    return out


def host_calls(runs: list[Run]) -> dict:
    """Envoy's CPU time of one host call at saturation: within each round, the CPU per request
    of the probe with the call less that of the probe without it, over CALLS_TIMES; the median
    over rounds and the spread."""
    by = {(r.scenario, r.protocol, r.round): r for r in runs if r.load == "saturation"}
    rounds = sorted({r.round for r in runs})
    out: dict = {}
    for p in PROTOCOLS:
        out[p] = {}
        for name, with_call, without in HOST_CALLS:
            per_round = [
                (by[(with_call, p, k)].cpu_us - by[(without, p, k)].cpu_us) / CALLS_TIMES
                for k in rounds
                if (with_call, p, k) in by and (without, p, k) in by
            ]
            if per_round:
                out[p][name] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round), "rounds": per_round}
    return out


# (name, ratio, bound, at least or at most)
TARGETS = [
    ("classify/noop req/s >= 0.90", "classify/noop req/s", 0.90, "min"),
    ("mirror_bytes/native_mirror req/s >= 0.85", "mirror_bytes/native_mirror req/s", 0.85, "min"),
    ("mirror_json/native_mirror req/s >= 0.75", "mirror_json/native_mirror req/s", 0.75, "min"),
    ("p99 at light load mirror_bytes <= 1.15x native_mirror", "p99 light mirror_bytes/native_mirror", 1.15, "max"),
    ("CPU per request at light load classify <= 1.06x noop", "CPU/request light classify/noop", 1.06, "max"),
    ("classify_nobucket/lua_classify req/s >= 1.0", "classify_nobucket/lua_classify req/s", 1.0, "min"),
    ("mirror_json_baseline/native_mirror req/s >= 0.55", "mirror_json_baseline/native_mirror req/s", 0.55, "min"),
]


def targets(rat: dict, wasm_bytes: int, rss: dict | None, checks: list[dict]) -> list[dict]:
    out = []
    for p in PROTOCOLS:
        r = rat[p]
        for name, ratio, bound, how in TARGETS:
            if ratio in r:
                ok = (lambda v: v >= bound) if how == "min" else (lambda v: v <= bound)
                rounds_met = sum(ok(v) for v in r[ratio]["rounds"])
                out.append(
                    {
                        "target": f"{p}: {name}",
                        "value": r[ratio]["median"],
                        "spread": [r[ratio]["min"], r[ratio]["max"]],
                        "met": ok(r[ratio]["median"]),
                        "rounds_met": f"{rounds_met}/{len(r[ratio]['rounds'])}",
                    }
                )
    out.append({"target": "wasm size <= 450 KB (450,000 bytes)", "value": wasm_bytes, "met": wasm_bytes <= 450_000})
    if rss is not None:
        out.append({"target": "RSS growth in the slow-canary run < 20 MB", "value": rss["growth_kib"], "met": rss["growth_kib"] < 20 * 1024})
        out.append({"target": "RSS flat in the second half (< 1 MB)", "value": rss["second_half_growth_kib"], "met": rss["second_half_growth_kib"] < 1024})
    return out + checks


def fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(med: dict, rat: dict, calls: dict, tg: list[dict], rss: dict | None, wasm_bytes: int, info: dict, args, scenarios: list[str]) -> str:
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}; Envoy {info['envoy']}; {info['h2load']}; {info['date']}; "
        f"load average {info['load_before']} before, {info.get('load_after', '?')} after.",
        f"Envoy --concurrency 1; {args.rounds} interleaved rounds of {args.seconds:g} s per run, each after {WARM_UP_SECONDS:g} s of unmeasured warm-up; "
        f"medians. Saturation: h1 32 connections, h2 4 connections x 32 streams. Light: {args.light_rps} req/s fixed (4 connections). "
        "gRPC scenarios: HTTP/2 only, one unary call with a 1 KB message each way.",
        "",
        "| scenario | proto | req/s (saturation) | Envoy CPU µs/req (saturation) | p50 ms (light) | p99 ms (light) | Envoy CPU µs/req (light) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        for p in BY_NAME[s].protocols:
            sat, light = med[s][p]["saturation"], med[s][p].get("light")
            tail = f"{light['p50_ms']:.3f} | {light['p99_ms']:.3f} | {light['cpu_us']:.0f}" if light else "– | – | –"
            lines.append(f"| {s} | {p} | {sat['rps']:.0f} | {sat['cpu_us']:.1f} | {tail} |")
    lines += ["", "Ratios within each round; median (min–max over rounds):", "", "| ratio | h1 | h2 |", "|---|---:|---:|"]
    # The gRPC ratios exist over HTTP/2 only.
    for k in dict.fromkeys([*rat["h1"], *rat["h2"]]):
        cells = [f"{rat[p][k]['median']:.3f} ({rat[p][k]['min']:.3f}–{rat[p][k]['max']:.3f})" if k in rat[p] else "–" for p in PROTOCOLS]
        lines.append(f"| {k} | {' | '.join(cells)} |")
    breakdown = [s for s in BREAKDOWN if s in med]
    if breakdown:
        lines += ["", "Where the cost is: Envoy's CPU time per request at saturation, one layer added at a time:", "", "| scenario | what | h1 µs/req | h2 µs/req |", "|---|---|---:|---:|"]
        for s in breakdown:
            lines.append(f"| `{s}` | {BY_NAME[s].what} | {med[s]['h1']['saturation']['cpu_us']:.1f} | {med[s]['h2']['saturation']['cpu_us']:.1f} |")
    if calls["h1"] or calls["h2"]:
        lines += [
            "",
            f"What one host call costs: Envoy's CPU µs per call at saturation, the probe making every call {CALLS_TIMES} times per request with and without it; median (min–max over rounds):",
            "",
            "| host call | h1 µs | h2 µs |",
            "|---|---:|---:|",
        ]
        for name, _, _ in HOST_CALLS:
            cells = [f"{calls[p][name]['median']:.2f} ({calls[p][name]['min']:.2f}–{calls[p][name]['max']:.2f})" if name in calls[p] else "–" for p in PROTOCOLS]
            lines.append(f"| {name} | {' | '.join(cells)} |")
    slow = (
        "slow canary not run."
        if rss is None
        else f"Slow canary ({rss['canary_delay']} delay, timeout_ms {rss['timeout_ms']}, {rss['rps']} req/s for {rss['seconds']} s): "
        f"RSS {rss['series_kib'][0]} -> {rss['series_kib'][-1]} KiB (+{rss['growth_kib']} KiB; second half +{rss['second_half_growth_kib']} KiB); "
        f"decisions {rss['decisions']}; results {rss['results']}."
    )
    lines += ["", f"wasm: {wasm_bytes} bytes. {slow}", "", "| target | value (min–max) | met | rounds met |", "|---|---:|---|---:|"]
    for t in tg:
        spread = f" ({t['spread'][0]:.3f}–{t['spread'][1]:.3f})" if "spread" in t else ""
        lines.append(f"| {t['target']} | {fmt(t['value'])}{spread} | {'yes' if t['met'] else '**no**'} | {t.get('rounds_met', '')} |")
    return "\n".join(lines)


# The cost-breakdown table: each adds one layer to the one before.
BREAKDOWN = ["none", "noop", "floor", "empty_config", "classify", "native_mirror", "mirror_floor", "mirror_nobody", "mirror_bytes", "mirror_json", "mirror_json_baseline"]


# ---------------------------------------------------------------------------------------------
# Proof that each scenario does what it claims


def cluster_completed(e: harness.Envoy, cluster: str) -> int:
    stats = e.admin(f"/stats?filter=^cluster\\.{cluster}\\.upstream_rq_completed$")
    m = re.search(r": (\d+)", stats)
    return int(m.group(1)) if m else 0


def mirror_counts(e: harness.Envoy) -> dict:
    return {
        "decisions": harness.counts_by(e, "progressive_delivery_mirror_total", "decision"),
        "results": harness.counts_by(e, "progressive_delivery_comparisons_total", "result"),
        "baseline": harness.counts_by(e, "progressive_delivery_baseline_total", "result"),
    }


def check_grpc(s: str, e: harness.Envoy) -> None:
    """One real gRPC call through the scenario's Envoy: status OK, the upstream's message back."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{e.listener_port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
        call = ch.unary_unary(GRPC_PATH, request_serializer=None, response_deserializer=None)
        answer, outcome = call.with_call(protobuf_message(1024), timeout=10)
    assert outcome.code() == grpc.StatusCode.OK and answer == protobuf_message(1024), f"{s}: {outcome.code()} {answer[:40]!r}"


def precheck(s: str, e: harness.Envoy) -> None:
    """One request, and what the scenario implies it caused; raises when it did not."""
    if s in GRPC_SCENARIOS:
        check_grpc(s, e)
    else:
        r = e.request("GET", PATH, REQUEST_HEADERS)
        # The classifying scenarios' only route needs the class header: 421 without it.
        assert r.status == 200 and len(r.body) > 1900, f"{s}: {r.status} {r.body[:80]!r}"
    if s in FLOOR_CONFIG:
        counted = harness.metric_now(e, "floor_requests_total", {})
        assert counted == 1, f"{s}: floor_requests_total {counted}"
    if s in CALLS_CONFIG:
        # Every call made CALLS_TIMES times: the counter shows it (none without the counter).
        counted = harness.metric_now(e, "floor_requests_total", {}) or 0
        want = 0 if "nocount" in CALLS_CONFIG[s] else CALLS_TIMES
        assert counted == want, f"{s}: floor_requests_total {counted}, want {want}"
    if s in NATIVE_MIRROR_SCENARIOS:
        harness.wait_until(lambda: cluster_completed(e, "canary") >= 1, what=f"{s}: the canary answered the shadow copy")
    if s == "mirror_floor":
        harness.wait_until(lambda: (harness.metric_now(e, "floor_mirrors_answered_total", {}) or 0) >= 1, what=f"{s}: the probe read the canary's reply")
        assert cluster_completed(e, "canary") == 1, f"{s}: canary cluster {cluster_completed(e, 'canary')}"
    if s in MIRROR_SCENARIOS:
        harness.wait_until(lambda: sum(mirror_counts(e)["results"].values()) >= 1, what=f"{s}: a comparison")
        if s == "mirror_json_baseline":
            harness.wait_until(lambda: mirror_counts(e)["baseline"].get("answered", 0) >= 1, what=f"{s}: the baseline answered a copy")
            assert cluster_completed(e, "baseline") == 1, f"{s}: baseline cluster {cluster_completed(e, 'baseline')}"
        counts = mirror_counts(e)
        assert counts["decisions"] == {"mirrored": 1}, f"{s}: decisions {counts['decisions']}"
        # The canary answers like the primary, or differs only in the ignored fields.
        assert counts["results"] == {"match": 1}, f"{s}: results {counts['results']}"
        assert cluster_completed(e, "canary") == 1, f"{s}: canary cluster {cluster_completed(e, 'canary')}"


def served(e: harness.Envoy) -> dict:
    """Requests Envoy received, and those it answered in full: h2load stops at the end of its
    duration with requests in flight, which Envoy sees reset."""
    stats = e.admin("/stats?filter=^http\\.ingress\\.downstream_rq_(total|completed)$")
    return {k: int(v) for k, v in re.findall(r"downstream_rq_(total|completed): (\d+)", stats)}


def mirror_checks(counts: dict, requests: dict) -> list[dict]:
    """After the run: every request a mirror scenario received was mirrored; every one it
    answered was compared and matched, and the rest (cut off by h2load's end) were counted
    `skipped`. Shedding under saturation, or a broken canary, would show here."""
    out = []
    for s, c in counts.items():
        total, completed = requests[s].get("total", 0), requests[s].get("completed", 0)
        want_decisions = {"mirrored": total}
        want_results = {"match": completed} | ({"skipped": total - completed} if total > completed else {})
        decisions = {k: int(v) for k, v in c["decisions"].items()}
        results = {k: int(v) for k, v in c["results"].items()}
        baseline = {k: int(v) for k, v in c["baseline"].items()}
        # The baseline, where there is one, answered every copy.
        want_baseline = {"answered": total} if s == "mirror_json_baseline" else {}
        out.append(
            {
                "target": f"{s}: every request mirrored, every answered one matched",
                "value": f"{total} received, {completed} answered; decisions {decisions}; results {results}"
                + (f"; baseline {baseline}" if baseline else ""),
                "met": decisions == want_decisions and results == want_results and baseline == want_baseline,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------


def slow_canary_rss(up: Upstreams, seconds: float, rps: int, timeout_ms: int, delay: str) -> dict:
    """mirror_bytes against a canary that answers after `delay`, longer than `timeout_ms`: every
    mirror times out, pending mirrors sit at the bound, and Envoy's RSS is sampled every 5 s."""
    e = start_envoy(scenario_config("mirror_bytes", up, canary_port=up.slow_canary, timeout_ms=timeout_ms), "rss")
    try:
        args = [H2LOAD, f"http://127.0.0.1:{e.listener_port}{PATH}", "--h1", "-t", "1", "-c", "4", "-m", "1", f"--rps={rps // 4}", f"--duration={seconds:g}"]
        for name, value in REQUEST_HEADERS:
            args += ["-H", f"{name}: {value}"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        series = []
        start = time.monotonic()
        while proc.poll() is None:
            series.append(rss_kib(e.proc.pid))
            time.sleep(max(0.0, 5.0 - ((time.monotonic() - start) % 5.0)))
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"h2load failed:\n{out}\n{err}")
        series.append(rss_kib(e.proc.pid))
        drain(e, timeout=10)
        decisions = harness.counts_by(e, "progressive_delivery_mirror_total", "decision")
        results = harness.counts_by(e, "progressive_delivery_comparisons_total", "result")
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        # The first sample is before any load: growth is measured from the first loaded one.
        loaded = series[1:]
        mid = len(loaded) // 2
        return {
            "seconds": seconds,
            "rps": rps,
            "timeout_ms": timeout_ms,
            "canary_delay": delay,
            "series_kib": series,
            "growth_kib": loaded[-1] - loaded[0],
            "second_half_growth_kib": loaded[-1] - loaded[mid],
            "decisions": decisions,
            "results": results,
            "non_2xx": sum(int(codes.group(i)) for i in (2, 3, 4)) if codes else None,
        }
    finally:
        e.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (after its own warm-up)")
    ap.add_argument("--light-rps", type=int, default=1000)
    ap.add_argument("--rss-seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    ap.add_argument("--scenarios", default=",".join(DEFAULT_NAMES), help="comma-separated subset of " + ", ".join(NAMES))
    args = ap.parse_args()
    scenarios = [s for s in NAMES if s in args.scenarios.split(",")]
    unknown = set(args.scenarios.split(",")) - set(NAMES)
    if unknown or not scenarios:
        print(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(NAMES)}", file=sys.stderr)
        return 2

    needed = [harness.WASM, harness.ENVOY_BIN] + ([NOOP_WASM] if "noop" in scenarios else []) + ([FLOOR_WASM] if set(FLOOR_CONFIG).union(CALLS_CONFIG) & set(scenarios) else [])
    for path in needed:
        if not Path(path).exists():
            print(f"{path} is missing: run `make bench`, which builds it", file=sys.stderr)
            return 2
    info = machine()
    info["load_before"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    wasm_bytes = harness.WASM.stat().st_size
    up = Upstreams()
    upstream = harness.Envoy(up.config("2s"), name="upstream", concurrency=1, log_level="warning")
    upstream.config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = up.primary
    envoys: dict[str, harness.Envoy] = {}
    runs: list[Run] = []
    grpc_request = Path(tempfile.mkstemp(prefix="pd-grpc-", suffix=".bin")[1])
    grpc_request.write_bytes(grpc_frame(protobuf_message(1024)))
    try:
        upstream.start()
        for s in scenarios:
            envoys[s] = start_envoy(scenario_config(s, up), s)
        for s, e in envoys.items():
            precheck(s, e)
        plan = [(s, p, l) for s in scenarios for p in BY_NAME[s].protocols for l in ("saturation", "light") if l == "saturation" or BY_NAME[s].light]
        for rnd in range(args.rounds):
            # Rotate the order each round so no scenario always runs first or after the same one.
            k = (rnd * 5) % len(plan)
            order = plan[k:] + plan[:k]
            if rnd % 2:
                order.reverse()
            for s, p, l in order:
                run = measure(envoys[s], s, p, l, rnd, args, grpc_request if s in GRPC_SCENARIOS else None)
                runs.append(run)
                print(
                    f"round {rnd + 1}/{args.rounds} {s:20s} {p} {l:10s} {run.rps:9.0f} req/s  p50 {run.p50_ms:.3f} ms  p99 {run.p99_ms:.3f} ms  {run.cpu_us:6.1f} us CPU/req"
                    + (f"  NON-2XX {run.non_2xx}" if run.non_2xx else ""),
                    flush=True,
                )
        counts = {s: mirror_counts(envoys[s]) for s in MIRROR_SCENARIOS if s in envoys}
        checks = mirror_checks(counts, {s: served(envoys[s]) for s in counts})
        native = {
            s: json.loads(envoys[s].admin("/stats?filter=^cluster.canary.upstream_rq_(total|completed)$&format=json"))
            for s in NATIVE_MIRROR_SCENARIOS
            if s in envoys
        }
    finally:
        grpc_request.unlink(missing_ok=True)
        for e in envoys.values():
            e.stop()
        if sys.exc_info()[0] is not None:
            # Failing here, the slow-canary run below (whose finally stops it) never starts.
            upstream.stop()
    rss = None
    try:
        if args.rss_seconds > 0:
            print(f"slow canary: {args.rss_seconds:g} s ...", flush=True)
            rss = slow_canary_rss(up, args.rss_seconds, 200, 200, "2s")
    finally:
        upstream.stop()
    info["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    med = medians(runs)
    rat = ratios(runs)
    calls = host_calls(runs)
    tg = targets(rat, wasm_bytes, rss, checks)
    report = table(med, rat, calls, tg, rss, wasm_bytes, info, args, scenarios)
    print()
    print(report)
    command = "bench/run.py " + " ".join(sys.argv[1:])
    args.out.write_text(
        json.dumps(
            {
                "command": command.strip(),
                "machine": info,
                "settings": {
                    "rounds": args.rounds,
                    "seconds": args.seconds,
                    "warm_up_seconds": WARM_UP_SECONDS,
                    "light_rps": args.light_rps,
                    "scenarios": scenarios,
                    "path": PATH,
                    "headers": REQUEST_HEADERS,
                },
                "wasm_bytes": wasm_bytes,
                "medians": med,
                "ratios": rat,
                "host_calls": calls,
                "targets": tg,
                "slow_canary": rss,
                "mirror_counts": counts,
                "native_mirror_canary_stats": native,
                "runs": [r.__dict__ for r in runs],
                "table": report,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nwrote {args.out}")
    bad = [r for r in runs if r.non_2xx] + ([rss] if rss and rss["non_2xx"] else [])
    if bad:
        print(f"{len(bad)} runs had non-2xx answers", file=sys.stderr)
        return 1
    broken = [c["target"] for c in checks if not c["met"]]
    if broken:
        print(f"mirroring did not do what the scenarios claim: {broken}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
