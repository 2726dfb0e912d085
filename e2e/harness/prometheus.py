"""Metrics: Envoy's /stats/prometheus read with prometheus_client's parser (the exposition format
as Prometheus reads it), Envoy's plain /stats, a gauge sampled while load runs, and a real
Prometheus server (Debian's `prometheus` package) that scrapes Envoy and answers PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from .process import free_port, http_ok, read_log, stop_process, wait_ready

Labels = dict[str, str]


def prometheus_samples(text: str, name: str) -> list[tuple[Labels, float]]:
    """Every sample of `name` (e.g. "x_total", "x_count") as (labels, value)."""
    return [(s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def prometheus_value(text: str, name: str, labels: Labels) -> float | None:
    """The value of the sample `name{labels}` (exactly these labels), or None."""
    return next((v for got, v in prometheus_samples(text, name) if got == labels), None)


def counts_by(envoy, name: str, label: str, **where: str) -> dict[str, float]:
    """The non-zero samples of `name` whose labels include `where`, keyed by `label`'s value
    (summed over other labels): e.g. counts_by(e, MIRROR_TOTAL, "decision") ->
    {"mirrored": 3, "not_idempotent": 2}."""
    out: dict[str, float] = {}
    for labels, value in prometheus_samples(envoy.prometheus(), name):
        if value and all(labels.get(k) == v for k, v in where.items()):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0) + value
    return out


def metric_now(envoy, name: str, labels: Labels) -> float | None:
    """One sample, asking Envoy only for the stats whose name contains `name`: a sampler polling
    it loads neither Envoy nor the test with the whole /stats/prometheus each time."""
    return prometheus_value(envoy.admin(f"/stats/prometheus?filter={urllib.parse.quote(re.escape(name))}"), name, labels)


def wait_for_metric(envoy, name: str, labels: Labels | None, value: float, timeout: float = 10.0) -> float:
    """Polls until sample `name{labels}` equals `value`; fails, with the filter's samples in the
    message, if it does not within `timeout` or goes past it."""
    deadline = time.monotonic() + timeout
    while True:
        text = envoy.prometheus()
        got = prometheus_value(text, name, labels or {})
        if got == value:
            return got
        if (got is not None and got > value) or time.monotonic() >= deadline:
            ours = "\n".join(line for line in text.splitlines() if line.startswith("progressive_delivery_"))
            raise AssertionError(f"{name}{labels} is {got}, want {value} (within {timeout}s)\n{ours}")
        time.sleep(0.05)


# Envoy writes the characters a Prometheus name cannot carry as `_`: a tag no stats_tags rule
# extracted shows as `___` where its `=.=` and `;.;` were.
_UNEXTRACTED = re.compile(r"=\.=|;\.;|___")


def unextracted_tags(text: str) -> list[str]:
    """The progressive_delivery_* families whose name still carries a tag."""
    return sorted({f.name for f in text_string_to_metric_families(text) if f.name.startswith("progressive_delivery_") and _UNEXTRACTED.search(f.name)})


def envoy_stats(envoy, prefix: str) -> dict[str, int]:
    """Envoy's own counters and gauges under `prefix` (e.g. "cluster.canary."), from /stats,
    keyed by the rest of the name."""
    out: dict[str, int] = {}
    for line in envoy.admin(f"/stats?filter=^{re.escape(prefix)}").splitlines():
        name, sep, value = line.partition(": ")
        if sep and name.startswith(prefix) and value.strip().lstrip("-").isdigit():
            out[name[len(prefix):]] = int(value)
    return out


class GaugeSampler:
    """Reads one gauge in a thread, every `interval` s at most, until stopped. A read that fails
    (admin not answering, or the series missing) is counted in `failed`, never taken as a value:
    a bound checked on reads that never happened proves nothing."""

    def __init__(self, envoy, name: str, labels: Labels, interval: float = 0.02):
        self.envoy, self.name, self.labels, self.interval = envoy, name, labels, interval
        self.values: list[float] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                v = metric_now(self.envoy, self.name, self.labels)
            except OSError as e:
                self.failed.append(repr(e))
            else:
                if v is None:
                    self.failed.append(f"no sample {self.name}{self.labels}")
                else:
                    self.values.append(v)
            self._stop.wait(self.interval)

    def start(self) -> "GaugeSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> "GaugeSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def mark(self) -> int:
        return len(self.values)


class Prometheus:
    """A real Prometheus on a free 127.0.0.1 port scraping each `host:port` target's
    /stats/prometheus every `scrape_interval`."""

    def __init__(self, targets: list[str], scrape_interval: str = "1s"):
        self.targets = targets
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="pd-prometheus-"))
        self.log_path = self.workdir / "prometheus.log"
        self.config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": "envoy", "metrics_path": "/stats/prometheus", "static_configs": [{"targets": targets}]}],
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "Prometheus":
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(self.config))
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                [
                    shutil.which("prometheus") or "/usr/bin/prometheus",
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        wait_ready(self.proc, lambda: http_ok(f"http://127.0.0.1:{self.port}/-/ready"), "prometheus", self.log, timeout)
        return self

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self) -> None:
        stop_process(self.proc)
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
