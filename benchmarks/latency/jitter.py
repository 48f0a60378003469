"""How late does this machine wake a thread that does nothing? The floor under `npe run`.

Why: the runtime drops a bin only when its work starts about a whole period late; on a
2-core virtual machine that can happen with no work at all, when the hypervisor runs another
guest on our core or the kernel is busy. This script measures that floor the way cyclictest
does: an empty loop sleeping to the same 100 Hz deadlines with the runtime's own
`RealClock` (`runtime.bench.witness`), recording how late each wake-up is. Run it alone for the
platform's floor, or beside `npe bench --realtime` as a witness and then `compare` the two:
a stall both saw at the same monotonic time came from the machine, not from the runtime's
work (`npe bench --realtime --witness` does the same with Python witnesses, in one step).
`--native` runs the same empty loop in C (`wake.c`: no interpreter, optionally SCHED_FIFO,
memory locked), so a late wake-up it sees cannot be blamed on Python.

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
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from runtime.bench import host_steal_s
from runtime.bench.witness import (
    DEFAULT_TOL_MS,
    LateWake,
    StallAttribution,
    WakeReport,
    attribute_stalls,
    run_empty_loop,
    summarise_wakes,
)

WAKE_C = Path(__file__).with_name("wake.c")


def _report(wake: WakeReport, settings: dict[str, Any], steal_s: float | None) -> dict[str, Any]:
    """The JSON this script writes: the witness report plus machine, settings and steal."""
    return {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
        },
        "settings": settings,
        **wake.to_dict(),
        "host_steal_s": steal_s,
    }


def _steal(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def measure(hz: float, ticks: int, spin_us: float, cpu: int | None) -> dict[str, Any]:
    """Sleep to `ticks` deadlines at `hz` with the runtime's own RealClock (Python)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    steal0 = host_steal_s()
    late, t0, period = run_empty_loop(hz, ticks, spin_ns=int(spin_us * 1e3))
    steal1 = host_steal_s()
    settings = {"loop": "python", "hz": hz, "ticks": ticks, "spin_us": spin_us, "cpu": cpu}
    wake = summarise_wakes(late, t0, period, "python empty loop (runtime.bench.witness)", cpu)
    return _report(wake, settings, _steal(steal0, steal1))


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
    wake = summarise_wakes(late, t0, period, "native (wake.c)", cpu)
    return _report(wake, settings, _steal(steal0, steal1))


def witness_events(reports: list[dict[str, Any]]) -> tuple[list[LateWake], float]:
    """Several witness files (one pinned to each core) as one: (all late wake-ups, span s).

    A stall any of them saw counts. The span is the longest one, so the chance estimate uses
    the combined rate of late wake-ups (conservative: more events, more chance matches).
    Files written before `span_s` existed give it as settings ticks / hz.
    """
    events = sorted(
        (LateWake(e["monotonic_s"], e["late_ms"]) for r in reports for e in r["late_events"]),
        key=lambda e: e.monotonic_s,
    )
    spans = [r.get("span_s") or r["settings"]["ticks"] / r["settings"]["hz"] for r in reports]
    return events, max(spans, default=0.0)


def bench_stalls(bench_json: str) -> list[Any]:
    """The stalls of a bench report's timed run (or of a run summary).

    A current report is read through its model (`BenchReport`, npe.bench/2); the committed
    results under benchmarks/latency/results/ predate it (npe.bench/1, or a summary.json),
    and are read by their keys.
    """
    from pydantic import ValidationError

    from runtime.bench.models import BenchReport

    try:
        report = BenchReport.model_validate_json(bench_json)
    except ValidationError:
        old = json.loads(bench_json)
        e2e = old.get("end_to_end", old)
        return [SimpleNamespace(**s) for s in e2e.get("stalls", [])]
    return list(report.end_to_end.run.stalls) if report.end_to_end is not None else []


def compare(bench_json: str, witnesses: list[dict[str, Any]], tol_ms: float) -> StallAttribution:
    """Match a bench run's stalls (its JSON text) with the witnesses' late wake-ups."""
    stalls = bench_stalls(bench_json)
    events, span_s = witness_events(witnesses)
    return attribute_stalls(stalls, events, span_s, tol_ms)


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
    c.add_argument(
        "--tol-ms", type=float, default=DEFAULT_TOL_MS, help="wake-up times this close match"
    )
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
        res = compare(
            args.bench.read_text(),
            [json.loads(w.read_text()) for w in args.witness],
            args.tol_ms,
        )
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            out = {**res.to_dict(), "witnesses": [str(w) for w in args.witness]}
            args.out.write_text(json.dumps(out, indent=2))
        for r in res.rows:
            print(
                f"t={r.t_s:8.3f} s  loop late {r.loop_late_ms:6.2f} ms "
                f"(dropped {r.dropped})  witness late {r.witness_late_ms} ms  "
                f"wake gap {r.wake_gap_ms} ms  {'MATCH' if r.matched else '-'}"
            )
        print(
            f"{res.matched} of {res.stalls} stalls also seen by the witnesses "
            f"({res.expected_by_chance:.2f} expected by chance); "
            f"{res.dropped_bins_matched} of {res.dropped_bins} dropped bins fell in them"
        )


if __name__ == "__main__":
    main()
