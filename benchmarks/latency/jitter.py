"""How late does this machine wake a thread that does nothing? The floor under `npe run`.

Why: the runtime drops a bin only when its work starts about a whole period late; on a
2-core virtual machine that can happen with no work at all, when the hypervisor runs another
guest on our core or the kernel is busy. This script measures that floor the way cyclictest
does: an empty loop sleeping to the same 100 Hz deadlines with the runtime's own
`RealClock`, recording how late each wake-up is. Run it alone for the platform's floor, or
beside `npe bench --realtime` as a witness and then `compare` the two: a stall both saw at
the same monotonic time came from the machine, not from the runtime's work. `--native` runs
the same empty loop in C (`wake.c`: no interpreter, optionally SCHED_FIFO, memory locked), so
a late wake-up it sees cannot be blamed on Python.

    python benchmarks/latency/jitter.py measure --out witness.json [--cpu 0] [--ticks 10000]
    python benchmarks/latency/jitter.py measure --native [--fifo 50] --out native.json
    python benchmarks/latency/jitter.py compare results/paced/bench.json w0.json w1.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime.bench import host_steal_s
from runtime.clock import RealClock

THRESHOLDS_MS = (1.0, 2.0, 5.0, 10.0)
WAKE_C = Path(__file__).with_name("wake.c")


def measure(hz: float, ticks: int, spin_us: float, cpu: int | None) -> dict[str, Any]:
    """Sleep to `ticks` deadlines at `hz` with the runtime's own RealClock (Python)."""
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
    settings = {"loop": "python", "hz": hz, "ticks": ticks, "spin_us": spin_us, "cpu": cpu}
    return summarise(late, t0, period, settings, _steal(steal0, steal1))


