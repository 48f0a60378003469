"""Sample-and-hold binning vs a vectorised reference; ring-buffer wrap-around."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.binning import RingWindow, SampleAndHoldBinner, reference_sample_and_hold

P = 10_000_000  # 10 ms bins (100 Hz)


def _irregular_times(seed: int, n: int) -> np.ndarray:
    """Camera-like timestamps: 33 ms ± jitter, with gaps (stalls) and bursts (catch-up)."""
    rng = np.random.default_rng(seed)
    dt = rng.normal(33e6, 4e6, n).clip(1e5, None)
    gaps = rng.random(n) < 0.05
    dt[gaps] += rng.uniform(50e6, 300e6, gaps.sum())  # stalls up to 300 ms
    bursts = rng.random(n) < 0.1
    dt[bursts] = rng.uniform(0, 2e6, bursts.sum())  # several frames within 2 ms
    dt[rng.random(n) < 0.02] = 0  # identical timestamps
    return (5e6 + np.cumsum(dt)).astype(np.int64)


def _run_binner(times: np.ndarray, T: int) -> tuple[list[int], RingWindow]:
    """Feed frame i (a constant image of value i) at times[i]; return bin → frame index."""
    ring = RingWindow(T, 2, 3)
    b = SampleAndHoldBinner(P, 0, 2, 3)
    frame = np.zeros((2, 3), np.float32)
    per_bin: list[int] = []
    for i, t in enumerate(times):
        before = b.held_t_ns is not None
        held = int(b.held[0, 0]) if before else -1
        closed = b.feed(frame + i, int(t), ring)
        per_bin += [held] * len(closed)
    return per_bin, ring


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 300))
def test_binning_matches_reference_on_irregular_timestamps(seed: int, n: int) -> None:
    times = _irregular_times(seed, n)
    per_bin, _ = _run_binner(times, 25)
    ref = reference_sample_and_hold(times, 0, P, len(per_bin))
    assert len(per_bin) == int(times[-1] // P)  # every bin that ended before the last frame
    np.testing.assert_array_equal(np.array(per_bin), ref)


def test_frame_at_bin_boundary_belongs_to_next_bin() -> None:
    times = np.array([0, P, 2 * P + 1, 5 * P], np.int64)
    per_bin, _ = _run_binner(times, 4)
    # bin k ends at (k+1)·P: the frame stamped exactly P is not "before" bin 0's end.
    assert per_bin == [0, 1, 2, 2, 2]
    np.testing.assert_array_equal(reference_sample_and_hold(times, 0, P, 5), per_bin)


def test_out_of_order_frame_is_ignored() -> None:
    b = SampleAndHoldBinner(P, 0, 1, 1)
    assert b.offer(np.ones((1, 1), np.float32), 50)
    assert not b.offer(np.full((1, 1), 7, np.float32), 40)
    assert b.held[0, 0] == 1 and b.frames_ignored == 1


def test_ring_window_wraps_and_reads_oldest_first() -> None:
    T = 5
    ring = RingWindow(T, 2, 2)
    assert not ring.window().any()  # starts blank (contrast 0 = grey)
    for i in range(3 * T + 2):  # several full wrap-arounds, ending mid-ring
        ring.push(np.full((2, 2), i, np.float32))
        w = ring.window()
        want = np.arange(max(0, i - T + 1), i + 1, dtype=np.float32)
        got = w[:, 0, 0]
        np.testing.assert_array_equal(got[T - len(want) :], want)
        assert ring.newest()[0, 0] == i
        assert w.flags.c_contiguous and w.shape == (T, 2, 2)


def test_ring_window_is_a_view_without_allocation() -> None:
    ring = RingWindow(4, 3, 3)
    base = ring.window().base
    for i in range(9):
        ring.push(np.full((3, 3), i, np.float32))
        assert ring.window().base is base  # always a view into the same preallocated buffer
