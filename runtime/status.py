"""The live status line of `npe run` and the printed summary (rich).

Why a renderable object: rich's Live refreshes from its own thread and calls `__rich__`,
so the percentiles are computed there, a few times a second, and the real-time loop only
updates integer counters — the status display costs the loop nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runtime.loop import RunSummary, StreamingRuntime

SHOWN = ("preprocess", "infer", "map", "send", "total")


class StatusLine:
    """One line: frames in, bins done/dropped/zero, p50/p99 per stage, active electrodes."""

    def __init__(self, runtime: StreamingRuntime, window: int = 500) -> None:
        self.rt = runtime
        self.window = window

    def __rich__(self) -> Text:
        c = self.rt.counters
        rec = self.rt.latency
        rows = rec.recent(self.window)
        t = Text()
        style = (
            "green" if c.state == "running" else "yellow" if c.state != "source fault" else "red"
        )
        t.append(f"{c.state:<12}", style=style)
        t.append(f" frames {c.frames_in:>6}  bins {c.bins_done:>6}  ")
        t.append(f"dropped {c.bins_dropped}", style="red" if c.bins_dropped else "")
        t.append(f"  zero {c.bins_zero}  ")
        if len(rows):
            for name in SHOWN:
                i = rec.stages.index(name)
                p50, p99 = np.percentile(rows[:, i], (50, 99)) / 1e6
                t.append(f"{name} {p50:.2f}/{p99:.2f}  ", style="bold" if name == "total" else "")
            t.append("ms p50/p99  ", style="dim")
        t.append(f"active {c.active_electrodes:>3}")
        return t


def summary_table(summary: RunSummary) -> Table:
    """Per-stage latency table of a run (ms)."""
    tab = Table(title=f"{summary.model} on {summary.source}: {summary.stop_reason}")
    tab.add_column("stage")
    for col in ("p50", "p90", "p99", "p99.9", "max"):
        tab.add_column(f"{col} ms", justify="right")
    for stage, q in summary.latency_ms.items():
        tab.add_row(stage, *q.row())
    return tab


def print_summary(
    console: Console, summary: RunSummary, extra: dict[str, Any] | None = None
) -> None:
    c = summary.counters
    console.print(summary_table(summary))
    console.print(
        f"bins: {c.bins_done} run, {c.bins_zero} zero, {c.bins_dropped} dropped "
        f"(of {summary.bins_total}); frames in {c.frames_in}, source dropped "
        f"{summary.source_stats.frames_dropped}; faults {c.source_faults}, "
        f"reconnects {c.reconnects}; mean active electrodes {summary.mean_active_electrodes:.1f}; "
        f"{summary.duration_s:.1f} s"
    )
    if summary.stalls:
        worst = max(summary.stalls, key=lambda st: st.late_ms)
        console.print(
            f"late starts (> half a bin): {len(summary.stalls)}, the worst {worst.late_ms:.1f} ms "
            f"at {worst.t_s:.2f} s (all listed in the summary JSON under 'stalls')"
        )
    if summary.extra is not None:
        links = summary.extra.links
        prefix = f"all {len(links)} links: " if links else ""
        console.print(prefix + summary.extra.delivery.line())
        for row in links:  # an implant: one line per array link
            console.print(row.line())
    for k, v in (extra or {}).items():
        console.print(f"{k}: {v}")
