"""A real Prometheus (Debian's `prometheus` package) on 127.0.0.1 for the e2e tests: it scrapes
Envoy's /stats/prometheus and answers PromQL over its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

import harness

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"


class Prometheus:
    def __init__(self, targets: list[str], scrape_interval: str = "1s"):
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.port = harness.free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="pd-prometheus-"))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "Prometheus":
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {
                    "job_name": "envoy",
                    "metrics_path": "/stats/prometheus",
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = self.workdir / "prometheus.log"
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS_BIN,
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=info",
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        harness.wait_ready(self.proc, lambda: harness.http_ok(f"http://127.0.0.1:{self.port}/-/ready"), "prometheus", self.log, timeout)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        harness.stop_process(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def query(self, promql: str) -> list[dict]:
        """An instant query; the `result` vector (raises on a PromQL error)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        if body.get("status") != "success":
            raise AssertionError(f"PromQL error {body.get('errorType')}: {body.get('error')}\n{promql}")
        assert body["data"]["resultType"] == "vector", body
        return body["data"]["result"]

    def scalar(self, promql: str) -> float | None:
        """The single value of a query that yields one series (None for an empty result)."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def targets_up(self) -> bool:
        return self.scalar('sum(up{job="envoy"})') == len(self.targets)
