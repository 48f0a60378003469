"""Commands of `encoder` (data); composed into `npe` through encoder.cli.

`npe simulate`, `npe dataset info|validate|import|export`, `npe sta`. Heavy work (and matplotlib) is imported
inside the commands so `npe --help` stays fast. Expected errors print one red line and exit
non-zero; every command writes machine-readable JSON beside its human output.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from npe_console import QuietProgress, make_console
from npe_errors import fail

if TYPE_CHECKING:
    from encoder.recording import Recording

app = typer.Typer(no_args_is_help=True)
dataset_app = typer.Typer(
    no_args_is_help=True, help="Inspect and validate npe recording files (HDF5, format v1)."
)
app.add_typer(dataset_app, name="dataset")

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
console = make_console()


def _about(file: Path, exc: Exception) -> str:
    """'FILE: reason', without repeating the file when the reason already starts with it."""
    text = str(exc)
    return text if text.startswith(str(file)) else f"{file}: {text}"


def _finite(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 6)


def describe_recording(recording: Recording, path: Path | None = None) -> dict[str, Any]:
    """JSON-able summary: geometry, counts per split, cells per type, rates, repeats."""
    import numpy as np

    fr = recording.frame_rate_hz
    types: dict[str, int] = {}
    for t in recording.cells.types:
        types[t] = types.get(t, 0) + 1
    splits = {
        name: {
            "ranges": int(ranges.shape[0]),
            "frames": recording.split_frames(name),
            "minutes": round(recording.split_frames(name) / fr / 60.0, 4),
        }
        for name, ranges in sorted(
            recording.splits.items(),
            key=lambda kv: (kv[0] not in SPLIT_ORDER, SPLIT_ORDER.get(kv[0], 0), kv[0]),
        )
    }
    rates = recording.responses.mean(axis=0, dtype=np.float64) * fr
    info: dict[str, Any] = {
        "file": str(path) if path is not None else None,
        "format": "npe.recording",
        "version": 1,
        "source": recording.source,
        "frame_rate_hz": fr,
        "pixel_size_deg": recording.pixel_size_deg,
        "n_frames": recording.n_frames,
        "duration_s": round(recording.n_frames / fr, 3),
        "frame_shape": list(recording.frame_shape),
        "stimulus_kind": recording.stimulus_kind,
        "n_cells": recording.n_cells,
        "cell_types": types,
        "n_spikes": int(recording.responses.sum(dtype=np.int64)),
        "mean_rate_hz": _finite(float(rates.mean())),
        "splits": splits,
        "repeats": None,
        "has_truth": recording.truth_rates_hz is not None,
    }
    if recording.repeats is not None:
        info["repeats"] = {
            "n_repeats": recording.repeats.n_repeats,
            "frames": int(recording.repeats.stimulus.shape[0]),
            "has_truth": recording.repeats.truth_rates_hz is not None,
        }
    return info


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", help="Recording file to write (.h5)."),
    stimulus: str = typer.Option("natural", help="natural | pink | whitenoise | bars | gratings."),
    duration_scale: float = typer.Option(
        0.125, help="Fraction of the original 50/7/7 min train/val/test."
    ),
    seed: int = typer.Option(0, help="Seeds retina, stimulus and spikes (same seed, same file)."),
    frame_rate: float = typer.Option(100.0, help="Frame rate in Hz (120 = original pink noise)."),
    size: int = typer.Option(32, help="Frame height and width in pixels."),
    pixel_size_deg: float = typer.Option(0.25, help="Visual angle of one pixel (degrees)."),
    repeats: int = typer.Option(10, help="Repeats of the test clip."),
    repeat_seconds: float = typer.Option(20.0, help="Length of the repeated clip (s)."),
) -> None:
    """Simulate a recording from the synthetic retina (known ground truth)."""
    import numpy as np

    from encoder.recording import write_recording
    from encoder.synthetic import SimulationConfig, SimulationConfigError, simulate
    from encoder.synthetic.simulate import truth_ceiling_pcc
    from encoder.windows import window_frames_for

    try:
        config = SimulationConfig(
            stimulus=stimulus,
            duration_scale=duration_scale,
            seed=seed,
            frame_rate_hz=frame_rate,
            height=size,
            width=size,
            pixel_size_deg=pixel_size_deg,
            n_repeats=repeats,
            repeat_seconds=repeat_seconds,
        )
    except SimulationConfigError as exc:
        raise fail(str(exc), code=2) from None
    t0 = time.perf_counter()
    with console.status("simulating…") as status:

        def progress(stage: str) -> None:
            status.update(f"simulating: {stage}")
            console.log(stage)

        sim = simulate(config, progress=progress)
        status.update(f"writing {out}")
        write_recording(sim.recording, out)
    elapsed = time.perf_counter() - t0
    rec = sim.recording
    ceiling = truth_ceiling_pcc(rec, window_frames_for(rec.frame_rate_hz))
    summary = describe_recording(rec, out)
    summary["config"] = json.loads(config.to_json())
    finite = ceiling[np.isfinite(ceiling)]
    summary["ceiling_pcc_mean"] = _finite(float(finite.mean())) if finite.size else None
    summary["ceiling_pcc_per_cell"] = [_finite(float(c)) for c in ceiling]
    summary["truth_rate_range_hz"] = [
        float(rec.truth_rates_hz.min()) if rec.truth_rates_hz is not None else None,
        float(rec.truth_rates_hz.max()) if rec.truth_rates_hz is not None else None,
    ]
    summary["elapsed_s"] = round(elapsed, 3)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(summary, indent=2))
    console.print(
        f"[green]wrote[/green] {out}: {rec.n_frames} frames of {config.stimulus} "
        f"{rec.frame_shape[0]}×{rec.frame_shape[1]} px at {rec.frame_rate_hz:g} Hz, "
        f"{rec.n_cells} cells, {rec.repeats.n_repeats if rec.repeats else 0} repeats; "
        f"ceiling r = {summary['ceiling_pcc_mean']}; {elapsed:.1f} s (summary: {json_path})"
    )


@dataset_app.command("info")
def dataset_info(
    file: Path = typer.Argument(..., help="Recording (.h5)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Summarise a recording: geometry, splits, cells, rates, repeats."""
    from rich.table import Table

    from encoder.recording import RecordingFormatError, read_recording

    try:
        rec = read_recording(file)
    except RecordingFormatError as exc:
        raise fail(_about(file, exc)) from None
    info = describe_recording(rec, file)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table(title=f"{file}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("source", info["source"])
    table.add_row(
        "stimulus",
        f"{info['n_frames']} frames, {info['frame_shape'][0]}×{info['frame_shape'][1]} px "
        f"({info['stimulus_kind']}), {info['frame_rate_hz']:g} Hz, {info['duration_s']:.1f} s, "
        f"{info['pixel_size_deg']:g}°/px",
    )
    for name, s in info["splits"].items():
        table.add_row(f"split {name}", f"{s['frames']} frames ({s['minutes']:.2f} min)")
    table.add_row(
        "cells",
        f"{info['n_cells']}: " + ", ".join(f"{n} {t}" for t, n in info["cell_types"].items()),
    )
    table.add_row("spikes", f"{info['n_spikes']} (mean {info['mean_rate_hz']} Hz)")
    rep = info["repeats"]
    table.add_row("repeats", f"{rep['n_repeats']} × {rep['frames']} frames" if rep else "none")
    table.add_row("truth rates", "yes" if info["has_truth"] else "no")
    console.print(table)


@dataset_app.command("validate")
def dataset_validate(
    file: Path = typer.Argument(..., help="Recording (.h5)."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON."),
) -> None:
    """Check a recording against format v1; exit 1 with the reason if it breaks it."""
    from encoder.recording import RecordingFormatError, read_recording

    try:
        rec = read_recording(file)
    except RecordingFormatError as exc:
        if as_json:
            typer.echo(json.dumps({"file": str(file), "valid": False, "reason": str(exc)}))
        raise fail(f"invalid: {_about(file, exc)}") from None
    if as_json:
        typer.echo(json.dumps({"file": str(file), "valid": True, "reason": None}))
        return
    console.print(
        f"[green]valid[/green]: {file} ({rec.n_frames} frames, {rec.n_cells} cells)",
        highlight=False,
    )


def _sta_figure(
    path: Path,
    spatial: Any,
    centers: Any,
    ids: tuple[str, ...],
    types: tuple[str, ...],
    true_centers: Any | None,
) -> None:
    """PNG grid: each cell's spatial STA profile (red ON-like, blue OFF-like), centres marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(ids)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for c in range(n):
        ax = axes.flat[c]
        img = spatial[c]
        lim = float(np.abs(img).max()) or 1.0
        ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.plot(centers[c, 1], centers[c, 0], "k+", ms=8)
        if true_centers is not None:
            ax.plot(true_centers[c, 1], true_centers[c, 0], "go", ms=5, mfc="none")
        ax.set_xlim(-0.5, img.shape[1] - 0.5)  # markers outside the frame must not shrink it
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
        ax.set_title(f"{ids[c]} {types[c]}", fontsize=6)
    fig.suptitle("spike-triggered averages (+ estimated centre, o true centre)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@app.command()
def sta(
    file: Path = typer.Argument(..., help="Recording (.h5)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default FILE_sta/)."),
    window_ms: float = typer.Option(250.0, help="STA window length in ms."),
) -> None:
    """Spike-triggered average of every cell: PNG grid, arrays (.npz) and centres (JSON)."""
    import numpy as np

    from encoder.recording import RecordingFormatError, read_recording
    from encoder.sta import compute_sta
    from encoder.synthetic.simulate import retina_from_recording
    from encoder.windows import window_frames_for

    out_dir = out if out is not None else file.with_name(file.stem + "_sta")
    with console.status(f"reading {file}") as status:
        try:
            rec = read_recording(file)
            window = window_frames_for(rec.frame_rate_hz, window_ms)
        except (RecordingFormatError, ValueError) as exc:
            raise fail(_about(file, exc)) from None
        status.update(f"computing STAs of {rec.n_cells} cells over {rec.n_frames} frames")
        result = compute_sta(rec, window)
        true_px = None
        try:
            retina = retina_from_recording(rec)
            true_px = np.array([c.center_px for c in retina.cells])
        except ValueError:
            pass  # not synthetic: no ground truth to compare with
        status.update("writing figure and arrays")
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            out_dir / "sta.npz",
            sta=result.sta,
            spatial=result.spatial,
            temporal=result.temporal,
            polarity=result.polarity,
            spike_counts=result.spike_counts,
            center_px=result.center_px,
            center_deg=result.center_deg,
            ids=np.array(rec.cells.ids),
            frame_rate_hz=np.float64(rec.frame_rate_hz),
        )
        _sta_figure(
            out_dir / "sta.png",
            result.spatial,
            result.center_px,
            rec.cells.ids,
            rec.cells.types,
            true_px,
        )
    cells = []
    for c in range(rec.n_cells):
        entry: dict[str, Any] = {
            "id": rec.cells.ids[c],
            "type": rec.cells.types[c],
            "n_spikes": int(result.spike_counts[c]),
            "polarity": int(result.polarity[c]),
            "center_px": [_finite(v) for v in result.center_px[c]],
            "center_deg": [_finite(v) for v in result.center_deg[c]],
        }
        if true_px is not None:
            entry["true_center_px"] = [round(float(v), 4) for v in true_px[c]]
            entry["center_error_px"] = _finite(float(np.hypot(*(result.center_px[c] - true_px[c]))))
        cells.append(entry)
    report = {
        "file": str(file),
        "window_frames": window,
        "frame_rate_hz": rec.frame_rate_hz,
        "pixel_size_deg": rec.pixel_size_deg,
        "cells": cells,
    }
    (out_dir / "sta.json").write_text(json.dumps(report, indent=2))
    msg = f"[green]wrote[/green] {out_dir}/sta.png, sta.npz, sta.json ({rec.n_cells} cells"
    if true_px is not None:
        errors = [e["center_error_px"] for e in cells if e.get("center_error_px") is not None]
        msg += f"; centre error vs truth max {max(errors):.2f} px" if errors else ""
    console.print(msg + ")", highlight=False)


def _parse_cells(text: str | None) -> tuple[int, ...] | None:
    """'0,3,5-7' → (0, 3, 5, 6, 7); None keeps every cell."""
    if text is None:
        return None
    cells: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"--cells: {part.strip()!r} is not an index or a range like 5-7")
        cells.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return tuple(cells)


@dataset_app.command("import")
def dataset_import(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="deep-retina | goldin2022 | nwb."),
    sources: list[Path] = typer.Argument(..., metavar="SRC...", help="Source file(s), in order."),
    out: Path = typer.Option(..., "--out", help="Recording to write (.h5)."),
    session: str | None = typer.Option(None, help="Session name (default: from the file names)."),
    cells: str | None = typer.Option(None, help="Cells to keep: 0-based indices, e.g. 0,3,5-7."),
    pixel_size_deg: float | None = typer.Option(
        None, help="Degrees per stimulus pixel (required when the source does not store it)."
    ),
    val_fraction: float = typer.Option(0.1, help="Last fraction of each training block → val."),
    frame_rate_hz: float | None = typer.Option(
        None, help="Override the frame rate (goldin2022 has no time dataset; default 3.33 Hz)."
    ),
    series: str | None = typer.Option(None, help="nwb: the ImageSeries to use if several."),
    centers_from_sta: bool = typer.Option(
        False, "--centers-from-sta", help="Fill unknown cell centres from the STA."
    ),
) -> None:
    """Import a public dataset into an npe recording (streamed, with provenance, validated)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn

    from encoder.importers import ImportOptions, import_dataset
    from encoder.recording import RecordingFormatError

    t0 = time.perf_counter()
    try:
        options = ImportOptions(
            session=session,
            cells=_parse_cells(cells),
            pixel_size_deg=pixel_size_deg,
            val_fraction=val_fraction,
            frame_rate_hz=frame_rate_hz,
            series=series,
            centers_from_sta=centers_from_sta,
        )
        with QuietProgress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=make_console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task(f"importing {fmt}", total=None)

            def progress(stage: str, done: int, total: int) -> None:
                bar.update(task, description=stage, completed=done, total=total or None)

            path = import_dataset(fmt, sources, out, options, progress)
    except (RecordingFormatError, ValueError) as exc:
        raise fail(str(exc), code=2) from None
    except OSError as exc:  # unreadable chunk, full disk: one line, not a traceback
        raise fail(f"{out}: {exc}") from None
    import h5py  # a summary from shapes and attributes: never loads the frames again

    with h5py.File(path, "r") as f:
        summary: dict[str, Any] = {
            "file": str(path),
            "format": fmt,
            "n_frames": int(f["stimulus"].shape[0]),
            "frame_shape": [int(x) for x in f["stimulus"].shape[1:]],
            "frame_rate_hz": float(f.attrs["frame_rate_hz"]),
            "pixel_size_deg": float(f.attrs["pixel_size_deg"]),
            "n_cells": int(f["responses"].shape[1]),
            "splits": {k: v[()].tolist() for k, v in f["splits"].items()},
            "repeats": int(f["repeats/responses"].shape[0]) if "repeats" in f else 0,
            "provenance": json.loads(f.attrs["provenance"]),
        }
    summary["elapsed_s"] = round(time.perf_counter() - t0, 3)
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps(summary, indent=2))
    console.print(
        f"[green]imported[/green] {fmt} → {path}: {summary['n_frames']} frames "
        f"{summary['frame_shape'][0]}×{summary['frame_shape'][1]} px at "
        f"{summary['frame_rate_hz']:g} Hz, {summary['n_cells']} cells; valid v1 "
        f"({summary['elapsed_s']:.1f} s, summary: {json_path})",
        highlight=False,
    )


@dataset_app.command("export")
def dataset_export(
    file: Path = typer.Argument(..., help="Recording (.h5)."),
    out: Path = typer.Option(..., "--out", help="File to write."),
    fmt: str = typer.Option("nwb", "--format", help="nwb (Neurodata Without Borders, for DANDI)."),
) -> None:
    """Export a recording for sharing (NWB: stimulus ImageSeries, Units, trials)."""
    from encoder.importers import export_nwb
    from encoder.recording import RecordingFormatError

    if fmt != "nwb":
        raise fail(f"--format {fmt!r}: expected nwb", code=2)
    try:
        export_nwb(file, out)
    except RecordingFormatError as exc:
        raise fail(_about(file, exc), code=2) from None
    console.print(f"[green]exported[/green] {file} → {out} (NWB)", highlight=False)
