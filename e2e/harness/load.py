"""Load: h2load (nghttp2's load generator) runs and their counts, and a process's memory."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .process import stop_process

_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


@dataclass
class H2loadResult:
    total: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status: dict[str, int]
    output: str

    @staticmethod
    def parse(out: str, returncode: int) -> "H2loadResult":
        req, st = _REQUESTS.search(out), _STATUS.search(out)
        if returncode != 0 or not req or not st:
            raise RuntimeError(f"h2load exited with {returncode}:\n{out}")
        total, _, _, succeeded, failed, errored, timeout = map(int, req.groups())
        return H2loadResult(total, succeeded, failed, errored, timeout, dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, st.groups()))), out)

    @property
    def clean(self) -> bool:
        """Every request answered 2xx: none failed, errored, timed out or got another status."""
        return (
            self.succeeded == self.total == self.status["2xx"]
            and self.failed == self.errored == self.timeout == 0
            and sum(self.status.values()) == self.total
        )


@dataclass
class H2load:
    """One h2load run: `start()` it, `wait()` for its counts.

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
    _workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pd-h2load-")))

    def start(self) -> "H2load":
        args = [shutil.which("h2load") or "h2load", "-n", str(self.requests), "-c", str(self.clients),
                "-m", str(self.max_streams), "--rps", str(self.rps)]  # fmt: skip
        args += ["--h1"] if self.h1 else []
        args += ["-H", f":method: {self.method}"] if self.method else []
        for n, v in self.headers:
            args += ["-H", f"{n}: {v}"]
        if self.body is not None:
            (self._workdir / "body").write_bytes(self.body)
            args += ["-d", str(self._workdir / "body")]
        with open(self._workdir / "out", "wb") as out:
            self.proc = subprocess.Popen(args + self.urls, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout: float | None = None) -> H2loadResult:
        assert self.proc is not None
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


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
