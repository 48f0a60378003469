"""How late does this machine wake a thread that does nothing? The floor under `npe run`.

Why: the runtime drops a bin only when its work starts about a whole period late; on a
2-core virtual machine that can happen with no work at all, when the hypervisor runs another
guest on our core or the kernel is busy. This script measures that floor the way cyclictest
does: an empty loop sleeping to the same 100 Hz deadlines with the runtime's own
`RealClock`, recording how late each wake-up is. Run it alone for the platform's floor, or
beside `npe bench --realtime` as a witness and then `compare` the two: a stall both saw at
the same monotonic time came from the machine, not from the runtime's work.

    python benchmarks/latency/jitter.py measure --out witness.json [--cpu 0] [--ticks 10000]
    python benchmarks/latency/jitter.py compare witness.json results/paced/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime.bench import host_steal_s
from runtime.clock import RealClock

THRESHOLDS_MS = (1.0, 2.0, 5.0, 10.0)


def measure(hz: float, ticks: int, spin_us: float, cpu: int | None) -> dict[str, Any]:
    """Sleep to `ticks` deadlines at `hz`; lateness of every wake-up and the late ones' times."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    period = round(1e9 / hz)
    clock = RealClock(int(spin_us * 1e3))
    late = np.zeros(ticks, dtype=np.int64)
    steal0 = host_steal_s()
    t0 = time.monotonic_ns()
    for k in range(ticks):
        deadline = t0 + (k + 1) * period
        clock.sleep_until(deadline)
        late[k] = time.monotonic_ns() - deadline
    steal1 = host_steal_s()
    late_ms = late / 1e6
    events = [
        {"monotonic_s": (t0 + (k + 1) * period + int(late[k])) / 1e9, "late_ms": float(late_ms[k])}
        for k in np.flatnonzero(2 * late > period)
    ]
    return {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
        },
        "settings": {"hz": hz, "ticks": ticks, "spin_us": spin_us, "cpu": cpu},
        "late_ms": {
            "p50": float(np.percentile(late_ms, 50)),
            "p99": float(np.percentile(late_ms, 99)),
            "p99.9": float(np.percentile(late_ms, 99.9)),
            "max": float(late_ms.max()),
        },
        "over_ms": {f"{t:g}": int(np.count_nonzero(late_ms > t)) for t in THRESHOLDS_MS},
        "would_drop": int(np.count_nonzero(late >= period)),
        "late_events": events,
        "host_steal_s": None if steal0 is None or steal1 is None else steal1 - steal0,
    }


def compare(witness: dict[str, Any], bench: dict[str, Any], tol_ms: float) -> dict[str, Any]:
    """Match each of the bench's stalls with a witness wake-up that was late at the same time.

    Matched on the *end* of the stall: a thread sleeping through a stall wakes when it ends,
    so the loop's late start and the witness's late wake-up coincide if the stall stopped both
    (a stall of the whole machine, or of the core both were on); where it began cannot be
    told from a sleeping thread (only that it began before the deadline).
    """
    e2e = bench.get("end_to_end", bench)
    stalls = e2e.get("stalls", [])
    wakes = np.array([e["monotonic_s"] for e in witness["late_events"]] or [np.inf])
    lates = np.array([e["late_ms"] for e in witness["late_events"]] or [0.0])
    rows = []
    for s in stalls:
        i = int(np.argmin(np.abs(wakes - s["monotonic_s"])))
        gap_ms = float(abs(wakes[i] - s["monotonic_s"]) * 1e3)
        found = bool(np.isfinite(wakes[i]) and gap_ms <= tol_ms)
        rows.append(
            {
                "t_s": s["t_s"],
                "loop_late_ms": s["late_ms"],
                "dropped": s["dropped"],
                "witness_late_ms": float(lates[i]) if found else None,
                "wake_gap_ms": gap_ms if found else None,
                "matched": found,
            }
        )
    return {"stalls": len(rows), "matched": sum(r["matched"] for r in rows), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="run the empty loop and write JSON")
    m.add_argument("--hz", type=float, default=100.0)
    m.add_argument("--ticks", type=int, default=10_000)
    m.add_argument("--spin-us", type=float, default=0.0)
    m.add_argument("--cpu", type=int, default=None, help="pin to this core")
    m.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare", help="match a bench run's stalls with a witness run")
    c.add_argument("witness", type=Path)
    c.add_argument("bench", type=Path)
    c.add_argument("--tol-ms", type=float, default=1.0, help="wake-up times this close match")
    args = ap.parse_args()
    if args.cmd == "measure":
        report = measure(args.hz, args.ticks, args.spin_us, args.cpu)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        lm = report["late_ms"]
        print(
            f"{args.ticks} wake-ups at {args.hz:g} Hz: late p50 {lm['p50']:.3f} ms, "
            f"p99 {lm['p99']:.3f}, p99.9 {lm['p99.9']:.3f}, max {lm['max']:.2f}; "
            + ", ".join(f">{k} ms: {v}" for k, v in report["over_ms"].items())
            + f"; a whole period late (would drop): {report['would_drop']}; "
            f"host steal {report['host_steal_s']} s"
        )
    else:
        res = compare(
            json.loads(args.witness.read_text()), json.loads(args.bench.read_text()), args.tol_ms
        )
        for r in res["rows"]:
            print(
                f"t={r['t_s']:8.3f} s  loop late {r['loop_late_ms']:6.2f} ms "
                f"(dropped {r['dropped']})  witness late {r['witness_late_ms']} ms  "
                f"wake gap {r['wake_gap_ms']} ms  {'MATCH' if r['matched'] else '-'}"
            )
        print(f"{res['matched']} of {res['stalls']} stalls also seen by the witness")


if __name__ == "__main__":
    main()
