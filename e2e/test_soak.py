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
    # What "flat" and the pending bound rest on.
    assert result["samples_per_half"] >= soak.MIN_PER_HALF
    assert result["pending_reads"] >= soak.MIN_PENDING_READS and result["pending_failed_reads"] == []


def series(rss_kib: list[float], allocated: list[float] | None = None) -> list[dict]:
    """Samples one second apart from t=0: the first WARMUP_SECONDS of them are the warm-up."""
    allocated = allocated or [20e6] * len(rss_kib)
    return [{"t": float(i), "rss_kib": r, "memory_allocated": a} for i, (r, a) in enumerate(zip(rss_kib, allocated))]


MIB = 1024
WARM = [100 * MIB] * soak.WARMUP_SECONDS
NOISE = [100 * MIB + d for d in (0, 900, -300, 500, 100, -700, 300, 600, -200, 400)]
# (id, RSS in KiB every second from t=0, Envoy heap in bytes or None for constant, flat)
FLATNESS = [
    ("constant", WARM + [100 * MIB] * 24, None, True),
    ("noise", WARM + NOISE * 3, None, True),
    ("warm-up growth only", [60 * MIB + i * 2 * MIB for i in range(20)] + [100 * MIB] * 24, None, True),
    ("one spike early", WARM + [100 * MIB] * 3 + [130 * MIB] + [100 * MIB] * 20, None, True),
    ("just enough samples", WARM + [100 * MIB] * 2 * soak.MIN_PER_HALF, None, True),
    ("steady climb", WARM + [100 * MIB + i * MIB for i in range(24)], None, False),
    ("step up", WARM + [100 * MIB] * 12 + [112 * MIB] * 12, None, False),
    ("climbing peaks", WARM + [100 * MIB + (i * MIB // 2 if i % 2 else 0) for i in range(24)], None, False),
    ("heap leak under flat RSS", WARM + [100 * MIB] * 24, [20e6] * 20 + [20e6 + i * 0.2e6 for i in range(24)], False),
    ("too few samples per half", WARM + [100 * MIB] * (2 * soak.MIN_PER_HALF - 1), None, False),
]


@pytest.mark.parametrize("rss,allocated,want", [f[1:] for f in FLATNESS], ids=[f[0] for f in FLATNESS])
def test_flatness_rule(rss, allocated, want):
    _, bad = soak.flat(series(rss, allocated))
    assert (bad == []) == want, bad
