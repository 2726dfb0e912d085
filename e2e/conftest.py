"""pytest fixtures: start upstreams and Envoys that are stopped after each test, and print
Envoy's log when a test fails (also kept under e2e/.logs/)."""

from __future__ import annotations

import collections
import re
import sys

import pytest

import harness

# Mirror decisions and comparison results counted by every Envoy of the run, summed: the
# summary at the end shows which outcomes the suite exercised and how often.
_TALLY: dict[str, collections.Counter] = {
    "decision": collections.Counter(),
    "result": collections.Counter(),
}
_TALLIED = {
    "decision": "progressive_delivery_mirror_total",
    "result": "progressive_delivery_comparisons_total",
}


def _tally(e: harness.Envoy) -> None:
    if e.proc is None or e.proc.poll() is not None:
        return
    try:
        text = e.prometheus()
    except OSError:
        return
    for label, metric in _TALLIED.items():
        for labels, value in harness.prometheus_samples(text, metric):
            if value:
                _TALLY[label][labels.get(label, "?")] += int(value)


def pytest_terminal_summary(terminalreporter):
    if not any(_TALLY.values()):
        return
    terminalreporter.section("mirror outcomes counted by the Envoys of this run")
    for label, counts in _TALLY.items():
        line = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        terminalreporter.write_line(f"{label}: {line} (total {sum(counts.values())})")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def _servers(kind):
    """A fixture body: `make(name, how)` starts a `kind(name, how)` server; all of them are
    stopped after the test."""
    started = []

    def make(name: str, how=None):
        up = kind(name, how).start()
        started.append(up)
        return up

    yield make
    for up in started:
        up.stop()


@pytest.fixture
def upstream():
    """`upstream(name, respond=None)` starts a recording HTTP server on a free port."""
    yield from _servers(harness.Upstream)


@pytest.fixture
def fast_upstream():
    """`fast_upstream(name, reply)` starts a `harness.FastUpstream` (asyncio, for load tests,
    its reply switchable while it runs) on a free port."""
    yield from _servers(harness.FastUpstream)


@pytest.fixture
def envoy(request):
    """`envoy(config)` starts Envoy with a bootstrap dict and waits until it is ready."""
    started: list[harness.Envoy] = []

    def make(config: dict, **kw) -> harness.Envoy:
        e = harness.Envoy(config, **kw)
        started.append(e)
        e.start()
        return e

    yield make
    for e in started:
        _tally(e)
        e.stop()
    failed = any(
        getattr(request.node, f"rep_{when}", None) is not None
        and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )
    for i, e in enumerate(started):
        log = e.log()
        harness.LOG_DIR.mkdir(exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        (harness.LOG_DIR / f"{safe}-{i}.log").write_text(log)
        if failed:
            sys.stderr.write(f"\n===== envoy log ({request.node.name}, #{i}) =====\n{log}\n")


@pytest.fixture
def primary_and_canary(upstream):
    return {"primary": upstream("primary"), "canary": upstream("canary")}


@pytest.fixture
def prometheus(request):
    """`prometheus(targets)` starts a real Prometheus scraping each `host:port` target's
    /stats/prometheus every second; stopped after the test, its log printed if it failed."""
    started: list[harness.Prometheus] = []

    def make(targets: list[str], **kw) -> harness.Prometheus:
        p = harness.Prometheus(targets, **kw)
        started.append(p)
        return p.start()

    yield make
    failed = any(
        getattr(request.node, f"rep_{when}", None) is not None and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )
    for p in started:
        if failed:
            sys.stderr.write(f"\n===== prometheus log ({request.node.name}) =====\n{p.log()}\n")
        p.stop()
