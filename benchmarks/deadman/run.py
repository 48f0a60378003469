"""Dead-man stop latency of the simulated stimulator over many trials (issue 16 target).

    python benchmarks/deadman/run.py [--trials 1000] [--interval-ms 100] [--margin-ms 10]
                                     [--load N] [--out benchmarks/deadman/results/deadman.json]

Each trial sends one valid, active frame over real loopback UDP to a SimulatedStimulator
(its receive thread in this process), then goes silent and waits for the stimulator to
stop by itself. The stop is the instant its output became zero (`stats.last_stop_ns`: the
frame's validity end, or the receive thread's stop if that came first). Measured on one
monotonic clock from the frame's send (before `sendto`, the strict figure, which includes
the transport) and from its arrival. Independently, this thread polls `stim.output` during
each trial and keeps the last instant it saw current flowing ("observed"), a check of the
stop that does not trust the stimulator's own bookkeeping. The thread's bookkeeping latency
(when it logged the stop) is reported too; under load it may come after the stop.

`--load N` runs N CPU-burning processes during the trials (N = the core count loads every
core). Target: p100 from send ≤ the configured interval. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
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
    load_processes: int
    from_send: LatencySummary
    from_arrival: LatencySummary
    #: last instant the polling thread saw a non-zero output, from the send
    observed_active_from_send: LatencySummary
    #: when the receive thread recorded the stop (audit/stats), from the send
    bookkeeping_from_send: LatencySummary
    missed_stops: int
    #: the three latest stops from send, broken down (ms from the send): arrival, validity
    #: end, bookkeeping, and the wall-clock age the stimulator computed on arrival
    worst_trials: list[dict[str, float]]
    met: bool


def _burn(stop: object) -> None:
    """A CPU-bound loop until `stop` (a multiprocessing Event) is set."""
    x = 0
    while not stop.is_set():  # type: ignore[attr-defined]
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def _summary(ms: np.ndarray) -> LatencySummary:
    return LatencySummary(
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        p100_ms=float(ms.max()),
    )


def run(trials: int, interval_ms: float, margin_ms: float, load: int = 0) -> DeadmanReport:
    """Run the trials (with `load` CPU burners); each stop is awaited up to 10× the interval."""
    ctx = mp.get_context("spawn")
    stop_load = ctx.Event()
    burners = [ctx.Process(target=_burn, args=(stop_load,), daemon=True) for _ in range(load)]
    for b in burners:
        b.start()
    try:
        return _trials(trials, interval_ms, margin_ms, load)
    finally:
        stop_load.set()
        for b in burners:
            b.join(timeout=5)
            if b.is_alive():
                b.terminate()


def _trials(trials: int, interval_ms: float, margin_ms: float, load: int) -> DeadmanReport:
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
    observed: list[float] = []
    bookkeeping: list[float] = []
    detail: list[dict[str, float]] = []
    missed = 0
    with SimulatedStimulator(
        "127.0.0.1", 0, key, SafetyLimits(), arr, interval_ms, deadman_margin_ms=margin_ms
    ) as stim:
        addr = ("127.0.0.1", stim.port)
        for k in range(trials):
            before = stim.stats.deadman_stops
            data = enc.encode(frame)
            sent_ns = time.monotonic_ns()
            sent_wall_us = time.time_ns() // 1000
            tx.sendto(data, addr)
            end_ns = sent_ns + int(10 * interval_ms * 1e6)
            last_active_ns = sent_ns
            while stim.stats.deadman_stops == before and time.monotonic_ns() < end_ns:
                t = time.monotonic_ns()  # the check below happens at or after t
                if stim.output.active.any():
                    last_active_ns = t
                time.sleep(0.0005)
            if stim.stats.deadman_stops == before:
                missed += 1
                continue
            stop_ns = stim.stats.last_stop_ns
            from_send.append((stop_ns - sent_ns) / 1e6)
            from_arrival.append((stop_ns - stim.stats.last_valid_ns) / 1e6)
            observed.append((last_active_ns - sent_ns) / 1e6)
            bookkeeping.append((stim.stats.last_deadman_stop_ns - sent_ns) / 1e6)
            st = stim.stats
            detail.append(
                {
                    "stop_ms": (stop_ns - sent_ns) / 1e6,
                    "arrival_ms": (st.last_valid_ns - sent_ns) / 1e6,
                    "valid_until_ms": (st.last_valid_until_ns - sent_ns) / 1e6,
                    "bookkeeping_ms": (st.last_deadman_stop_ns - sent_ns) / 1e6,
                    "send_wall_minus_wire_sequence_ms": (sent_wall_us - enc.last_sequence) / 1e3,
                }
            )
            if (k + 1) % 100 == 0:
                print(f"  {k + 1}/{trials} trials", file=sys.stderr, flush=True)
    tx.close()
    s, a = _summary(np.array(from_send)), _summary(np.array(from_arrival))
    o = _summary(np.array(observed))
    return DeadmanReport(
        trials=trials,
        interval_ms=interval_ms,
        margin_ms=margin_ms,
        load_processes=load,
        from_send=s,
        from_arrival=a,
        observed_active_from_send=o,
        bookkeeping_from_send=_summary(np.array(bookkeeping)),
        missed_stops=missed,
        worst_trials=sorted(detail, key=lambda d: d["stop_ms"])[-3:],
        met=missed == 0 and s.p100_ms <= interval_ms and o.p100_ms < interval_ms,
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--interval-ms", type=float, default=100.0)
    ap.add_argument("--margin-ms", type=float, default=10.0)
    ap.add_argument("--load", type=int, default=0, help="CPU-burning processes during trials")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "deadman.json")
    args = ap.parse_args(argv)
    rep = run(args.trials, args.interval_ms, args.margin_ms, args.load)
    print(f"dead-man stop latency, {rep.trials} trials, interval {rep.interval_ms:g} ms, "
          f"margin {rep.margin_ms:g} ms, {rep.load_processes} CPU burners")  # fmt: skip
    print(f"{'measured':<30} {'p50 ms':>8} {'p99 ms':>8} {'p100 ms':>8}")
    for name, x in (
        ("stop, from send", rep.from_send),
        ("stop, from arrival", rep.from_arrival),
        ("last observed active, from send", rep.observed_active_from_send),
        ("bookkeeping, from send", rep.bookkeeping_from_send),
    ):
        print(f"{name:<30} {x.p50_ms:8.2f} {x.p99_ms:8.2f} {x.p100_ms:8.2f}")
    print(f"missed stops: {rep.missed_stops}; p100 ≤ interval: {'yes' if rep.met else 'NO'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(rep.model_dump_json(indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if rep.met else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
