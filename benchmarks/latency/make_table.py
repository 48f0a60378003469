"""Markdown tables of benchmarks/latency results (for the README), from bench.json files.

python benchmarks/latency/make_table.py benchmarks/latency/results/normal benchmarks/latency/results/rt

Reads the typed report (`runtime.bench.models.BenchReport`, schema npe.bench/2); files
written before it (npe.bench/1) are refused with a message, not half-read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import ValidationError

from runtime.bench.models import BenchReport, EndToEnd


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _e2e_lines(e: EndToEnd, frame_rate_hz: float) -> list[str]:
    run = e.run
    lines = [
        f"| end to end, {run.bins_total} bins ({e.pacing}, {e.form}, {e.source}) "
        "| p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage, q in run.latency_ms.items():
        lines.append(f"| {stage} | " + " | ".join(q.row()) + " |")
    d = e.delivery
    lines += [
        "",
        f"dropped bins {run.counters.bins_dropped}, bins whose work exceeded the "
        f"{1000 / frame_rate_hz:g} ms period {run.bins_over_period}; {d.line()}"
        + (
            f"; host steal time during the run {e.host_steal_s:.2f} s"
            if e.host_steal_s is not None
            else ""
        )
        + (f", spin {e.spin_us:g} µs" if e.spin_us else ""),
    ]
    if run.stalls:
        lines += [
            "",
            "bins that began more than half a period late (time into the run: ms late, "
            "bins dropped): "
            + ", ".join(f"{s.t_s:.1f} s: {s.late_ms:.1f} ({s.dropped})" for s in run.stalls),
        ]
    return lines


def table(result_dir: Path) -> str:
    text = (result_dir / "bench.json").read_text()
    try:
        r = BenchReport.model_validate_json(text)
    except ValidationError as exc:
        old = json.loads(text).get("schema") if text.lstrip().startswith("{") else None
        raise SystemExit(
            f"{result_dir / 'bench.json'}: not an npe.bench/2 report"
            + (f" (it is {old}, written before the typed report)" if old else "")
            + f": {exc.error_count()} field error(s)"
        ) from None
    m = r.machine
    lines = [
        f"**{result_dir.name}** — model `{r.model}` (sha256 {r.model_sha256[:12]}), "
        f"{m.cpu_model}, {m.cores_available} cores, ORT {m.versions.onnxruntime}, "
        f"{r.session['intra_op_threads']} intra-op thread, spinning "
        f"{'on' if r.session['allow_spinning'] else 'off'}, {r.scheduling}, "
        f"load average {m.load_avg_1m or 0:.1f} at start",
        "",
        "| inference (batch 1) | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | calls/s | MFLOP | GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r.inference:
        s = x.stats
        lines.append(
            f"| {x.name} | "
            + " | ".join(s.row())
            + f" | {s.throughput_per_s:.0f} | "
            + (
                f"{x.flops / 1e6:.1f} | {s.gflops_achieved:.1f} |"
                if x.flops and s.gflops_achieved is not None
                else "- | - |"
            )
        )
    if r.sweep:
        lines += [
            "",
            "| live form, threads × spinning | p50 ms | p99 ms | p99.9 ms |",
            "|---|---:|---:|---:|",
        ]
        for w in r.sweep:
            q = w.latency
            lines.append(
                f"| {w.intra_op_threads} thread(s), spinning {'on' if w.allow_spinning else 'off'} "
                f"| {_fmt(q.p50)} | {_fmt(q.p99)} | {_fmt(q.p999)} |"
            )
    peak = r.matmul_peak
    lines += [
        "",
        f"numpy float32 matmul peak, {peak.threads} thread: {peak.gflops:.1f} GFLOP/s",
        "",
    ]
    for e in r.e2e_runs():
        lines += [*_e2e_lines(e, r.frame_rate_hz), ""]
    if r.allocations is not None:
        a = r.allocations
        lines += [
            f"allocations: {a.net_blocks_per_bin:.4f} net blocks per bin over {a.bins} bins "
            f"({a.method}); largest transient {a.transient_peak_bytes} bytes",
            "",
        ]
    lines += ["| target | measured | met |", "|---|---|---|"]
    for name, t in r.targets.measured():
        lines.append(f"| {name} | {t.measured()} | {'yes' if t.met else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
