"""Training loop behind `npe train`: Adam, early stopping, best checkpoint, resumable, DDP.

Why it is built this way:
* Chunks instead of single windows (`encoder.batching`): per-frame models compute their
  convolutions once per frame, which keeps the population model within the 2-core budget.
* Early stopping on validation loss with patience, at most 100 epochs by default, best
  checkpoint kept (YADLRetina: 100 epochs with early stopping; REFERENCES).
* Everything a resumed run needs (weights, optimiser, RNG states, counters) is written to
  `train_state.pt` after every epoch; the best model goes to the checkpoint files.
* Deterministic under a seed: one torch seed, one numpy Generator for the chunk order.
* Under torchrun each rank trains on a disjoint share of each epoch's chunks and DDP averages
  gradients; all ranks evaluate the full validation split, so they take identical
  early-stopping decisions; only rank 0 writes.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from encoder.batching import Segment, batches, predict_frames, segments
from encoder.checkpoint import file_sha256, load_checkpoint, make_meta, save_checkpoint
from encoder.distributed import DistInfo, init_distributed, shutdown_distributed
from encoder.errors import EncoderError
from encoder.losses import get_loss
from encoder.models import RetinaModel, build_model, get_spec
from encoder.models.base import RateMapMixin
from encoder.models.ln import LNModel, spike_triggered_average
from encoder.recording import Recording, read_recording
from encoder.timebase import frames_from_ms

TRAIN_STATE_FILE = "train_state.pt"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
TRAIN_CONFIG_FILE = "train_config.json"


class TrainError(EncoderError, ValueError):
    """A training request that cannot run (bad option, missing device, incompatible init)."""


@dataclass(frozen=True)
class TrainConfig:
    """Options of one training run (all of `npe train`'s flags)."""

    model: str
    model_config: dict[str, Any] = field(default_factory=dict)
    loss: str | None = None  # default: the model's own
    lr: float = 1e-3
    # Multiply the learning rate by lr_decay when the validation loss has not improved for
    # lr_decay_patience + 1 epochs (torch's ReduceLROnPlateau); 1.0 = constant rate.
    lr_decay: float = 1.0
    lr_decay_patience: int = 2
    batch_size: int = 8  # chunks per step
    # Durations in ms, turned into frames at the recording's rate (encoder.timebase):
    chunk_ms: float = 640.0  # predicted stimulus time per chunk (64 frames at 100 Hz)
    max_epochs: int = 100
    epoch_ms: float | None = None  # predicted stimulus time per epoch (random subset); None = all
    patience: int = 5
    max_minutes: float | None = None
    seed: int = 0
    cells: tuple[int, ...] | None = None
    device: str = "cpu"
    init_from: str | None = None
    freeze: str = "none"  # "none" | "core"
    threads: int = 2
    resume: bool = False


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_loss: float
    val_pcc: float
    seconds: float
    lr: float = float("nan")  # learning rate used in this epoch


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_val_loss: float
    epochs: list[EpochMetrics]
    minutes: float
    n_parameters: int
    stopped: str  # "early-stopping" | "max-epochs" | "max-minutes" | "closed-form"
    weights_sha256: str = ""  # of the final (not best) weights on this rank: DDP ranks agree


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's state tensors (names + bytes), to compare weights across ranks."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


ProgressFn = Callable[[str, dict[str, float]], None]


class _ChunkRunner(nn.Module):
    """Wraps `forward_chunk` as `forward`, so DDP's gradient hooks see the call."""

    def __init__(self, model: RetinaModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model.forward_chunk(x)
        return out, self.model.penalty().to(out.device)


def check_device(device: str) -> str:
    """'cpu' or 'cuda[:k]'; a clear TrainError when CUDA is asked for and absent."""
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainError(
                f"--device {device} requested but no CUDA GPU is available "
                f"(torch {torch.__version__}, cuda build: {torch.version.cuda})"
            )
        return device
    raise TrainError(f"--device must be 'cpu' or 'cuda[:N]', got {device!r}")


def pearson_per_cell(pred: NDArray[np.floating], obs: NDArray[np.floating]) -> NDArray[np.float64]:
    """Pearson r per column of [n, n_cells] arrays; NaN where either column is constant."""
    p = pred - pred.mean(0)
    o = obs - obs.mean(0)
    denom = np.sqrt((p**2).sum(0) * (o**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * o).sum(0) / denom
    return np.where(denom > 0, r, np.nan).astype(np.float64)


def resolve_cells(recording: Recording, cells: Sequence[int] | None) -> NDArray[np.int64]:
    if cells is None:
        return np.arange(recording.n_cells, dtype=np.int64)
    idx = np.asarray(list(cells), dtype=np.int64)
    bad = [int(c) for c in idx if not 0 <= c < recording.n_cells]
    if idx.size == 0 or bad:
        raise TrainError(
            f"--cells: indices must lie in [0, {recording.n_cells}); got {bad or 'none'}"
        )
    return idx


def _init_selector_from_sta(
    model: RetinaModel, recording: Recording, cells: NDArray[np.int64], max_frames: int = 20000
) -> None:
    """Start each cell's map location at its STA peak (fast, convention-free convergence)."""
    if not isinstance(model, RateMapMixin):
        return
    ranges = recording.splits["train"]
    kept, total = [], 0
    for a, b in ranges.tolist():
        if total >= max_frames:
            break
        b = min(b, a + max_frames - total)
        kept.append((a, b))
        total += b - a
    lo = min(a for a, _ in kept)
    hi = max(b for _, b in kept)
    stim = recording.stimulus[lo:hi]
    from encoder.recording import stimulus_as_contrast

    stim_c = stimulus_as_contrast(stim)
    rel = np.asarray([(a - lo, b - lo) for a, b in kept], dtype=np.int64)
    sta = spike_triggered_average(
        stim_c, recording.responses[lo:hi][:, cells], rel, model.window_frames
    )
    energy = (sta**2).sum((2, 3))
    lag = energy.argmax(1)
    spatial = sta[np.arange(sta.shape[0]), lag]  # [C, H, W]
    flat = np.abs(spatial.reshape(spatial.shape[0], -1)).argmax(1)
    ys, xs = np.unravel_index(flat, spatial.shape[1:])
    s = float(getattr(model.config, "map_stride", 1))
    model.selector.init_locations(ys / s, xs / s, sigma=1.5)
    types = [recording.cells.types[c] for c in cells]
    distinct = list(dict.fromkeys(types))
    if distinct != ["unknown"] and len(distinct) <= int(getattr(model.config, "n_types", 0)):
        model.selector.init_types(np.asarray([distinct.index(t) for t in types], dtype=np.int64))


def _init_output_from_mean(
    model: RetinaModel, recording: Recording, cells: NDArray[np.int64]
) -> None:
    """Start the output at each cell's mean training count, for models that offer it.

    Models with an `init_output_bias(mean_counts [n_cells])` method (the CNN-LSTM) set their
    readout bias from it: starting far from the mean rate gave the CNN-LSTM a large, same-sign
    gradient that saturated its LSTM gates before it learned anything.
    """
    init = getattr(model, "init_output_bias", None)
    if not callable(init):
        return
    ranges = recording.splits["train"].reshape(-1, 2).tolist()
    total = sum(recording.responses[a:b][:, cells].astype(np.float64).sum(0) for a, b in ranges)
    n = sum(b - a for a, b in ranges)
    if n > 0:
        init(np.asarray(total, dtype=np.float64) / n)


def _evaluate_split(
    model: RetinaModel,
    recording: Recording,
    split: str,
    cells: NDArray[np.int64],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    device: str,
    chunk_frames: int,
) -> tuple[float, float]:
    """(loss, mean per-cell Pearson r) on a split's single-trial counts."""
    model.eval()
    frames, pred = predict_frames(
        model,
        recording.stimulus,
        recording.splits[split],
        model.window_frames,
        out_frames=max(chunk_frames, 128),
        device=device,
    )
    obs = recording.responses[frames][:, cells].astype(np.float32)
    loss = float(loss_fn(torch.from_numpy(pred), torch.from_numpy(obs)))
    r = pearson_per_cell(pred, obs)
    return loss, float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")


def _write_metrics(run_dir: Path, epochs: list[EpochMetrics]) -> None:
    rows = [asdict(e) for e in epochs]
    with open(run_dir / METRICS_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(EpochMetrics.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(rows)
    (run_dir / METRICS_JSON).write_text(json.dumps({"epochs": rows}, indent=2) + "\n")


def _apply_init_from(model: RetinaModel, init_from: str, freeze: str) -> None:
    """Copy matching weights from another run; freeze the core if asked (transfer learning)."""
    source = load_checkpoint(init_from)
    if source.meta.model_name != model.name:
        raise TrainError(
            f"--init-from {init_from}: holds model {source.meta.model_name!r}, "
            f"this run trains {model.name!r}"
        )
    src = source.model.state_dict()
    own = model.state_dict()
    copied = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    core_names = {
        f"{mod_name}.{p}"
        for mod_name, mod in model.named_modules()
        if any(mod is m for m in model.core_modules())
        for p, _ in mod.named_parameters()
    }
    missing_core = sorted(core_names - set(copied))
    if freeze == "core" and missing_core:
        raise TrainError(
            f"--init-from {init_from}: core weights {missing_core[:3]} do not match this model "
            "(different window or config); cannot freeze them"
        )
    own.update(copied)
    model.load_state_dict(own)
    if freeze == "core":
        for mod in model.core_modules():
            for p in mod.parameters():
                p.requires_grad_(False)


def _label_types(model: RetinaModel, cell_types: list[str]) -> None:
    if isinstance(model, RateMapMixin):
        labels = model.label_types_from_cells(cell_types)
        model.config = model.config.model_copy(update={"type_labels": tuple(labels)})


def train(
    data: str | Path,
    run_dir: str | Path,
    config: TrainConfig,
    progress: ProgressFn | None = None,
    recording: Recording | None = None,
) -> TrainResult:
    """Train `config.model` on recording `data`, writing checkpoint + metrics into `run_dir`.

    `progress(event, values)` is called with "epoch-start" {epoch, steps}, "step" {loss} and
    "epoch" {epoch, train_loss, val_loss, val_pcc}; the CLI renders it with rich.
    """
    t_start = time.monotonic()
    device = check_device(config.device)
    if config.freeze not in ("none", "core"):
        raise TrainError(f"--freeze must be 'none' or 'core', got {config.freeze!r}")
    if config.freeze == "core" and config.init_from is None:
        raise TrainError("--freeze core needs --init-from RUN_DIR (the weights to keep fixed)")
    if config.batch_size < 1 or config.max_epochs < 1:
        raise TrainError("--batch-size and --max-epochs must be ≥ 1")
    if not config.chunk_ms > 0 or (config.epoch_ms is not None and not config.epoch_ms > 0):
        raise TrainError("--chunk-ms and --epoch-ms must be > 0")
    if not 0.0 < config.lr_decay <= 1.0 or config.lr_decay_patience < 0:
        raise TrainError(
            f"--lr-decay must lie in (0, 1] (got {config.lr_decay}) and "
            f"--lr-decay-patience must be ≥ 0 (got {config.lr_decay_patience})"
        )
    spec = get_spec(config.model)
    loss_name = config.loss or spec.default_loss
    loss_fn = get_loss(loss_name)
    data = Path(data)
    rec = recording if recording is not None else read_recording(data)
    cells = resolve_cells(rec, config.cells)
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    model = build_model(
        config.model, config.model_config, len(cells), rec.frame_shape, rec.frame_rate_hz
    )
    window = model.window_frames
    chunk_frames = frames_from_ms(config.chunk_ms, rec.frame_rate_hz)
    epoch_frames = (
        None if config.epoch_ms is None else frames_from_ms(config.epoch_ms, rec.frame_rate_hz)
    )
    # Refuse a recording with nothing to train on before the run directory or its
    # train_config.json exist: a refusal changes nothing on disk.
    if not segments(rec.splits["train"], window, chunk_frames):
        raise TrainError(f"train split has no window of {window} frames")
    dist = init_distributed(device)
    run_dir = Path(run_dir)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if config.init_from is not None:
        _apply_init_from(model, config.init_from, config.freeze)
    model.to(device)
    cell_types = [rec.cells.types[c] for c in cells]
    meta_fields: dict[str, Any] = {
        "loss": loss_name,
        "frame_rate_hz": rec.frame_rate_hz,
        "pixel_size_deg": rec.pixel_size_deg,
        "stimulus_kind": rec.stimulus_kind,
        "cells": {
            "ids": [rec.cells.ids[c] for c in cells],
            "types": cell_types,
            "center_deg": rec.cells.center_deg[cells].tolist(),
        },
        "data_path": str(data.resolve()) if data.exists() else str(data),
        "data_sha256": file_sha256(data) if data.exists() else "",
        "seed": config.seed,
    }
    if dist.is_main:
        (run_dir / TRAIN_CONFIG_FILE).write_text(
            json.dumps({"data": str(data), **asdict(config)}, indent=2, default=str) + "\n"
        )

    # ---------------------------------------------------------------- closed-form baseline
    if isinstance(model, LNModel):
        from encoder.recording import stimulus_as_contrast

        model.fit(
            stimulus_as_contrast(rec.stimulus),
            rec.responses[:, cells],
            rec.splits["train"],
        )
        val_loss, val_pcc = _evaluate_split(model, rec, "val", cells, loss_fn, device, chunk_frames)
        minutes = (time.monotonic() - t_start) / 60
        fitted = [EpochMetrics(1, float("nan"), val_loss, val_pcc, minutes * 60)]
        if dist.is_main:
            meta = make_meta(
                model, epoch=1, metrics={"val_loss": val_loss, "val_pcc": val_pcc}, **meta_fields
            )
            save_checkpoint(run_dir, model.cpu(), meta)
            _write_metrics(run_dir, fitted)
        if progress:
            progress(
                "epoch",
                {"epoch": 1, "train_loss": float("nan"), "val_loss": val_loss, "val_pcc": val_pcc},
            )
        shutdown_distributed(dist)
        return TrainResult(
            run_dir, 1, val_loss, fitted, minutes, model.n_parameters(), "closed-form"
        )

    if config.init_from is None and not config.resume:
        _init_selector_from_sta(model, rec, cells)
        _init_output_from_mean(model, rec, cells)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    # Why: near its optimum the Poisson loss on spike counts is noisy, and a smaller step
    # averages that noise out; measured on cnn-lstm, see the README's accuracy section.
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_decay, patience=config.lr_decay_patience
        )
        if config.lr_decay < 1.0
        else None
    )
    runner: nn.Module = _ChunkRunner(model)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(runner)

    train_segs = segments(rec.splits["train"], window, chunk_frames)
    full = [sg for sg in train_segs if sg.out_stop - sg.out_start == chunk_frames]
    # Only full-length chunks: one tensor shape per batch, and (under DDP) the same number of
    # optimiser steps on every rank, or the gradient all-reduce would wait forever.
    train_segs = full or train_segs
    if not train_segs:
        raise TrainError(f"train split has no window of {window} frames")
    rng = np.random.default_rng(config.seed)
    epochs: list[EpochMetrics] = []
    best_loss, best_epoch, bad_epochs, start_epoch = math.inf, 0, 0, 1
    state_path = run_dir / TRAIN_STATE_FILE
    if config.resume:
        if not state_path.exists():
            raise TrainError(f"--resume: {state_path} not found (nothing to resume)")
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        if "config" in state:
            model.config = type(model.config)(**state["config"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        best_loss, best_epoch, bad_epochs = (
            state["best_loss"],
            state["best_epoch"],
            state["bad_epochs"],
        )
        epochs = [EpochMetrics(**e) for e in state["epochs"]]
        start_epoch = state["epoch"] + 1

    stopped = "max-epochs"
    for epoch in range(start_epoch, config.max_epochs + 1):
        if bad_epochs >= config.patience:
            stopped = "early-stopping"
            break
        t_epoch = time.monotonic()
        order = rng.permutation(len(train_segs))
        if epoch_frames is not None:
            order = order[: max(1, math.ceil(epoch_frames / chunk_frames))]
        mine: list[Segment] = [train_segs[i] for i in order[dist.rank :: dist.world_size]]
        if dist.enabled:  # equal step counts on every rank, or DDP's all-reduce would hang
            per_rank = len(order) // dist.world_size
            mine = mine[:per_rank]
        n_steps = math.ceil(len(mine) / config.batch_size)
        if progress:
            progress("epoch-start", {"epoch": epoch, "steps": n_steps})
        model.train()
        epoch_lr = float(optimizer.param_groups[0]["lr"])
        losses: list[float] = []
        for x, y in batches(rec.stimulus, rec.responses, mine, window, config.batch_size, cells):
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            pred, penalty = runner(x)
            data_loss = loss_fn(pred, y)
            (data_loss + penalty).backward()
            optimizer.step()
            losses.append(float(data_loss.detach()))
            if progress:
                progress("step", {"loss": float(np.mean(losses[-20:]))})
        val_loss, val_pcc = _evaluate_split(model, rec, "val", cells, loss_fn, device, chunk_frames)
        metrics = EpochMetrics(
            epoch, float(np.mean(losses)), val_loss, val_pcc, time.monotonic() - t_epoch, epoch_lr
        )
        if scheduler is not None:
            scheduler.step(val_loss)
        epochs.append(metrics)
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
            if dist.is_main:
                _label_types(model, cell_types)
                meta = make_meta(
                    model,
                    epoch=epoch,
                    metrics={
                        "val_loss": val_loss,
                        "val_pcc": val_pcc,
                        "train_loss": metrics.train_loss,
                    },
                    **meta_fields,
                )
                save_checkpoint(run_dir, model, meta)
                model.to(device)
        else:
            bad_epochs += 1
        if dist.is_main:
            _write_metrics(run_dir, epochs)
            torch.save(
                {
                    "model": model.state_dict(),
                    "config": model.config.to_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "epoch": epoch,
                    "epochs": [asdict(e) for e in epochs],
                },
                state_path,
            )
        if progress:
            progress("epoch", asdict(metrics))
        if (
            config.max_minutes is not None
            and (time.monotonic() - t_start) / 60 >= config.max_minutes
        ):
            stopped = "max-minutes"
            break
    else:
        if bad_epochs >= config.patience:
            stopped = "early-stopping"
    shutdown_distributed(dist)
    return TrainResult(
        run_dir=run_dir,
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        epochs=epochs,
        minutes=(time.monotonic() - t_start) / 60,
        n_parameters=model.n_parameters(),
        stopped=stopped,
        weights_sha256=weights_digest(model),
    )


def dist_info() -> DistInfo:
    """The current process's rank and world size (single process outside torchrun)."""
    import os

    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        backend=None,
    )
