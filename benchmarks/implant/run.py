"""Implant benchmark (`python benchmarks/implant/run.py`): the shipped 16 × Utah-64 implant.

Measures, on this machine, per bin (µs, p50 / p99 over --bins bins of a bright moving field
on the shipped bundle's 2 × 64 × 64 rate-map geometry, so the implant caps do bind):
  * map: `ImplantPipeline.process` (one fused kernel for 16 arrays + implant caps) and the
    copy into the implant frame the loop holds (`ImplantBus.pipeline.process`);
  * send: 16 authenticated UDP datagrams, one per array link, to the simulated stimulators
    (one child process serving all 16 ports);
  * audit: 16 array-frame records into the version-2 audit log;
  * preview: `PhospheneRenderer` over all 1,024 electrodes at 256 × 256 (frames/s).
Then checks what arrived: every link's frames received and accepted, and `inspect_log`'s
verdict (per-array continuity, per-array limits, implant caps).

Prints a rich table and writes JSON (default benchmarks/implant/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from hardware.audit import inspect_log
from hardware.implant import ImplantPipeline, load_implant
from hardware.implant_chain import ImplantBus, start_implant_chain
from hardware.phosphene_preview import PhospheneRenderer
from hardware.safety import SafetyLimits
from hardware.types import RateField, StimulationFrame


def _fields(n_bins: int) -> list[RateField]:
    """A 2 × 64 × 64 ON/OFF rate map over ±15° with a bright bar sweeping across it."""
    ys, xs = np.mgrid[0:64, 0:64]
    pos = np.stack([(xs - 31.5) * 30 / 64, (31.5 - ys) * 30 / 64], -1).reshape(-1, 2)
    pos2 = np.concatenate([pos, pos]).astype(np.float32)
    pol = np.concatenate([np.ones(4096), -np.ones(4096)]).astype(np.int8)
    out = []
    for k in range(n_bins):
        x0 = -15 + (k % 100) * 0.3
        bar = (np.abs(pos2[:, 0] - x0) < 2.0).astype(np.float32)
        rates = 5.0 + 150.0 * bar * (pol > 0)
        out.append(RateField(rates.astype(np.float32), pos2, pol, 0))
    return out


def _copy(f: StimulationFrame) -> StimulationFrame:
    """A frame of our own (the bus refills its frames in a ring)."""
    return StimulationFrame(
        f.sequence, f.timestamp_ns, f.electrode_ids, f.amplitude_ua.copy(),
        f.phase_width_us.copy(), f.interphase_gap_us.copy(), f.pulse_rate_hz.copy(),
        f.n_pulses.copy(),
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bins", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = ap.parse_args()
    implant = load_implant("utah16x64")
    limits = SafetyLimits()
    fields = _fields(args.bins)
    tmp = Path(tempfile.mkdtemp(prefix="npe-implant-bench-"))
    chain = start_implant_chain(implant, limits, tmp / "audit.log", "benchmarks/implant")
    times = {k: np.zeros(args.bins) for k in ("map", "send", "audit", "total")}
    try:
        bus = ImplantBus(chain, ImplantPipeline(implant, limits, audit=chain.audit))
        bus.pipeline.warm_up(fields[0])
        period = 0.01  # paced at 100 bins/s, as a live run: the stimulators must keep up
        t_next = time.monotonic()
        for k, rf in enumerate(fields):
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
            t0 = time.perf_counter_ns()
            frame = bus.pipeline.process(rf)
            t1 = time.perf_counter_ns()
            bus.link.send(frame)
            t2 = time.perf_counter_ns()
            bus.audit.frame(frame)
            t3 = time.perf_counter_ns()
            times["map"][k], times["send"][k], times["audit"][k] = t1 - t0, t2 - t1, t3 - t2
            times["total"][k] = t3 - t0
        preview_frame = bus.pipeline.process(fields[60])  # the bar over the right arrays
        active = int(preview_frame.active.sum())
        bus.link.send(preview_frame)
        bus.audit.frame(preview_frame)
        preview_frame = _copy(preview_frame)
        zero = bus.pipeline.zero("benchmark end")
        bus.link.send(zero)
        bus.audit.frame(zero)
    finally:
        time.sleep(0.05)
        chain.close()
    stats = chain.stimulator_stats()
    report = inspect_log(tmp / "audit.log")
    renderer = PhospheneRenderer(implant, None, size_px=256)
    n_render = 200
    t0 = time.perf_counter()
    for _ in range(n_render):
        renderer.render(preview_frame)
    render_fps = n_render / (time.perf_counter() - t0)
    q = {
        k: [float(np.percentile(v, 50)) / 1e3, float(np.percentile(v, 99)) / 1e3]
        for k, v in times.items()
    }
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "implant": implant.name,
        "electrodes": implant.n_electrodes,
        "arrays": len(implant.arrays),
        "bins": args.bins,
        "per_bin_us_p50_p99": q,
        "kernel_bins": bus.pipeline_.kernel_bins,
        "general_bins": bus.pipeline_.general_bins,
        "implant_events": dict(bus.pipeline_.events),
        "active_in_preview_frame": active,
        "frames_sent_per_link": [lnk.stats.sent for lnk in chain.links],
        "received_per_link": [s.received if s else None for s in stats],
        "accepted_per_link": [s.accepted if s else None for s in stats],
        "rejected_per_link": [dict(s.rejected) if s else None for s in stats],
        "log_ok": report.ok,
        "log_problems": report.problems,
        "implant_breaches": report.implant_breaches,
        "limit_breaches": report.limit_breaches,
        "preview_fps_1024_electrodes_256px": render_fps,
    }
    args.out.write_text(json.dumps(result, indent=2))
    t = Table(title=f"{implant.name}: {implant.n_electrodes} electrodes, {args.bins} bins at 100/s")
    for col in ("stage", "p50 µs", "p99 µs"):
        t.add_column(col)
    for k, (a, b) in q.items():
        t.add_row(k, f"{a:.0f}", f"{b:.0f}")
    console = Console()
    console.print(t)
    console.print(
        f"links: sent {sum(result['frames_sent_per_link'])}, received "
        f"{sum(x or 0 for x in result['received_per_link'])}, accepted "
        f"{sum(x or 0 for x in result['accepted_per_link'])}; log ok {report.ok}, implant "
        f"breaches {report.implant_breaches}, array breaches {report.limit_breaches}; "
        f"implant events {dict(bus.pipeline_.events)}; preview {render_fps:.0f} fps (1,024 "
        f"electrodes, {active} active, 256 px); load avg {result['machine']['load_avg_1m']:.1f}"
    )
    console.print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
