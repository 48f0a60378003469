"""Wake-up witnesses (`runtime.bench.witness`): their counts, the matching, the real process.

Why tested: `npe bench --witness` and the README's claim that dropped bins sit at the
machine's floor rest on these; a wrong threshold or time base would blame the machine for
the runtime's own stalls (or the reverse).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from runtime.bench.witness import (
    LateWake,
    WakeReport,
    WitnessError,
    WitnessProcess,
    attribute_stalls,
    run_empty_loop,
    summarise_wakes,
)
from runtime.loop import Stall

P = 10_000_000  # 100 Hz in ns


def test_summary_counts_drops_at_a_whole_period_and_events_past_half() -> None:
    late = np.array([100_000, 4_999_999, 5_000_001, 9_999_999, 10_000_000, 27_000_000])
    t0 = 1_000_000_000
    rep = summarise_wakes(late, t0, P, "test", None)
    assert rep.would_drop == 2  # 10.0 and 27.0 ms: a loop would have skipped a bin
    # Events: strictly more than half a period late, each at its deadline + lateness.
    assert [round(e.late_ms, 6) for e in rep.late_events] == [5.000001, 9.999999, 10.0, 27.0]
    k = 2
    assert rep.late_events[0].monotonic_s == pytest.approx((t0 + (k + 1) * P + late[k]) / 1e9)
    assert rep.over_ms["10"] == 1  # strictly over 10 ms: only the 27 ms wake-up
    assert rep.late_ms["max"] == pytest.approx(27.0)
    assert rep.span_s == pytest.approx(0.06) and rep.hz == pytest.approx(100.0)
    assert WakeReport.from_dict(rep.to_dict()) == rep  # what the child prints reads back


def test_empty_loop_times_at_least_one_wake_up_and_never_wakes_early() -> None:
    late, _, period = run_empty_loop(1000.0, 100, stop=lambda: True)
    assert late.size == 1 and period == 1_000_000  # stopped at once, still one measurement
    late, _, _ = run_empty_loop(1000.0, 20)
    assert late.size == 20 and np.all(late >= 0)


def _stall(t_s: float, mono: float, late_ms: float, dropped: int) -> Stall:
    return Stall(t_s, mono, late_ms, dropped)


def test_stalls_match_late_wakes_that_end_together_and_only_those() -> None:
    events = [LateWake(100.0, 11.0), LateWake(250.0, 6.0)]  # over 100 s of watching
    stalls = [_stall(1, 100.0004, 10.6, 1), _stall(2, 180.0, 12.0, 1), _stall(3, 250.003, 7.0, 0)]
    res = attribute_stalls(stalls, events, span_s=100.0, tol_ms=1.0)
    assert res.stalls == 3
    assert [r.matched for r in res.rows] == [True, False, False]  # 3 ms apart: not within 1 ms
    assert res.rows[0].witness_late_ms == 11.0
    assert res.rows[0].wake_gap_ms == pytest.approx(0.4, abs=1e-6)
    assert (res.matched, res.dropped_bins, res.dropped_bins_matched) == (1, 2, 1)
    # 2 late wake-ups in 100 s, ±1 ms windows, 3 stalls: 3 · 0.02/s · 0.002 s.
    assert res.expected_by_chance == pytest.approx(3 * 0.02 * 0.002)
    # The default window is one period: the third stall is then the same event too.
    assert attribute_stalls(stalls, events, span_s=100.0).matched == 2


def test_no_late_wakes_match_nothing() -> None:
    res = attribute_stalls([_stall(0, 5.0, 10.5, 1)], [], span_s=100.0)
    assert (res.matched, res.dropped_bins_matched, res.expected_by_chance) == (0, 0, 0.0)
    assert res.rows[0].witness_late_ms is None and not res.rows[0].matched


def test_witness_process_watches_until_stopped_on_its_core() -> None:
    cpu = min(os.sched_getaffinity(0))
    t_start = time.monotonic()
    w = WitnessProcess(200.0, cpu)
    time.sleep(0.3)
    rep = w.stop()
    t_end = time.monotonic()
    assert rep.cpu == cpu and rep.hz == pytest.approx(200.0)
    assert 20 <= rep.wakeups <= 200 * (t_end - t_start) + 2  # it ran, and only while asked
    assert 0.0 <= rep.late_ms["p50"] <= rep.late_ms["max"]
    assert all(t_start <= e.monotonic_s <= t_end for e in rep.late_events)  # same clock


def test_witness_on_a_core_that_does_not_exist_is_a_named_error() -> None:
    with pytest.raises(WitnessError, match="cpu 4096 did not start"):
        WitnessProcess(100.0, 4096)
