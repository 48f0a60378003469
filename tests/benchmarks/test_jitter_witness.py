"""The wake-up witness (`benchmarks/latency/jitter.py`): its counts and its matching.

Why tested: the README's claim that dropped bins sit at the machine's floor rests on these
numbers; a wrong threshold or a wrong time base would make the witness blame the machine for
the runtime's own stalls (or the reverse).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "jitter_witness", ROOT / "benchmarks" / "latency" / "jitter.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


jitter = _load()
P = 10_000_000  # 100 Hz in ns


def test_summarise_counts_drops_at_a_whole_period_and_events_past_half() -> None:
    late = np.array([100_000, 4_999_999, 5_000_001, 9_999_999, 10_000_000, 27_000_000])
    t0 = 1_000_000_000
    rep = jitter.summarise(late, t0, P, {"loop": "test"}, None)
    assert rep["would_drop"] == 2  # 10.0 and 27.0 ms: a loop would have skipped a bin
    # Events: strictly more than half a period late, each at its deadline + lateness.
    assert [round(e["late_ms"], 6) for e in rep["late_events"]] == [5.000001, 9.999999, 10.0, 27.0]
    k = 2
    assert rep["late_events"][0]["monotonic_s"] == pytest.approx((t0 + (k + 1) * P + late[k]) / 1e9)
    assert rep["over_ms"]["10"] == 1  # strictly over 10 ms: only the 27 ms wake-up
    assert rep["late_ms"]["max"] == pytest.approx(27.0)


def _bench(*stalls: tuple[float, float, int]) -> dict:
    return {
        "end_to_end": {
            "stalls": [
                {"t_s": i * 1.0, "monotonic_s": m, "late_ms": late, "dropped": d}
                for i, (m, late, d) in enumerate(stalls)
            ]
        }
    }


def test_compare_matches_stalls_that_end_together_and_only_those() -> None:
    witness = {
        "settings": {"hz": 100.0, "ticks": 10_000},  # 100 s of wake-ups
        "late_events": [
            {"monotonic_s": 100.0000, "late_ms": 11.0},
            {"monotonic_s": 250.0, "late_ms": 6.0},
        ],
    }
    bench = _bench((100.0004, 10.6, 1), (180.0, 12.0, 1), (250.003, 7.0, 0))
    res = jitter.compare(witness, bench, tol_ms=1.0)
    assert res["stalls"] == 3
    assert [r["matched"] for r in res["rows"]] == [True, False, False]  # 3 ms apart: not one stall
    assert res["rows"][0]["witness_late_ms"] == 11.0
    assert res["rows"][0]["wake_gap_ms"] == pytest.approx(0.4, abs=1e-6)
    assert res["matched"] == 1
    assert (res["dropped_bins"], res["dropped_bins_matched"]) == (2, 1)
    # 2 late wake-ups in 100 s, ±1 ms windows, 3 stalls: 3 · 0.02/s · 0.002 s.
    assert res["expected_by_chance"] == pytest.approx(3 * 0.02 * 0.002)
    # A wider tolerance is the caller's choice, and then the third one matches too.
    assert jitter.compare(witness, bench, tol_ms=5.0)["matched"] == 2


def test_compare_with_a_witness_that_saw_nothing_matches_nothing() -> None:
    res = jitter.compare({"late_events": []}, _bench((5.0, 10.5, 1)), tol_ms=1.0)
    assert res == {
        "stalls": 1,
        "matched": 0,
        "dropped_bins": 1,
        "dropped_bins_matched": 0,
        "expected_by_chance": 0.0,
        "rows": [
            {
                "t_s": 0.0,
                "loop_late_ms": 10.5,
                "dropped": 1,
                "witness_late_ms": None,
                "wake_gap_ms": None,
                "matched": False,
            }
        ],
    }


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no cc")
def test_native_loop_builds_runs_and_reports_every_wake_up() -> None:
    rep = jitter.measure_native(hz=1000.0, ticks=50, cpu=None, fifo_priority=0)
    assert rep["settings"]["loop"] == "native (wake.c)"
    assert rep["settings"]["ticks"] == 50
    # clock_nanosleep to an absolute deadline never returns early.
    assert 0.0 <= rep["late_ms"]["p50"] <= rep["late_ms"]["max"]
    assert rep["would_drop"] == sum(e["late_ms"] >= 1.0 for e in rep["late_events"])
