"""pytest fixtures: start upstreams and Envoys that are stopped after each test, and print
Envoy's log when a test fails (also kept under e2e/.logs/)."""

from __future__ import annotations

import re
import sys

import pytest

import harness


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def upstream():
    """`upstream(name, respond=None)` starts a recording HTTP server on a free port."""
    started: list[harness.Upstream] = []

    def make(name: str, respond=None) -> harness.Upstream:
        up = harness.Upstream(name, respond).start()
        started.append(up)
        return up

    yield make
    for up in started:
        up.stop()


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
