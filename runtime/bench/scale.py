"""How mapping + safety scales with electrodes and rates (issue 17), without torch.

`measure_scale` times the per-bin cost of rates → safe frames (the precomputed kernel of
`hardware.kernel` behind `StimulationPipeline.process`, and for several arrays
`hardware.implant.ImplantPipeline.process`) for {96, 384, 1,024} electrodes × {2,048, 8,192,
32,768} rates, and the general path (the pre-kernel code, still used for bins with a safety
event) on the same bins for comparison. `measure_model_step` times the shipped bundle's live
form with onnxruntime in the same process, so that the ratio mapping / model is measured on
one machine at one moment. `benchmarks/mapping/scale.py` prints the table and writes JSON;
`npe bench --scale` can call `run_scale` (this module imports no torch).

Geometry: one 20° × 20° camera field (±10°), a regular rate-map grid of √(R/2) per side with
an ON and an OFF entry per pixel; 96 electrodes = the utah96 array, 384 = the first 6 arrays
of the shipped 16 × Utah-64 implant, 1,024 = all 16. Rates are gamma-distributed
(mean 40 spikes/s), 64 different bins cycled, so that the caps bind as on a bright scene.
The "shipped bundle" row uses the bundle's own output geometry and rates computed by the
model on random frames.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from hardware.arrays import load_array
from hardware.implant import Implant, ImplantPipeline, implant_of_one, load_implant
from hardware.pipeline import StimulationPipeline
from hardware.safety import SafetyLimits
from hardware.types import RateField

ELECTRODES = (96, 384, 1024)
RATES = (2048, 8192, 32768)
FIELD_HALF_DEG = 10.0
#: Targets of issue 17 (mapping + safety p50 over the model step's p50).
TARGET_RATIO_UTAH96 = 0.3
TARGET_RATIO_1024 = 1.0


class ScaleCell(BaseModel):
    """One (electrodes, rates) cell: per-bin mapping + safety cost in ms."""

    electrodes: int
    arrays: int
    rates: int
    geometry: str
    bins: int
    p50_ms: float
    p99_ms: float
    general_p50_ms: float
    general_p99_ms: float
    speedup_p50: float
    kernel_share: float
    alloc_net_blocks_per_bin: float
    alloc_peak_bytes_per_bin: int
    weight_nnz: int


#: A model "fits a 10 ms bin with margin" when its step p99 plus the mapping + safety p99 for
#: 1,024 electrodes on its own output takes at most half the bin: the other half is left to
#: capture, preprocessing, the send, the audit record and the scheduler.
BIN_MS = 10.0
FIT_FRACTION = 0.5


class ModelScaleRow(BaseModel):
    """One model's step bundle: its ORT step and the mapping of its output (ms per bin)."""

    label: str
    model: str
    input_shape: list[int]
    rates: int
    parameters: int | None
    step_p50_ms: float
    step_p99_ms: float
    map_utah96_p50_ms: float
    map_utah96_p99_ms: float
    map_1024_p50_ms: float
    map_1024_p99_ms: float
    worst_p99_ms: float  # step p99 + mapping p99 at 1,024 electrodes
    fits_bin_with_margin: bool


class ScaleReport(BaseModel):
    """The whole table, the model step it is compared with, and the targets' verdicts."""

    cells: list[ScaleCell]
    model_step_p50_ms: float | None
    model_step_p99_ms: float | None
    ratios: dict[str, float]
    targets: dict[str, bool]
    notes: list[str]
    models: list[ModelScaleRow] = []


def implant_for(n_electrodes: int) -> Implant:
    """96 → utah96; 384 → 6 × Utah-64; 1,024 → 16 × Utah-64 (the shipped implant)."""
    if n_electrodes == 96:
        return implant_of_one(load_array("utah96"))
    full = load_implant("utah16x64")
    per = full.arrays[0].array.n
    k = n_electrodes // per
    if k * per != n_electrodes or not 1 <= k <= len(full.arrays):
        raise ValueError(f"{n_electrodes} electrodes: use 96 or a multiple of {per} ≤ 1024")
    return Implant(f"{k}x{full.arrays[0].array.name}", full.arrays[:k], full.limits)


