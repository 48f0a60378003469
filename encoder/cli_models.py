"""Commands of `encoder` (models): `npe models`, `npe train`, `npe evaluate`.

Heavy libraries (torch, matplotlib) are imported inside the commands so `npe --help` stays
fast. Expected errors print one red line and exit with code 2; every command shows rich
progress and writes JSON beside its human summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from encoder.training.config import train_default
from npe_config import config_option, write_effective_config
from npe_console import QuietProgress, make_console
from npe_errors import fail

app = typer.Typer(no_args_is_help=True)
console = make_console()


def _parse_cells(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise fail(f"--cells: expected comma-separated cell indices, got {text!r}") from exc


@app.command("models")
def models_command(
    json_out: Path | None = typer.Option(None, "--json", help="Also write the table as JSON."),
    height: int = typer.Option(32, help="Frame height (px) for the parameter counts."),
    width: int = typer.Option(32, help="Frame width (px)."),
    frame_rate: float = typer.Option(100.0, "--frame-rate", help="Frame rate (Hz) of the input."),
    window_ms: float = typer.Option(250.0, "--window-ms", help="Stimulus history (ms)."),
    cells: int = typer.Option(32, help="Number of cells for the population models."),
) -> None:
    """List every model with its parameter count at the default input size."""
    from rich.table import Table

    from encoder.models import MODEL_REGISTRY, ModelConfigError, build_model

    rows: list[dict[str, Any]] = []
    models = []
    for name, spec in MODEL_REGISTRY.items():
        n_cells = 1 if name == "single-cnn" else cells
        try:
            model = build_model(
                name, {"window_ms": window_ms}, n_cells, (height, width), frame_rate
            )
        except ModelConfigError as exc:
            raise fail(str(exc)) from exc
        models.append(model)
        rows.append(
            {
                "model": name,
                "parameters": model.n_parameters(),
                "original_parameters": spec.original_params,
                "n_cells": n_cells,
                "loss": spec.default_loss,
                "ema_decay": spec.default_ema_decay,
                "stateful": model.stateful,
                "ratemap": model.ratemap,
                "summary": spec.summary,
            }
        )
    window = models[0].window_frames
    table = Table(
        title=f"npe models ({height}×{width} px, {window_ms:g} ms = {window} frames at "
        f"{frame_rate:g} Hz, {cells} cells)"
    )
    for col in ("model", "parameters", "original", "loss", "stateful", "rate maps"):
        table.add_column(col, justify="right" if col == "parameters" else "left", no_wrap=True)
    table.caption = "summaries: `npe models --json FILE`"
    for row in rows:
        table.add_row(
            str(row["model"]),
            f"{row['parameters']:,}",
            str(row["original_parameters"]),
            str(row["loss"]),
            "yes" if row["stateful"] else "",
            "yes" if row["ratemap"] else "",
        )
    console.print(table)
    if json_out is not None:
        payload = {
            "frame_shape": [height, width],
            "frame_rate_hz": frame_rate,
            "window_ms": window_ms,
            "window_frames": window,
            "models": rows,
        }
        json_out.write_text(json.dumps(payload, indent=2) + "\n")


def _default(name: str) -> Any:
    """A `npe train` option's default: the TrainConfig field's, defined once there."""
    return train_default(name)


@app.command("train")
def train_command(
    ctx: typer.Context,
    config_file: Path | None = config_option(),
    data: list[Path] = typer.Option(
        ...,
        "--data",
        help="Recording (.h5) to train on; repeat for several sessions (one shared core, "
        "one readout per session).",
    ),
    model: str = typer.Option(..., "--model", help="Model name (see `npe models`)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoint, metrics)."),
    loss: str | None = typer.Option(
        _default("loss"), help="poisson | bce | mse (default: the model's)."
    ),
    max_epochs: int = typer.Option(_default("max_epochs"), "--max-epochs"),
    patience: int = typer.Option(
        _default("patience"), help="Early stopping: epochs without val-loss improvement."
    ),
    batch_size: int = typer.Option(
        _default("batch_size"), "--batch-size", help="Chunks per optimiser step."
    ),
    chunk_ms: float = typer.Option(
        _default("chunk_ms"),
        "--chunk-ms",
        help="Predicted stimulus time per chunk (ms; 64 frames at 100 Hz).",
    ),
    epoch_ms: float | None = typer.Option(
        _default("epoch_ms"),
        "--epoch-ms",
        help="Training stimulus time per epoch (ms, random subset; default all).",
    ),
    lr: float = typer.Option(_default("lr"), help="Adam learning rate."),
    lr_decay: float = typer.Option(
        _default("lr_decay"),
        "--lr-decay",
        help="Multiply the learning rate by this when validation loss stalls (1 = constant).",
    ),
    lr_decay_patience: int = typer.Option(
        _default("lr_decay_patience"),
        "--lr-decay-patience",
        help="Epochs without improvement before a decay.",
    ),
    weight_decay: float = typer.Option(
        _default("weight_decay"),
        "--weight-decay",
        help="Decoupled weight decay per step (AdamW; 0 = Adam).",
    ),
    ema_decay: float | None = typer.Option(
        _default("ema_decay"),
        "--ema-decay",
        help="Keep and validate a moving average of the weights, decay per step "
        "(0 = off; default: the model's own, in `npe models --json`).",
    ),
    max_minutes: float | None = typer.Option(
        _default("max_minutes"), "--max-minutes", help="Stop after this much wall time."
    ),
    seed: int = typer.Option(_default("seed"), help="Seed (weights init, chunk order, noise)."),
    cells: str | None = typer.Option(
        _default("cells"), help="Comma-separated cell indices (default all)."
    ),
    device: str = typer.Option(_default("device"), help="cpu or cuda[:N]."),
    init_from: Path | None = typer.Option(
        _default("init_from"),
        "--init-from",
        help="Run directory to start from (transfer learning).",
    ),
    freeze: str = typer.Option(
        _default("freeze"), help="none | core (keep the conv layers of --init-from fixed)."
    ),
    threads: int = typer.Option(_default("threads"), help="torch CPU threads."),
    resume: bool = typer.Option(_default("resume"), help="Continue an interrupted run in --out."),
    prefetch: int = typer.Option(
        _default("prefetch"),
        "--prefetch",
        help="Batches built ahead on a background thread (0 = in line).",
    ),
    model_config_json: str | None = typer.Option(
        None,
        "--model-config",
        help="Model config overrides as JSON, e.g. '{\"hidden\": 64}' (default: none).",
    ),
) -> None:
    """Train a model (Adam, early stopping, best checkpoint kept; torchrun-aware)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from encoder.checkpoint import CheckpointError
    from encoder.models import ModelConfigError
    from encoder.recording import RecordingFormatError
    from encoder.train import (
        EpochMetrics,
        EpochStarted,
        StepDone,
        TrainConfig,
        TrainError,
        TrainEvent,
        dist_info,
        train,
    )
    from hardware.untrusted_json import UntrustedFileError, parse_untrusted_json

    try:
        model_config = (
            parse_untrusted_json(model_config_json, source="--model-config")
            if model_config_json
            else {}
        )
    except UntrustedFileError as exc:
        raise fail(exc) from exc
    if not isinstance(model_config, dict):
        raise fail("--model-config: expected a JSON object")
    cfg = TrainConfig(
        model=model,
        model_config=model_config,
        loss=loss,
        lr=lr,
        lr_decay=lr_decay,
        lr_decay_patience=lr_decay_patience,
        weight_decay=weight_decay,
        ema_decay=ema_decay,
        batch_size=batch_size,
        chunk_ms=chunk_ms,
        max_epochs=max_epochs,
        epoch_ms=epoch_ms,
        patience=patience,
        max_minutes=max_minutes,
        seed=seed,
        cells=_parse_cells(cells),
        device=device,
        init_from=str(init_from) if init_from else None,
        freeze=freeze,
        threads=threads,
        resume=resume,
        prefetch=prefetch,
    )
    show = dist_info().rank == 0
    progress = QuietProgress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]:.4f}  val loss {task.fields[val_loss]:.4f}  val r {task.fields[val_pcc]:.3f}"
        ),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
    )
    task = progress.add_task(
        "train", total=None, epoch=0, loss=float("nan"), val_loss=float("nan"), val_pcc=float("nan")
    )

    fields: dict[str, float] = {
        "loss": float("nan"),
        "val_loss": float("nan"),
        "val_pcc": float("nan"),
    }

    def on_event(event: TrainEvent) -> None:
        if isinstance(event, EpochStarted):  # reset() replaces all fields: pass the last on
            # The bar appears with the first epoch, not before: a recording or checkpoint
            # that is refused ends in its one error line, with no empty bar above it.
            if not progress.live.is_started:
                progress.start()
            progress.reset(
                task,
                total=event.steps,
                epoch=event.epoch,
                loss=fields["loss"],
                val_loss=fields["val_loss"],
                val_pcc=fields["val_pcc"],
            )
        elif isinstance(event, StepDone):
            fields["loss"] = event.loss
            progress.update(task, advance=1, loss=event.loss)
        elif isinstance(event, EpochMetrics):
            fields["val_loss"], fields["val_pcc"] = event.val_loss, event.val_pcc
            progress.update(task, val_loss=event.val_loss, val_pcc=event.val_pcc)
            if show:
                per = (
                    "  ("
                    + ", ".join(f"{s.session} r {s.val_pcc:.3f}" for s in event.sessions)
                    + ")"
                    if len(event.sessions) > 1
                    else ""
                )
                progress.console.print(
                    f"epoch {event.epoch}: train {event.train_loss:.4f}  "
                    f"val {event.val_loss:.4f}  val r {event.val_pcc:.3f}{per}"
                )

    try:
        result = train(data, out, cfg, progress=on_event)
    except (TrainError, ModelConfigError, RecordingFormatError, CheckpointError, ValueError) as exc:
        progress.stop()  # the bar's last state (if it showed), then the error line
        raise fail(str(exc)) from exc
    finally:
        progress.stop()  # QuietProgress: a no-op when stopped or never started
    if show:
        summary = {
            "run_dir": str(result.run_dir),
            "model": model,
            "sessions": list(result.sessions),
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "epochs": len(result.epochs),
            "stopped": result.stopped,
            "minutes": result.minutes,
            "parameters": result.n_parameters,
        }
        (Path(out) / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_effective_config(Path(out), ctx)
        console.print(
            f"[green]done[/green]: {model} best epoch {result.best_epoch} "
            f"(val loss {result.best_val_loss:.4f}), {result.stopped}, {result.minutes:.1f} min → {out}"
        )


@app.command("evaluate")
def evaluate_command(
    run_dir: Path = typer.Argument(..., help="Training run directory (checkpoint)."),
    data: list[Path] = typer.Option(
        ...,
        "--data",
        help="Recording (.h5) with a test split (and repeats). Multi-session checkpoint: one "
        "per session, matched by the recording's session name (its `session` attribute, else "
        "the file stem) or by order.",
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Where to write the metrics JSON (default RUN_DIR/evaluation.json)."
    ),
    figures: Path | None = typer.Option(
        None, "--figures", help="Directory for PNG figures (default RUN_DIR/figures)."
    ),
    no_figures: bool = typer.Option(False, "--no-figures", help="Skip the PNG figures."),
    max_noise_ratio: float = typer.Option(
        0.5,
        "--max-noise-ratio",
        help="FEVE leaves out cells whose noise variance exceeds this fraction of the total.",
    ),
    smooth_ms: float = typer.Option(
        50.0, "--smooth-ms", help="Boxcar smoothing before correlating (0 = raw 10 ms bins)."
    ),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
    threads: int = typer.Option(2, help="torch CPU threads."),
) -> None:
    """Evaluate a trained model: PCC with the trial average, FEV, ceiling, figures."""
    import torch
    from rich.progress import SpinnerColumn, TextColumn

    from encoder import evaluate as ev
    from encoder.checkpoint import (
        CheckpointError,
        MultiSessionMeta,
        load_checkpoint,
        load_multisession_checkpoint,
        read_any_meta,
    )
    from encoder.recording import RecordingFormatError, read_recording
    from encoder.train import TrainError, check_device

    torch.set_num_threads(max(1, threads))
    try:
        check_device(device)
        multi = isinstance(read_any_meta(run_dir), MultiSessionMeta)
        if not multi and len(data) != 1:
            raise ev.EvaluationError(
                f"--data: a single-session checkpoint is evaluated on one recording, got {len(data)}"
            )
        with QuietProgress(
            SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True
        ) as progress:
            task = progress.add_task("loading checkpoint and recording")
            fig_dir = None if no_figures else (figures or run_dir / "figures")
            written: list[Path] = []
            if multi:
                mckpt = load_multisession_checkpoint(run_dir)
                matched = ev.match_sessions(
                    mckpt.model.sessions, [(str(p), read_recording(p)) for p in data]
                )
                progress.update(task, description="predicting every session's test split")
                mresult, mpreds = ev.evaluate_sessions(
                    mckpt, matched, smooth_ms, device, max_noise_ratio
                )
                written.append(ev.write_result(mresult, json_out or run_dir / "evaluation.json"))
                if fig_dir is not None:
                    progress.update(task, description="drawing figures")
                    for session, (_, rec) in matched.items():
                        r = next(r for r in mresult.sessions if r.session == session)
                        view = load_checkpoint(run_dir, session)
                        written.extend(
                            _figures(view, rec, r, mpreds[session], fig_dir / session, None)
                        )
            else:
                ckpt = load_checkpoint(run_dir)
                rec = read_recording(data[0])
                progress.update(task, description="predicting test split and repeats")
                result, preds = ev.evaluate(
                    ckpt,
                    rec,
                    data_name=str(data[0]),
                    smooth_ms=smooth_ms,
                    device=device,
                    max_noise_ratio=max_noise_ratio,
                )
                written.append(ev.write_result(result, json_out or run_dir / "evaluation.json"))
                if fig_dir is not None:
                    progress.update(task, description="drawing figures")
                    written.extend(
                        _figures(
                            ckpt,
                            rec,
                            result,
                            preds,
                            fig_dir,
                            lambda d: progress.update(task, description=d),
                        )
                    )
    except (CheckpointError, RecordingFormatError, ev.EvaluationError, TrainError) as exc:
        raise fail(str(exc)) from exc

    if multi:
        _print_sessions(mresult)
    else:
        _print_single(result, data[0].name)
    for path in written:
        console.print(f"wrote {path}")


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _figures(ckpt: Any, rec: Any, result: Any, preds: Any, fig_dir: Path, say: Any) -> list[Path]:
    """Traces, correlation histogram, first-layer filters and receptive fields of one model."""
    from encoder import evaluate as ev
    from encoder import figures as fig
    from encoder.models.ln import spike_triggered_average
    from encoder.recording import stimulus_as_contrast

    fig_dir.mkdir(parents=True, exist_ok=True)
    model = ckpt.model.cpu()
    written = [
        fig.traces_figure(result, preds, fig_dir / "traces.png", rec.frame_rate_hz),
        fig.histogram_figure(result, fig_dir / "correlation_histogram.png"),
        fig.filters_figure(
            model.first_layer_filters().numpy(),
            fig_dir / "first_layer_filters.png",
            f"{ckpt.meta.model_name}: first-layer filters",
        ),
    ]
    if say is not None:
        say("model RFs from white noise vs data STAs")
    cells = ev.cell_indices(ckpt, rec)
    ranges = rec.splits["train"][:1].copy()
    ranges[0, 1] = min(ranges[0, 1], ranges[0, 0] + 20000)
    lo, hi = int(ranges[0, 0]), int(ranges[0, 1])
    data_sta = spike_triggered_average(
        stimulus_as_contrast(rec.stimulus[lo:hi]),
        rec.responses[lo:hi][:, cells],
        ranges - lo,
        model.window_frames,
    )
    model_sta = fig.model_white_noise_sta(model, rec.frame_shape)
    written.append(
        fig.rf_figure(
            model_sta,
            data_sta,
            result.cell_ids,
            result.cell_types,
            fig_dir / "receptive_fields.png",
        )
    )
    return written


def _print_single(result: Any, data_name: str) -> None:
    from rich.table import Table

    # Two narrow tables (accuracy, then ceilings) so that an 80-column terminal keeps them readable.
    title = f"{result.model} on {data_name} (smoothing {result.smooth_ms:.0f} ms)"
    accuracy = {
        "mean PCC": _fmt(result.mean_pcc),
        "mean FEV": _fmt(result.mean_fev),
        f"FEVE ({result.n_cells_feve} cells)": _fmt(result.mean_feve),
        "median gain": _fmt(result.median_gain),
        "median |rate err|": _fmt(result.median_abs_mean_rate_error),
        "test PCC": _fmt(result.test_pcc),
    }
    ceilings = {
        "truth ceiling": _fmt(result.ceiling_pcc),
        "PCC / ceiling": _fmt(result.fraction_of_ceiling),
        "split-half": _fmt(result.split_half_ceiling),
        "oracle": _fmt(result.oracle_ceiling),
        "cells": str(result.n_cells),
        "repeats": str(result.n_repeats),
    }
    for heading, values in ((title, accuracy), ("noise ceilings", ceilings)):
        table = Table(title=heading)
        for col in values:
            table.add_column(col, justify="right")
        table.add_row(*values.values())
        console.print(table)


def _print_sessions(result: Any) -> None:
    """One row per session and a pooled row (all cells of all sessions)."""
    from rich.table import Table

    table = Table(
        title=f"{result.model}, per session and pooled (smoothing {result.smooth_ms:.0f} ms)"
    )
    for col in ("session", "cells", "mean PCC", "FEVE", "test PCC", "PCC / ceiling", "split-half"):
        table.add_column(col, justify="left" if col == "session" else "right")
    rows = [(r.session, r) for r in result.sessions] + [("pooled", result.pooled)]
    for label, r in rows:
        table.add_row(
            label,
            str(r.n_cells),
            _fmt(r.mean_pcc),
            f"{_fmt(r.mean_feve)} ({r.n_cells_feve})",
            _fmt(r.test_pcc),
            _fmt(r.fraction_of_ceiling),
            _fmt(r.split_half_ceiling),
        )
    console.print(table)
