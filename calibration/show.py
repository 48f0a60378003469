"""Human views of a calibration file: a rich table and a PNG map of phosphene positions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from hardware.calibration_file import PatientCalibration


def summary_table(cal: PatientCalibration) -> tuple[Table, dict[str, Any]]:
    """One row per electrode, plus a JSON-able summary of the same values."""
    table = Table(title=f"patient {cal.patient_id} — arrays {', '.join(cal.arrays)}")
    for col in (
        "electrode",
        "on",
        "threshold µA",
        "95% CI",
        "max µA",
        "brightness scale/max",
        "phosphene °",
        "± °",
        "size °",
        "trials",
    ):
        table.add_column(col)
    rows = []
    for e in cal.electrodes:
        ci = e.threshold_ci_ua
        table.add_row(
            e.electrode_id,
            "✓" if e.enabled else "[red]off[/]",
            f"{e.threshold_ua:.1f}",
            f"{ci[0]:.1f}–{ci[1]:.1f}" if ci else "",
            f"{e.max_comfortable_ua:.0f}",
            f"{e.brightness.scale_ua:.1f} / {e.brightness.max_brightness:.2f}",
            f"({e.phosphene_deg[0]:.2f}, {e.phosphene_deg[1]:.2f})",
            f"{e.phosphene_ci_deg:.2f}" if e.phosphene_ci_deg is not None else "",
            f"{e.phosphene_size_deg:.2f}",
            str(len(e.trials)),
        )
        rows.append(
            {
                "electrode": e.electrode_id,
                "enabled": e.enabled,
                "threshold_ua": e.threshold_ua,
                "threshold_ci_ua": list(ci) if ci else None,
                "max_comfortable_ua": e.max_comfortable_ua,
                "brightness": e.brightness.model_dump(),
                "phosphene_deg": list(e.phosphene_deg),
                "phosphene_ci_deg": e.phosphene_ci_deg,
                "phosphene_size_deg": e.phosphene_size_deg,
                "n_trials": len(e.trials),
            }
        )
    summary = {
        "patient_id": cal.patient_id,
        "arrays": list(cal.arrays),
        "n_electrodes": len(cal.electrodes),
        "n_enabled": sum(e.enabled for e in cal.electrodes),
        "procedures": [p.model_dump(mode="json") for p in cal.procedures],
        "electrodes": rows,
    }
    return table, summary


def render_map(cal: PatientCalibration, png: Path) -> Path:
    """Phosphene positions (circles of the phosphene size, colour = threshold) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Circle

    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    thr = np.array([e.threshold_ua for e in cal.electrodes])
    xy = np.array([e.phosphene_deg for e in cal.electrodes], dtype=np.float64).reshape(-1, 2)
    on = np.array([e.enabled for e in cal.electrodes], dtype=bool)
    cmap = plt.get_cmap("viridis")
    lo, hi = (float(thr[on].min()), float(thr[on].max())) if on.any() else (0.0, 1.0)
    for e, p, t, en in zip(cal.electrodes, xy, thr, on, strict=True):
        color = cmap((t - lo) / max(hi - lo, 1e-9)) if en else (0.6, 0.6, 0.6, 0.5)
        ax.add_patch(Circle((p[0], p[1]), e.phosphene_size_deg / 2, color=color, alpha=0.6))
    ax.scatter(xy[on, 0], xy[on, 1], s=4, c="k", label="enabled (centre)")
    ax.scatter(xy[~on, 0], xy[~on, 1], s=4, c="0.5", marker="x", label="disabled / untested")
    ci = [e.phosphene_ci_deg for e in cal.electrodes if e.phosphene_ci_deg is not None]
    if ci:
        ax.text(
            0.02, 0.02, f"median 95% position CI ±{float(np.median(ci)):.2f}°",
            transform=ax.transAxes, fontsize=8,
        )  # fmt: skip
    ax.legend(loc="upper right", fontsize=8)
    if xy.size:
        pad = 1.0 + max(e.phosphene_size_deg for e in cal.electrodes)
        ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
        ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label="threshold (µA)")
    ax.set_aspect("equal")
    ax.set_xlabel("x (deg, right +)")
    ax.set_ylabel("y (deg, up +)")
    ax.set_title(f"phosphene map — patient {cal.patient_id} ({int(on.sum())}/{len(on)} enabled)")
    ax.grid(alpha=0.3)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png
