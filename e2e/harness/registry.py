"""A local OCI registry for the image's tests."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from .process import free_port, read_log, stop_process, wait_ready


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
        (self.workdir / "config.yml").write_text(yaml.safe_dump(config))
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(self.workdir / "config.yml")], stdout=logf, stderr=subprocess.STDOUT)
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
        return read_log(self.log_path)

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.workdir / "storage", ignore_errors=True)
