"""The loop's bin clock: real (monotonic, paced) or virtual (as fast as possible).

Why two: live runs must wait for each bin's deadline on the monotonic clock; benchmarks
and replays (`--as-fast-as-possible`) want the same loop, with the same source timestamps
and binning, without waiting. Stage latencies are always measured with time.monotonic_ns,
whatever the bin clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class BinClock(Protocol):
    def now_ns(self) -> int: ...
    def sleep_until(self, t_ns: int) -> None: ...


class RealClock:
    """time.monotonic_ns, sleeping until deadlines (Linux sleep overshoot is ~0.1 ms).

    spin_ns > 0: sleep until spin_ns before the deadline, then busy-wait the rest. Why: a
    core that goes idle between bins wakes up slowly and cold (on a virtual machine the
    idle vCPU is descheduled by the host), which showed as the per-bin work taking about
    twice as long paced as back to back; spinning keeps the core awake at the cost of that
    share of one core. spin_ns ≥ the bin period never sleeps (a dedicated core).
    """

    def __init__(self, spin_ns: int = 0) -> None:
        if spin_ns < 0:
            raise ValueError(f"spin time must be ≥ 0, got {spin_ns} ns")
        self.spin_ns = spin_ns

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until(self, t_ns: int) -> None:
        wake = t_ns - self.spin_ns
        while True:
            remaining = wake - time.monotonic_ns()
            if remaining <= 0:
                break
            time.sleep(remaining / 1e9)
        while time.monotonic_ns() < t_ns:
            pass


class VirtualClock:
    """A clock that jumps to each deadline at once; `advance` simulates time spent working."""

    def __init__(self, start_ns: int = 0) -> None:
        self.t_ns = start_ns

    def now_ns(self) -> int:
        return self.t_ns

    def sleep_until(self, t_ns: int) -> None:
        self.t_ns = max(self.t_ns, t_ns)

    def advance(self, dt_ns: int) -> None:
        self.t_ns += dt_ns
