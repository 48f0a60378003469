"""Phosphene preview benchmark (`python benchmarks/preview/bench_preview.py`).

Measures, on this machine:
  * PhospheneRenderer frames per second for the 96-electrode Utah array at 256 × 256
    (all 96 electrodes active — the worst case; the safety layer allows 16 at once — and 16);
  * the same stimulation through pulse2percept's ScoreboardModel (the field's reference
    simulator) on the same layout, map and output grid, if pulse2percept is installed:
    its time per percept, the speed ratio, and the largest distance between the phosphene
    positions the two produce;
  * for context, the per-bin cost of StimulationPipeline.process (mapping + safety) on a
    2 × 64 × 64 rate map.

Prints a rich table and writes JSON (default benchmarks/preview/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.ndimage import maximum_filter

from hardware.arrays import ElectrodeArray, load_array
from hardware.phosphene_preview import PhospheneRenderer
from hardware.pipeline import StimulationPipeline
from hardware.retinotopy import DEFAULT_MAP
from hardware.safety import SafetyLimits
from hardware.types import RateField, StimulationFrame


def frame_for(array: ElectrodeArray, active: np.ndarray, amp: float, seq: int) -> StimulationFrame:
    on = active.astype(np.float32)
    return StimulationFrame(
        sequence=seq,
        timestamp_ns=seq,
        electrode_ids=array.electrode_ids,
        amplitude_ua=on * amp,
        phase_width_us=on * 170,
        interphase_gap_us=on * 50,
        pulse_rate_hz=on * 300,
        n_pulses=(on * 3).astype(np.uint16),
    )


def time_renderer(
    array: ElectrodeArray, n_active: int, size: int, n_frames: int
) -> dict[str, float]:
    r = PhospheneRenderer(array, None, size_px=size)
    rng = np.random.default_rng(0)
    frames = []
    for k in range(64):
        act = np.zeros(array.n, dtype=bool)
        act[rng.choice(array.n, n_active, replace=False)] = True
        frames.append(frame_for(array, act, float(rng.uniform(30, 90)), k))
    for f in frames[:10]:
        r.render(f)
    times = []
    for i in range(n_frames):
        t0 = time.perf_counter()
        r.render(frames[i % len(frames)])
        times.append(time.perf_counter() - t0)
    t = np.array(times)
    return {
        "fps": float(1.0 / t.mean()),
        "mean_ms": float(t.mean() * 1e3),
        "p99_ms": float(np.percentile(t, 99) * 1e3),
    }


def _peaks(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    m = (img == maximum_filter(img, size=5)) & (img > img.max() * 0.3)
    r, c = np.nonzero(m)
    return np.stack([xs[c], ys[r]], axis=1)


def compare_pulse2percept(array: ElectrodeArray, size: int, repeats: int) -> dict[str, Any]:
    try:
        import pulse2percept
        from pulse2percept.implants import DiskElectrode, Implant
        from pulse2percept.implants import ElectrodeArray as P2PArray
        from pulse2percept.models.cortex import ScoreboardModel
        from pulse2percept.topography.cortex import Polimeni2006Map
    except ImportError as exc:
        return {"available": False, "reason": f"pulse2percept not importable: {exc}"}
    m = DEFAULT_MAP
    ph = array.phosphene_positions_deg(m)
    vf = Polimeni2006Map(k=m.k, a=m.a, b=m.b, alpha1=m.alpha)
    cx, cy = vf.dva_to_v1(ph[:, 0].copy(), ph[:, 1].copy())
    implant = Implant(
        P2PArray(
            {
                e: DiskElectrode(x, y, 0, 50)
                for e, x, y in zip(array.electrode_ids, cx, cy, strict=True)
            }
        )
    )
    lo = ph.min(axis=0) - 0.3
    side = float((ph.max(axis=0) + 0.3 - lo).max())
    step = side / (size - 1)
    t0 = time.perf_counter()
    model = ScoreboardModel(
        implant,
        rho=200,
        xrange=(lo[0], lo[0] + side),
        yrange=(lo[1], lo[1] + side),
        step=step,
        visual_field_map=vf,
        verbose=False,
    ).build()
    build_s = time.perf_counter() - t0
    ours = PhospheneRenderer(
        array,
        None,
        size_px=size,
        field_deg=(
            lo[0] - step / 2,
            lo[0] + side + step / 2,
            lo[1] - step / 2,
            lo[1] + side + step / 2,
        ),
        tau_ms=0,
    )
    rows = np.round((array.positions_mm[:, 1] - array.positions_mm[:, 1].min()) / 0.4).astype(int)
    cols = np.round((array.positions_mm[:, 0] - array.positions_mm[:, 0].min()) / 0.4).astype(int)
    worst = 0.0
    for par in ((0, 0), (0, 1), (1, 0), (1, 1)):
        on = (rows % 2 == par[0]) & (cols % 2 == par[1])
        percept = model.predict_percept(
            {e: float(v) for e, v in zip(array.electrode_ids, on, strict=True)}
        )
        theirs = _peaks(percept.data[:, :, 0], percept.xdva, percept.ydva[::-1])
        mine = _peaks(ours.render(frame_for(array, on, 60.0, 0)), ours.xs_deg, ours.ys_deg)
        d = np.hypot(*(mine[:, None] - theirs[None]).transpose(2, 0, 1))
        worst = max(worst, float(d.min(axis=1).max()))
    stim_all = {e: 1.0 for e in array.electrode_ids}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict_percept(stim_all)
        times.append(time.perf_counter() - t0)
    return {
        "available": True,
        "version": pulse2percept.__version__,
        "grid_px": [len(percept.ydva), len(percept.xdva)],
        "build_s": build_s,
        "percept_ms": float(np.mean(times) * 1e3),
        "fps": float(1.0 / np.mean(times)),
        "max_position_difference_deg": worst,
        "grid_step_deg": step,
    }


def time_pipeline(array: ElectrodeArray, n: int) -> dict[str, float]:
    pipe = StimulationPipeline(array, None, SafetyLimits())
    c = pipe.model.phosphene_deg.mean(axis=0)
    xs = np.linspace(c[0] - 5, c[0] + 5, 64)
    gx, gy = np.meshgrid(xs, xs - c[0] + c[1])
    pos = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    pos = np.concatenate([pos, pos])
    pol = np.r_[np.ones(4096), -np.ones(4096)].astype(np.int8)
    rng = np.random.default_rng(1)
    fields = [RateField(rng.gamma(1, 40, 8192).astype(np.float32), pos, pol) for _ in range(16)]
    pipe.process(fields[0])
    t = []
    for i in range(n):
        t0 = time.perf_counter()
        pipe.process(fields[i % 16])
        t.append(time.perf_counter() - t0)
    a = np.array(t)
    return {"mean_ms": float(a.mean() * 1e3), "p99_ms": float(np.percentile(a, 99) * 1e3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--p2p-repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = ap.parse_args()
    console = Console()
    utah = load_array("utah96")
    with console.status("timing the phosphene renderer ..."):
        r96 = time_renderer(utah, 96, args.size, args.frames)
        r16 = time_renderer(utah, 16, args.size, args.frames)
    with console.status("running pulse2percept on the same layout ..."):
        p2p = compare_pulse2percept(utah, args.size, args.p2p_repeats)
    with console.status("timing the stimulation pipeline ..."):
        pipe = time_pipeline(utah, 500)
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "size_px": args.size,
        "renderer_96_active": r96,
        "renderer_16_active": r16,
        "pulse2percept": p2p,
        "speed_ratio_vs_pulse2percept": (r96["fps"] / p2p["fps"]) if p2p.get("available") else None,
        "pipeline_process_8192_entries": pipe,
    }
    t = Table(
        title=f"Phosphene preview, Utah 96, {args.size}×{args.size} px ({platform.machine()}, {os.cpu_count()} CPUs)"
    )
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("npe renderer, 96 active: fps", f"{r96['fps']:.0f}")
    t.add_row(
        "npe renderer, 96 active: mean / p99 ms", f"{r96['mean_ms']:.3f} / {r96['p99_ms']:.3f}"
    )
    t.add_row("npe renderer, 16 active: fps", f"{r16['fps']:.0f}")
    if p2p.get("available"):
        t.add_row(
            f"pulse2percept {p2p['version']} Scoreboard: ms / percept", f"{p2p['percept_ms']:.2f}"
        )
        t.add_row(
            "speed ratio npe / pulse2percept", f"{result['speed_ratio_vs_pulse2percept']:.1f}×"
        )
        t.add_row(
            "max phosphene position difference (deg)",
            f"{p2p['max_position_difference_deg']:.4f} (grid {p2p['grid_step_deg']:.4f})",
        )
    else:
        t.add_row("pulse2percept", p2p["reason"])
    t.add_row(
        "pipeline.process (8192 rates → 96 el.) mean / p99 ms",
        f"{pipe['mean_ms']:.3f} / {pipe['p99_ms']:.3f}",
    )
    console.print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