def grid_field(
    n_rates: int, half_deg: float = FIELD_HALF_DEG
) -> tuple[NDArray[np.float32], NDArray[np.int8]]:
    """[n, 2] positions and [n] polarity of a square ON/OFF rate map with n = 2·side²."""
    side = math.isqrt(n_rates // 2)
    if 2 * side * side != n_rates:
        raise ValueError(f"{n_rates} rates: need 2 × a square (2,048, 8,192, 32,768)")
    xs = np.linspace(-half_deg, half_deg, side)
    gx, gy = np.meshgrid(xs, xs)
    pos = np.stack([gx.ravel(), gy.ravel()], axis=1)
    positions = np.concatenate([pos, pos]).astype(np.float32)
    polarity = np.r_[np.ones(side * side), -np.ones(side * side)].astype(np.int8)
    return positions, polarity


def _percentiles(ns: NDArray[np.int64]) -> tuple[float, float]:
    return float(np.percentile(ns, 50)) / 1e6, float(np.percentile(ns, 99)) / 1e6


def _time(fn: Callable[[int], object], bins: int, warmup: int) -> NDArray[np.int64]:
    for b in range(warmup):
        fn(b)
    out = np.empty(bins, dtype=np.int64)
    clock = time.perf_counter_ns
    for b in range(bins):
        t = clock()
        fn(b)
        out[b] = clock() - t
    return out


def allocations_per_bin(
    fn: Callable[[], object], bins: int = 200, warmup: int = 300
) -> tuple[float, int]:
    """(net traced blocks per bin, worst transient peak in bytes) of fn() in the steady
    state, traced from before the warm-up (tracemalloc)."""
    tracemalloc.start()
    try:
        for _ in range(warmup):
            fn()
        before = tracemalloc.take_snapshot()
        worst = 0
        for _ in range(bins):
            tracemalloc.reset_peak()
            cur = tracemalloc.get_traced_memory()[0]
            fn()
            worst = max(worst, tracemalloc.get_traced_memory()[1] - cur)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    net = sum(s.count_diff for s in after.compare_to(before, "filename"))
    return net / bins, worst


def measure_cell(
    implant: Implant,
    positions: NDArray[np.float32],
    polarity: NDArray[np.int8],
    rates: NDArray[np.float32],
    geometry: str,
    bins: int = 1000,
    warmup: int = 100,
    general_bins: int = 100,
) -> ScaleCell:
    """Time one implant on one geometry; rates [m, n] are cycled bin by bin.

    The general path (the reference the kernel's speed-up is quoted against) is timed on
    `general_bins` bins, or on `bins` where that is fewer: a quick `--scale-bins 10` look
    should not spend most of its time on the slow reference."""
    limits = SafetyLimits()
    m = rates.shape[0]
    fields = [RateField(rates[i], positions, polarity) for i in range(m)]
    single = len(implant.arrays) == 1
    pipes: list[StimulationPipeline]
    counted: list[StimulationPipeline] | list[ImplantPipeline]
    if single:
        one = StimulationPipeline(implant.arrays[0].array, None, limits)
        pipes = [one]
        counted = [one]
        step: Callable[[int], object] = lambda b: one.process(fields[b % m])  # noqa: E731
    else:
        imp = ImplantPipeline(implant, limits)
        pipes = list(imp.pipelines.values())
        counted = [imp]
        step = lambda b: imp.process(fields[b % m])  # noqa: E731
    kernel_ns = _time(step, bins, warmup)
    served = sum(p.kernel_bins for p in counted)
    general = sum(p.general_bins for p in counted)
    nnz = sum(p.kernel.weight_nnz for p in counted if p.kernel is not None)

    def general_step(b: int) -> None:
        f = fields[b % m]
        r = f.rates_hz[None, :].astype(np.float64)
        for p in pipes:
            p._reference(p.currents(r, f))

    general_ns = _time(general_step, min(general_bins, bins), min(warmup, 10))
    net, peak = allocations_per_bin(lambda: step(0))
    p50, p99 = _percentiles(kernel_ns)
    g50, g99 = _percentiles(general_ns)
    return ScaleCell(
        electrodes=implant.n_electrodes,
        arrays=len(implant.arrays),
        rates=positions.shape[0],
        geometry=geometry,
        bins=bins,
        p50_ms=p50,
        p99_ms=p99,
        general_p50_ms=g50,
        general_p99_ms=g99,
        speedup_p50=g50 / p50 if p50 > 0 else float("nan"),
        kernel_share=served / max(1, served + general),
        alloc_net_blocks_per_bin=net,
        alloc_peak_bytes_per_bin=peak,
        weight_nnz=nnz,
    )


def measure_model_step(
    bundle: Path | None = None, runs: int = 2000, warmup: int = 200
) -> tuple[float, float, RateField, NDArray[np.float32]]:
    """(p50 ms, p99 ms, a rate field of the bundle's geometry, [64, n] model rates).

    The bundle's live form with onnxruntime (1 intra-op thread, spinning off, the defaults of
    `npe bench`), batch 1, on random frames: the same call the live loop makes per bin.
    """
    from runtime.inference import OrtEngine, SessionSettings
    from runtime.spec import load_model_spec

    spec = load_model_spec(bundle)
    form = spec.pick_form()
    eng = OrtEngine(form, SessionSettings())
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, form.input_shape).astype(np.float32)
    ns = _time(lambda b: eng.run(x), runs, warmup)
    p50, p99 = _percentiles(ns)
    rates = np.stack(
        [
            np.array(eng.run(rng.uniform(-1, 1, form.input_shape).astype(np.float32)), copy=True)
            for _ in range(64)
        ]
    ).astype(np.float32)
    field = RateField(rates[0], spec.positions_deg, spec.polarity)
    return p50, p99, field, rates


