"""Dead-man stop latency of the simulated stimulator over many trials (issue 16 target).

    python benchmarks/deadman/run.py [--trials 1000] [--interval-ms 100] [--margin-ms 10]
                                     [--out benchmarks/deadman/results/deadman.json]

Each trial sends one valid, active frame over real loopback UDP to a SimulatedStimulator
(its receive thread in this process), then goes silent and waits for the stimulator to
stop by itself. Stop latency is measured two ways, on the same monotonic clock: from the
frame's send (before `sendto`, the stricter figure, which includes the transport) and from
its arrival (what the stimulator itself can know). Target: p100 of the latency from send ≤
the configured interval. Prints a table and writes JSON (a pydantic model).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from hardware.arrays import load_array
from hardware.safety import SafetyLimits
from hardware.stimulator import SimulatedStimulator
from hardware.types import StimulationFrame
from hardware.wire import FrameEncoder

HERE = Path(__file__).resolve().parent


class LatencySummary(BaseModel):
    p50_ms: float
    p99_ms: float
    p100_ms: float


class DeadmanReport(BaseModel):
    """What one benchmark run measured."""

    trials: int
    interval_ms: float
    margin_ms: float
    from_send: LatencySummary
    from_arrival: LatencySummary
    missed_stops: int
    met: bool


def _summary(ms: np.ndarray) -> LatencySummary:
    return LatencySummary(
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        p100_ms=float(ms.max()),
    )


def run(trials: int, interval_ms: float, margin_ms: float) -> DeadmanReport:
    """Run the trials; the stop of each is awaited up to 10× the interval."""
    arr = load_array("utah96")
    key = bytes(range(32))
    amp = np.zeros(arr.n, np.float32)
    amp[:4] = 20.0
    n = arr.n
    frame = StimulationFrame(
        sequence=1,
        timestamp_ns=0,
        electrode_ids=arr.electrode_ids,
        amplitude_ua=amp,
        phase_width_us=np.full(n, 170.0, np.float32),
        interphase_gap_us=np.full(n, 50.0, np.float32),
        pulse_rate_hz=np.full(n, 300.0, np.float32),
        n_pulses=np.full(n, 3, np.uint16),
    )
    enc = FrameEncoder(key)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    from_send: list[float] = []
    from_arrival: list[float] = []
    missed = 0
    with SimulatedStimulator(
        "127.0.0.1", 0, key, SafetyLimits(), arr, interval_ms, deadman_margin_ms=margin_ms
    ) as stim:
        addr = ("127.0.0.1", stim.port)
        for k in range(trials):
            before = stim.stats.deadman_stops
            data = enc.encode(frame)
            sent_ns = time.monotonic_ns()
            tx.sendto(data, addr)
            end = time.monotonic() + 10 * interval_ms / 1000
            while stim.stats.deadman_stops == before and time.monotonic() < end:
                time.sleep(0.002)
            if stim.stats.deadman_stops == before:
                missed += 1
                continue
            stop_ns = stim.stats.last_deadman_stop_ns
            from_send.append((stop_ns - sent_ns) / 1e6)
            from_arrival.append((stop_ns - stim.stats.last_valid_ns) / 1e6)
            if (k + 1) % 100 == 0:
                print(f"  {k + 1}/{trials} trials", file=sys.stderr, flush=True)
    tx.close()
    s, a = _summary(np.array(from_send)), _summary(np.array(from_arrival))
    return DeadmanReport(
        trials=trials,
        interval_ms=interval_ms,
        margin_ms=margin_ms,
        from_send=s,
        from_arrival=a,
        missed_stops=missed,
        met=missed == 0 and s.p100_ms <= interval_ms,
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--interval-ms", type=float, default=100.0)
    ap.add_argument("--margin-ms", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "deadman.json")
    args = ap.parse_args(argv)
    rep = run(args.trials, args.interval_ms, args.margin_ms)
    print(f"dead-man stop latency, {rep.trials} trials, interval {rep.interval_ms:g} ms, "
          f"margin {rep.margin_ms:g} ms")  # fmt: skip
    print(f"{'measured from':<14} {'p50 ms':>8} {'p99 ms':>8} {'p100 ms':>8}")
    for name, x in (("send", rep.from_send), ("arrival", rep.from_arrival)):
        print(f"{name:<14} {x.p50_ms:8.2f} {x.p99_ms:8.2f} {x.p100_ms:8.2f}")
    print(f"missed stops: {rep.missed_stops}; p100 ≤ interval: {'yes' if rep.met else 'NO'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(rep.model_dump_json(indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if rep.met else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
