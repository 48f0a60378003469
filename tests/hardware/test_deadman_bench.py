"""The dead-man benchmark's mechanism in a few short trials (its timing is the benchmark's
business, not a test's): every trial ends in a stop, the report adds up, JSON is written."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "deadman" / "run.py"


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("deadman_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # pydantic resolves its annotations there
    spec.loader.exec_module(mod)
    return mod


def test_deadman_benchmark_runs_and_writes_its_report(tmp_path):
    bench = _load()
    out = tmp_path / "deadman.json"
    bench.main(["--trials", "3", "--interval-ms", "30", "--margin-ms", "5", "--out", str(out)])
    rep = json.loads(out.read_text())
    assert rep["trials"] == 3 and rep["missed_stops"] == 0 and rep["load_processes"] == 0
    # Never before the thread's wake-up (validity end − margin): the stop is the dead-man's,
    # not an early one; and by construction never after the interval from the send.
    assert rep["from_send"]["p50_ms"] >= 25.0
    assert rep["from_send"]["p100_ms"] <= 30.0
    # What the polling thread saw active came before the stop.
    assert rep["observed_active_from_send"]["p100_ms"] <= rep["from_send"]["p100_ms"]
    assert rep["met"]