def measure_model_row(label: str, bundle: Path | None, bins: int = 1000) -> ModelScaleRow:
    """One step bundle: its ORT step, and mapping + safety of its own output geometry and
    rates for utah96 and for the 1,024-electrode implant."""
    from runtime.spec import load_model_spec

    spec = load_model_spec(bundle)
    form = spec.pick_form()
    step50, step99, field, model_rates = measure_model_step(bundle, runs=max(bins, 200))
    pos, pol = field.positions_deg, field.polarity
    small = measure_cell(implant_for(96), pos, pol, model_rates, label, bins)
    big = measure_cell(implant_for(1024), pos, pol, model_rates, label, bins)
    worst = step99 + big.p99_ms
    return ModelScaleRow(
        label=label,
        model=spec.name,
        input_shape=list(form.input_shape),
        rates=int(pos.shape[0]),
        parameters=spec.extra.get("n_parameters"),
        step_p50_ms=step50,
        step_p99_ms=step99,
        map_utah96_p50_ms=small.p50_ms,
        map_utah96_p99_ms=small.p99_ms,
        map_1024_p50_ms=big.p50_ms,
        map_1024_p99_ms=big.p99_ms,
        worst_p99_ms=worst,
        fits_bin_with_margin=worst <= FIT_FRACTION * BIN_MS,
    )


def run_scale(
    electrodes: Sequence[int] = ELECTRODES,
    rates: Sequence[int] = RATES,
    bins: int = 1000,
    with_model: bool = True,
    bundle: Path | None = None,
    progress: Callable[[str], None] | None = None,
    model_bundles: Sequence[tuple[str, Path | None]] = (),
) -> ScaleReport:
    """The table of `measure_cell` over electrodes × rates, plus the shipped-bundle row, and
    one `measure_model_row` per (label, bundle) of `model_bundles` (None: the shipped one)."""
    say = progress or (lambda s: None)
    rng = np.random.default_rng(17)
    cells: list[ScaleCell] = []
    notes: list[str] = []
    step50 = step99 = None
    if with_model:
        say("model step (onnxruntime)")
        step50, step99, field, model_rates = measure_model_step(bundle)
        cells.append(
            measure_cell(
                implant_for(96),
                field.positions_deg,
                field.polarity,
                model_rates,
                "shipped bundle",
                bins,
            )
        )
    for n_el in electrodes:
        imp = implant_for(n_el)
        for n_r in rates:
            say(f"{n_el} electrodes × {n_r} rates")
            pos, pol = grid_field(n_r)
            bins_rates = rng.gamma(1.0, 40.0, (64, n_r)).astype(np.float32)
            cells.append(measure_cell(imp, pos, pol, bins_rates, "grid ±10°", bins))
    ratios: dict[str, float] = {}
    targets: dict[str, bool] = {}
    grid = {(c.electrodes, c.rates): c for c in cells if c.geometry != "shipped bundle"}
    base = grid.get((min(electrodes), min(rates)))
    if base is not None:
        for (e, r), c in grid.items():
            ratios[f"cost {e}x{r} / {base.electrodes}x{base.rates}"] = c.p50_ms / base.p50_ms
        # Linear at most: doubling electrodes (rates) at most doubles the cost.
        lin_e = all(
            grid[(e, r)].p50_ms / grid[(min(electrodes), r)].p50_ms <= e / min(electrodes) * 1.1
            for (e, r) in grid
        )
        lin_r = all(
            grid[(e, r)].p50_ms / grid[(e, min(rates))].p50_ms <= r / min(rates) * 1.1
            for (e, r) in grid
        )
        targets["at most linear in electrodes (10 % slack)"] = lin_e
        targets["at most linear in rates (10 % slack)"] = lin_r
    if step50 is not None:
        shipped = next(c for c in cells if c.geometry == "shipped bundle")
        ratios["shipped utah96 / model step (p50)"] = shipped.p50_ms / step50
        targets[f"utah96 ≤ {TARGET_RATIO_UTAH96} × model step"] = (
            shipped.p50_ms <= TARGET_RATIO_UTAH96 * step50
        )
        big = grid.get((1024, 2048))
        if big is not None:
            ratios["1024 el. x 2048 rates / model step (p50)"] = big.p50_ms / step50
            targets[f"1,024 electrodes ≤ {TARGET_RATIO_1024} × model step"] = (
                big.p50_ms <= TARGET_RATIO_1024 * step50
            )
    notes.append(
        "p50/p99 per bin of StimulationPipeline.process (one array) or ImplantPipeline.process"
        " (several), perf_counter_ns; general = the pre-kernel path on the same bins"
    )
    models = []
    for label, path in model_bundles:
        say(f"model {label}")
        models.append(measure_model_row(label, path, bins))
    if models:
        notes.append(
            f"models: fits = step p99 + mapping p99 (1,024 electrodes) ≤ {FIT_FRACTION:g} × the "
            f"{BIN_MS:g} ms bin; untrained weights (a step's cost does not depend on them)"
        )
    return ScaleReport(
        cells=cells,
        model_step_p50_ms=step50,
        model_step_p99_ms=step99,
        ratios=ratios,
        targets=targets,
        notes=notes,
        models=models,
    )


