"""The soak (e2e/soak.py) for 60 s: mixed traffic through a real Envoy with a canary answering
10% errors; Envoy's memory and the pending mirrors must stay flat and every request and mirror
must be accounted for. `make soak` runs the same for 10 minutes."""

from __future__ import annotations

import pytest

import harness
import soak


def test_soak_60s():
    result = soak.run(60, 10, harness.REPO / "target" / "soak" / "short.json")
    if result["failures"]:
        log = open(result["envoy_log"], errors="replace").read()[-5000:]
        pytest.fail(f"{soak.summary(result)}\n===== envoy log (tail) =====\n{log}")
    print(soak.summary(result))


def series(rss_kib: list[float], allocated: list[float] | None = None, every: float = 10) -> list[dict]:
    allocated = allocated or [20e6] * len(rss_kib)
    return [{"t": i * every, "rss_kib": r, "memory_allocated": a} for i, (r, a) in enumerate(zip(rss_kib, allocated))]


MIB = 1024
# (id, RSS in KiB every 10 s from t=0, Envoy heap in bytes or None for constant, flat)
FLATNESS = [
    ("constant", [100 * MIB] * 8, None, True),
    ("noise", [100 * MIB + d for d in (0, 900, -300, 500, 100, -700, 300, 600, -200, 400)], None, True),
    ("warm-up growth only", [60 * MIB, 90 * MIB] + [100 * MIB] * 6, None, True),
    ("one spike early", [100 * MIB] * 3 + [130 * MIB] + [100 * MIB] * 6, None, True),
    ("steady climb", [100 * MIB + i * 2 * MIB for i in range(12)], None, False),
    ("step up", [100 * MIB] * 6 + [112 * MIB] * 6, None, False),
    ("climbing peaks", [100 * MIB, 100 * MIB, 100 * MIB, 101 * MIB, 100 * MIB, 103 * MIB, 100 * MIB, 106 * MIB, 100 * MIB, 112 * MIB], None, False),
    ("heap leak under flat RSS", [100 * MIB] * 10, [20e6 + i * 1.5e6 for i in range(10)], False),
    ("too short", [100 * MIB] * 4, None, False),
]


@pytest.mark.parametrize("rss,allocated,want", [f[1:] for f in FLATNESS], ids=[f[0] for f in FLATNESS])
def test_flatness_rule(rss, allocated, want):
    _, bad = soak.flat(series(rss, allocated))
    assert (bad == []) == want, bad
