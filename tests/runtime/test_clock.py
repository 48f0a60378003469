"""The bin clocks: real sleeping never returns before the deadline, with or without spinning."""

from __future__ import annotations

import time

import pytest

from runtime.clock import RealClock, VirtualClock


@pytest.mark.parametrize("spin_ns", [0, 2_000_000, 50_000_000])
def test_real_clock_never_wakes_early(spin_ns):
    clock = RealClock(spin_ns)
    for _ in range(5):
        deadline = time.monotonic_ns() + 3_000_000
        clock.sleep_until(deadline)
        assert time.monotonic_ns() >= deadline


def test_spinning_uses_cpu_and_sleeping_does_not():
    """Spin mode busy-waits (its thread burns CPU for the wait); plain sleep does not.

    Compared as a ratio of the two modes' thread CPU, not against wall time: on a loaded
    host a spinning thread gets only its share of a core, but still far more than a sleeper.
    """
    used: dict[bool, int] = {}
    for spin_ns, busy in ((0, False), (100_000_000, True)):
        clock = RealClock(spin_ns)
        cpu0 = time.thread_time_ns()
        clock.sleep_until(time.monotonic_ns() + 50_000_000)
        used[busy] = time.thread_time_ns() - cpu0
    assert used[False] < 5_000_000, used  # a sleeper wakes a few times at most
    assert used[True] > max(2_000_000, 10 * used[False]), used


def test_real_clock_refuses_negative_spin():
    with pytest.raises(ValueError, match="≥ 0"):
        RealClock(-1)


def test_virtual_clock_jumps_without_waiting():
    clock = VirtualClock(100)
    t = time.monotonic()
    clock.sleep_until(10**12)
    assert clock.now_ns() == 10**12 and time.monotonic() - t < 0.1
    clock.sleep_until(5)  # never goes back
    assert clock.now_ns() == 10**12