def print_scale(console: Any, report: ScaleReport) -> None:
    """The scaling table, the model step, the ratios and which targets are met (rich)."""
    from rich.table import Table

    t = Table(title="mapping + safety per bin (ms)")
    for col in (
        "electrodes", "arrays", "rates", "geometry", "p50", "p99", "general p50", "speed-up",
        "kernel bins", "alloc blocks/bin", "peak B/bin",
    ):  # fmt: skip
        t.add_column(col, justify="right")
    for c in report.cells:
        t.add_row(
            str(c.electrodes), str(c.arrays), str(c.rates), c.geometry, f"{c.p50_ms:.4f}",
            f"{c.p99_ms:.4f}", f"{c.general_p50_ms:.4f}", f"{c.speedup_p50:.1f}×",
            f"{c.kernel_share:.0%}", f"{c.alloc_net_blocks_per_bin:.3f}",
            str(c.alloc_peak_bytes_per_bin),
        )  # fmt: skip
    console.print(t)
    if report.model_step_p50_ms is not None:
        console.print(
            f"model step (ORT, shipped bundle) p50 {report.model_step_p50_ms:.4f} ms, "
            f"p99 {report.model_step_p99_ms:.4f} ms"
        )
    if report.models:
        m = Table(
            title=f"model step + mapping per bin (ms; fits: worst p99 ≤ {FIT_FRACTION * BIN_MS:g} ms)"
        )
        for col in (
            "model", "input", "rates", "params", "step p50", "step p99", "map 96 p50",
            "map 96 p99", "map 1,024 p50", "map 1,024 p99", "worst p99", "fits 10 ms bin",
        ):  # fmt: skip
            m.add_column(col, justify="right")
        for r in report.models:
            m.add_row(
                r.label, "×".join(map(str, r.input_shape)), str(r.rates), str(r.parameters or "?"),
                f"{r.step_p50_ms:.3f}", f"{r.step_p99_ms:.3f}", f"{r.map_utah96_p50_ms:.3f}",
                f"{r.map_utah96_p99_ms:.3f}", f"{r.map_1024_p50_ms:.3f}",
                f"{r.map_1024_p99_ms:.3f}", f"{r.worst_p99_ms:.3f}",
                "yes" if r.fits_bin_with_margin else "NO",
            )  # fmt: skip
        console.print(m)
    for k, v in report.ratios.items():
        console.print(f"  {k}: {v:.3f}")
    for k, ok in report.targets.items():
        console.print(f"  target {k}: {'met' if ok else 'NOT met'}")
