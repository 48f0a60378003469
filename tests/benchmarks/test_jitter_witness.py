"""`benchmarks/latency/jitter.py`: the C loop, and comparing files written by earlier runs.

Why tested: the README's floor figures come from `measure --native`, and its matches from
`compare` on the JSON files committed under `benchmarks/latency/results/`.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

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


def test_compare_merges_witness_files_old_and_new() -> None:
    old = {  # written before reports carried span_s: the span comes from the settings
        "settings": {"hz": 100.0, "ticks": 10_000},
        "late_events": [{"monotonic_s": 100.0, "late_ms": 11.0}],
    }
    new = {"span_s": 50.0, "late_events": [{"monotonic_s": 180.002, "late_ms": 12.5}]}
    bench = {
        "end_to_end": {
            "stalls": [
                {"t_s": 1.0, "monotonic_s": 100.003, "late_ms": 10.6, "dropped": 1},
                {"t_s": 2.0, "monotonic_s": 180.0, "late_ms": 12.0, "dropped": 1},
                {"t_s": 3.0, "monotonic_s": 300.0, "late_ms": 8.0, "dropped": 0},
            ]
        }
    }
    res = jitter.compare(json.dumps(bench), [old, new], tol_ms=5.0)
    assert [r.matched for r in res.rows] == [True, True, False]  # one stall from each witness
    assert res.dropped_bins_matched == 2
    # Two events over the longest span (100 s), ±5 ms, three stalls.
    assert res.expected_by_chance == pytest.approx(3 * (2 / 100.0) * 0.010)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no cc")
def test_native_loop_builds_runs_and_reports_every_wake_up() -> None:
    rep = jitter.measure_native(hz=1000.0, ticks=50, cpu=None, fifo_priority=0)
    assert rep["settings"]["loop"] == "native (wake.c)"
    assert rep["wakeups"] == 50
    # clock_nanosleep to an absolute deadline never returns early.
    assert 0.0 <= rep["late_ms"]["p50"] <= rep["late_ms"]["max"]
    assert rep["would_drop"] == sum(e["late_ms"] >= 1.0 for e in rep["late_events"])