def measure_native(hz: float, ticks: int, cpu: int | None, fifo_priority: int) -> dict[str, Any]:
    """The same measurement by `wake.c`: no interpreter, optionally SCHED_FIFO, memory locked.

    Built here with the system's C compiler (`cc`) into a temporary folder: one file, no
    build system, nothing installed.
    """
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("--native needs a C compiler (cc or gcc) on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "wake"
        subprocess.run([cc, "-O2", "-o", str(exe), str(WAKE_C)], check=True)
        steal0 = host_steal_s()
        out = subprocess.run(
            [str(exe), f"{hz:g}", str(ticks), str(-1 if cpu is None else cpu), str(fifo_priority)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        steal1 = host_steal_s()
    t0, period = int(out[0]), int(out[1])
    late = np.array(out[2:], dtype=np.int64)
    if late.size != ticks:
        raise SystemExit(f"wake.c returned {late.size} wake-ups, expected {ticks}")
    settings = {
        "loop": "native (wake.c)",
        "hz": hz,
        "ticks": ticks,
        "spin_us": 0.0,
        "cpu": cpu,
        "fifo_priority": fifo_priority,
    }
    return summarise(late, t0, period, settings, _steal(steal0, steal1))


def _steal(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def summarise(
    late: np.ndarray, t0: int, period: int, settings: dict[str, Any], steal_s: float | None
) -> dict[str, Any]:
    """Per-wake lateness (ns, deadline k at t0 + (k+1)·period) → the report both loops write.

    late_events: every wake-up more than half a period late, with its monotonic time, for
    `compare`; would_drop: wake-ups a whole period or more late (a loop doing this work
    would have skipped a bin there).
    """
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
        "settings": settings,
        "late_ms": {
            "p50": float(np.percentile(late_ms, 50)),
            "p99": float(np.percentile(late_ms, 99)),
            "p99.9": float(np.percentile(late_ms, 99.9)),
            "max": float(late_ms.max()),
        },
        "over_ms": {f"{t:g}": int(np.count_nonzero(late_ms > t)) for t in THRESHOLDS_MS},
        "would_drop": int(np.count_nonzero(late >= period)),
        "late_events": events,
        "host_steal_s": steal_s,
    }


def compare(witness: dict[str, Any], bench: dict[str, Any], tol_ms: float) -> dict[str, Any]:
    """Match each of the bench's stalls with a witness wake-up that was late at the same time.

    Matched on the *end* of the stall: a thread sleeping through a stall wakes when it ends,
    so the loop's late start and the witness's late wake-up coincide if the stall stopped both
    (a stall of the whole machine, or of the core both were on); where it began cannot be
    told from a sleeping thread (only that it began before the deadline). They coincide only
    to within a few ms: when a stall ends, every thread it held up is runnable at once and
    the core runs them one after another (measured gaps 2–9 ms), hence the default tolerance
    of one 100 Hz period. `expected_by_chance` is how many stalls would match a witness
    whose late wake-ups fell at random times at the same rate, so a match count far above it
    is not a coincidence.
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
    settings = witness.get("settings", {})
    span_s = settings.get("ticks", 0) / settings["hz"] if settings.get("hz") else 0.0
    rate = len(witness["late_events"]) / span_s if span_s > 0 else 0.0
    return {
        "stalls": len(rows),
        "matched": sum(r["matched"] for r in rows),
        "dropped_bins": sum(r["dropped"] for r in rows),
        "dropped_bins_matched": sum(r["dropped"] for r in rows if r["matched"]),
        "expected_by_chance": len(rows) * min(1.0, rate * 2 * tol_ms / 1e3),
        "rows": rows,
    }


def merge_witnesses(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several witnesses (one pinned to each core) as one: a stall any of them saw counts.

    The merged span is the longest one, so `compare`'s chance estimate uses the combined
    rate of late wake-ups (conservative: more events, more chance matches).
    """
    events = sorted((e for r in reports for e in r["late_events"]), key=lambda e: e["monotonic_s"])
    span_s = max(r["settings"]["ticks"] / r["settings"]["hz"] for r in reports)
    return {"settings": {"hz": 1.0, "ticks": span_s}, "late_events": events}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="run the empty loop and write JSON")
    m.add_argument("--hz", type=float, default=100.0)
    m.add_argument("--ticks", type=int, default=10_000)
    m.add_argument("--spin-us", type=float, default=0.0)
    m.add_argument("--cpu", type=int, default=None, help="pin to this core")
    m.add_argument("--native", action="store_true", help="time wake.c (C) instead of Python")
    m.add_argument("--fifo", type=int, default=0, help="--native: SCHED_FIFO priority (0: off)")
    m.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare", help="match a bench run's stalls with witness runs")
    c.add_argument("bench", type=Path, help="bench.json of `npe bench --realtime`")
    c.add_argument("witness", type=Path, nargs="+", help="measure JSON(s) run beside it")
    c.add_argument("--out", type=Path, default=None, help="also write the matches as JSON")
    c.add_argument("--tol-ms", type=float, default=10.0, help="wake-up times this close match")
    args = ap.parse_args()
    if args.cmd == "measure":
        report = (
            measure_native(args.hz, args.ticks, args.cpu, args.fifo)
            if args.native
            else measure(args.hz, args.ticks, args.spin_us, args.cpu)
        )
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
        witness = merge_witnesses([json.loads(w.read_text()) for w in args.witness])
        res = compare(witness, json.loads(args.bench.read_text()), args.tol_ms)
        res["witnesses"] = [str(w) for w in args.witness]
        res["tol_ms"] = args.tol_ms
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(res, indent=2))
        for r in res["rows"]:
            print(
                f"t={r['t_s']:8.3f} s  loop late {r['loop_late_ms']:6.2f} ms "
                f"(dropped {r['dropped']})  witness late {r['witness_late_ms']} ms  "
                f"wake gap {r['wake_gap_ms']} ms  {'MATCH' if r['matched'] else '-'}"
            )
        print(
            f"{res['matched']} of {res['stalls']} stalls also seen by the witness "
            f"({res['expected_by_chance']:.2f} expected by chance); "
            f"{res['dropped_bins_matched']} of {res['dropped_bins']} dropped bins fell in them"
        )


if __name__ == "__main__":
    main()
