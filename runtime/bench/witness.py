"""Wake-up witnesses: empty loops beside the real-time loop, to tell the machine's stalls
from the runtime's own.

Why: the loop drops a bin when its work starts a whole period late. On a virtual machine
that happens with no work at all, when the hypervisor stops our cores; measured on the
reference 2-core VM, an empty loop misses a 10 ms period about once per 10,000 wake-ups.
A dropped bin is therefore only evidence against the runtime if an empty loop running at
the same time did *not* stall. A witness is that empty loop: its own process (no shared
GIL), pinned to one core, sleeping to the same bin-rate deadlines with the same
`RealClock`, recording how late each wake-up is. `attribute_stalls` then matches the
loop's `Stall` records against the witnesses' late wake-ups.

Used by `npe bench --realtime --witness` and `benchmarks/latency/jitter.py`; the child
process is this module (`python -m runtime.bench.witness`).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from runtime.clock import RealClock
from runtime.errors import NpeRuntimeError

#: Lateness thresholds (ms) the report counts wake-ups over.
THRESHOLDS_MS = (1.0, 2.0, 5.0, 10.0)


#: How long a witness may take to start (a Python interpreter importing numpy).
START_TIMEOUT_S = 30.0


class WitnessError(NpeRuntimeError, RuntimeError):
    """A witness that could not start or did not report (named, with its stderr)."""


@dataclass(frozen=True)
class LateWake:
    """A wake-up more than half a period late. monotonic_s: when it woke (CLOCK_MONOTONIC)."""

    monotonic_s: float
    late_ms: float


@dataclass(frozen=True)
class WakeReport:
    """How late one empty loop woke, over `wakeups` deadlines at `hz`.

    would_drop: wake-ups a whole period or more late, where a loop doing the runtime's work
    would have skipped a bin; late_events: every wake-up more than half a period late, for
    matching; span_s: how long it watched.
    """

    loop: str
    hz: float
    cpu: int | None
    wakeups: int
    span_s: float
    late_ms: dict[str, float]
    over_ms: dict[str, int]
    would_drop: int
    late_events: tuple[LateWake, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WakeReport:
        return cls(
            loop=d["loop"],
            hz=float(d["hz"]),
            cpu=d["cpu"],
            wakeups=int(d["wakeups"]),
            span_s=float(d["span_s"]),
            late_ms={k: float(v) for k, v in d["late_ms"].items()},
            over_ms={k: int(v) for k, v in d["over_ms"].items()},
            would_drop=int(d["would_drop"]),
            late_events=tuple(LateWake(**e) for e in d["late_events"]),
        )


def summarise_wakes(
    late_ns: NDArray[np.int64], t0_ns: int, period_ns: int, loop: str, cpu: int | None
) -> WakeReport:
    """Per-wake lateness (deadline k at t0 + (k+1)·period) → a `WakeReport`."""
    if late_ns.size == 0:
        raise ValueError("no wake-ups to summarise")
    late_ms = late_ns / 1e6
    events = tuple(
        LateWake((t0_ns + (k + 1) * period_ns + int(late_ns[k])) / 1e9, float(late_ms[k]))
        for k in np.flatnonzero(2 * late_ns > period_ns)
    )
    return WakeReport(
        loop=loop,
        hz=1e9 / period_ns,
        cpu=cpu,
        wakeups=int(late_ns.size),
        span_s=late_ns.size * period_ns / 1e9,
        late_ms={
            "p50": float(np.percentile(late_ms, 50)),
            "p99": float(np.percentile(late_ms, 99)),
            "p99.9": float(np.percentile(late_ms, 99.9)),
            "max": float(late_ms.max()),
        },
        over_ms={f"{t:g}": int(np.count_nonzero(late_ms > t)) for t in THRESHOLDS_MS},
        would_drop=int(np.count_nonzero(late_ns >= period_ns)),
        late_events=events,
    )


def run_empty_loop(
    hz: float, max_ticks: int, stop: Callable[[], bool] = lambda: False, spin_ns: int = 0
) -> tuple[NDArray[np.int64], int, int]:
    """Sleep to deadlines at `hz` until `stop()` or `max_ticks`; (lateness ns, t0, period).

    At least one wake-up is always timed, so a report never comes back empty. The lateness
    array is allocated once, before the first deadline: the loop itself
    allocates nothing, as the runtime's loop does not.
    """
    period = round(1e9 / hz)
    clock = RealClock(spin_ns)
    late = np.zeros(max_ticks, dtype=np.int64)
    t0 = time.monotonic_ns()
    k = 0
    while k < max_ticks and not (k > 0 and stop()):
        deadline = t0 + (k + 1) * period
        clock.sleep_until(deadline)
        late[k] = time.monotonic_ns() - deadline
        k += 1
    return late[:k], t0, period


class _StallLike(Protocol):
    """`runtime.loop.Stall`, or the same fields read back from a bench JSON."""

    @property
    def t_s(self) -> float: ...
    @property
    def monotonic_s(self) -> float: ...
    @property
    def late_ms(self) -> float: ...
    @property
    def dropped(self) -> int: ...


@dataclass(frozen=True)
class StallMatch:
    t_s: float
    loop_late_ms: float
    dropped: int
    witness_late_ms: float | None
    wake_gap_ms: float | None
    matched: bool


@dataclass(frozen=True)
class StallAttribution:
    """Which of the loop's stalls an empty loop saw too (so the machine caused them).

    expected_by_chance: how many stalls would match witnesses whose late wake-ups fell at
    random times at the same rate; a match count far above it is not a coincidence.
    """

    stalls: int
    matched: int
    dropped_bins: int
    dropped_bins_matched: int
    expected_by_chance: float
    tol_ms: float
    rows: tuple[StallMatch, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Default matching window: one 100 Hz period. Why so wide: when a stall ends, every thread
#: it held up becomes runnable at once and a core runs them one after another, so the
#: loop's and a witness's wake-ups differ by a few ms (measured 0.04–7 ms); a 1 ms window
#: missed most of them. Chance matches stay rare (see `expected_by_chance`).
DEFAULT_TOL_MS = 10.0


def attribute_stalls(
    stalls: Sequence[_StallLike],
    events: Sequence[LateWake],
    span_s: float,
    tol_ms: float = DEFAULT_TOL_MS,
) -> StallAttribution:
    """Match each stall, by the time its late work began, with the nearest late wake-up.

    Matched on the *end* of a stall: a sleeping thread wakes when it ends, so the loop's late
    start and a witness's late wake-up coincide if the stall held both; where it began
    cannot be told from a sleeping thread. events: the late wake-ups of all witnesses
    together; span_s: how long they watched (for the chance estimate).
    """
    wakes = np.array([e.monotonic_s for e in events] or [np.inf])
    lates = np.array([e.late_ms for e in events] or [0.0])
    rows = []
    for s in stalls:
        i = int(np.argmin(np.abs(wakes - s.monotonic_s)))
        gap_ms = float(abs(wakes[i] - s.monotonic_s) * 1e3)
        found = bool(np.isfinite(wakes[i]) and gap_ms <= tol_ms)
        rows.append(
            StallMatch(
                s.t_s,
                s.late_ms,
                s.dropped,
                float(lates[i]) if found else None,
                gap_ms if found else None,
                found,
            )
        )
    rate = len(events) / span_s if span_s > 0 else 0.0
    return StallAttribution(
        stalls=len(rows),
        matched=sum(r.matched for r in rows),
        dropped_bins=sum(r.dropped for r in rows),
        dropped_bins_matched=sum(r.dropped for r in rows if r.matched),
        expected_by_chance=len(rows) * min(1.0, rate * 2 * tol_ms / 1e3),
        tol_ms=tol_ms,
        rows=tuple(rows),
    )


class WitnessProcess:
    """One witness in its own process, pinned to `cpu`; `stop()` returns its `WakeReport`.

    The constructor returns once the child's loop is about to start, so a witness started
    before the runtime's clock watches the whole run.
    """

    def __init__(self, hz: float, cpu: int | None, max_seconds: float = 3600.0) -> None:
        if not hz > 0 or not max_seconds > 0:
            raise ValueError(f"witness needs hz > 0 and max_seconds > 0, got {hz}, {max_seconds}")
        args = [sys.executable, "-m", "runtime.bench.witness", "--hz", f"{hz!r}"]
        args += ["--max-seconds", f"{max_seconds!r}"]
        if cpu is not None:
            args += ["--cpu", str(cpu)]
        self.cpu = cpu
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self._proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self._proc.stdout is not None
        readable, _, _ = select.select([self._proc.stdout], [], [], START_TIMEOUT_S)
        ready = self._proc.stdout.readline() if readable else "(no answer)"
        if ready.strip() != "ready":
            self._proc.kill()
            _, err = self._proc.communicate(timeout=10)
            raise WitnessError(f"witness on cpu {cpu} did not start: {(ready + err).strip()}")

    def stop(self, timeout_s: float = 10.0) -> WakeReport:
        """Ask the loop to finish (SIGTERM: it stops within one period) and read its report."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        try:
            out, err = self._proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            raise WitnessError(f"witness on cpu {self.cpu} did not stop") from None
        if self._proc.returncode != 0:
            raise WitnessError(f"witness on cpu {self.cpu} failed: {err.strip()[-500:]}")
        return WakeReport.from_dict(json.loads(out))

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()


def _child(hz: float, cpu: int | None, max_seconds: float) -> None:
    """The witness process: pin, run the empty loop until SIGTERM, print the JSON report."""
    stopping = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent stops us
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    print("ready", flush=True)
    late, t0, period = run_empty_loop(hz, max(1, int(hz * max_seconds)), lambda: stopping)
    report = summarise_wakes(late, t0, period, "python empty loop (runtime.bench.witness)", cpu)
    print(json.dumps(report.to_dict()), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="An empty loop at HZ; SIGTERM ends it with a report.")
    ap.add_argument("--hz", type=float, required=True)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    a = ap.parse_args()
    _child(a.hz, a.cpu, a.max_seconds)
