"""Markdown tables of benchmarks/latency results (for the README), from bench.json files.

python benchmarks/latency/make_table.py benchmarks/latency/results/normal benchmarks/latency/results/rt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(result_dir: Path) -> str:
    r = json.loads((result_dir / "bench.json").read_text())
    m = r["machine"]
    lines = [
        f"**{result_dir.name}** — model `{r['model']}` (sha256 {r['model_sha256'][:12]}), "
        f"{m['cpu_model']}, {m['cores_available']} cores, ORT {m['versions']['onnxruntime']}, "
        f"{r['session']['intra_op_threads']} intra-op thread, spinning "
        f"{'on' if r['session']['allow_spinning'] else 'off'}, {r.get('scheduling', '')}, "
        f"load average {m.get('load_avg_1m') or 0:.1f} at start",
        "",
        "| inference (batch 1) | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | calls/s | MFLOP | GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["inference"]:
        s = x["stats"]
        lines.append(
            f"| {x['name']} | {s['p50']:.3f} | {s['p90']:.3f} | {s['p99']:.3f} | {s['p99.9']:.3f} | "
            f"{s['max']:.3f} | {s['throughput_per_s']:.0f} | "
            + (
                f"{x['flops'] / 1e6:.1f} | {s['gflops_achieved']:.1f} |"
                if x["flops"]
                else "- | - |"
            )
        )
    if r.get("sweep"):
        lines += [
            "",
            "| live form, threads × spinning | p50 ms | p99 ms | p99.9 ms |",
            "|---|---:|---:|---:|",
        ]
        for w in r["sweep"]:
            lines.append(
                f"| {w['intra_op_threads']} thread(s), spinning {'on' if w['allow_spinning'] else 'off'} "
                f"| {w['p50']:.3f} | {w['p99']:.3f} | {w['p99.9']:.3f} |"
            )
    peak = r["matmul_peak_gflops"]
    lines += [
        "",
        f"numpy float32 matmul peak, {peak['threads']} thread: {peak['gflops']:.1f} GFLOP/s",
        "",
    ]
    e = r.get("end_to_end")
    if e:
        lines += [
            f"| end to end, {e['bins_total']} bins ({e['clock']}, {e['form']}, {e['source']}) "
            "| p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for stage, q in e["latency_ms"].items():
            lines.append(
                f"| {stage} | {q['p50']:.3f} | {q['p90']:.3f} | {q['p99']:.3f} | {q['p99.9']:.3f} | {q['max']:.3f} |"
            )
        lines += [
            "",
            f"dropped bins {e['counters']['bins_dropped']}, bins whose work exceeded the 10 ms "
            f"period {e['bins_over_period']}, frames accepted by the simulated stimulator "
            f"{e['stimulator'].get('accepted', '-')}"
            + (
                f", host steal time during the run {e['host_steal_s']:.2f} s"
                if e.get("host_steal_s") is not None
                else ""
            )
            + (f", spin {e['spin_us']:g} µs" if e.get("spin_us") else ""),
        ]
        stalls = e.get("stalls")
        if stalls:  # recorded since the stall list was added (paced runs only)
            lines += [
                "",
                "bins that began more than half a period late (time into the run: ms late, "
                "bins dropped): "
                + ", ".join(
                    f"{s['t_s']:.1f} s: {s['late_ms']:.1f} ({s['dropped']})" for s in stalls
                ),
            ]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for name, t in r["targets"].items():
        measured = (
            f"p99 {t['p99_ms']:.2f} ms; {t['dropped']} of {t['bins']} ({t['dropped_counted_as']})"
            if name == "e2e"
            else f"{t['ratio_p50']:.1f}x (p50)"
        )
        lines.append(f"| {name} | {measured} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
