"""The training loop behind `npe train`, as small named steps that fire callbacks.

`Trainer.run` is the whole story in order: `prepare_data` (options checked, recordings opened
lazily, sessions checked against each other), `build_model`, `start_run` (run directory,
init-from, train_config.json), then either `fit_closed_form` (the LN baseline) or
`init_weights`, `make_optimizer`, `resume`, and `train_epoch` + `end_epoch` until a stop rule
fires. Checkpointing, metrics files, the resumable state, early stopping, the wall-clock cap
and progress are callbacks (`encoder.training.callbacks`).

Why it is built this way (unchanged from the single function it replaces):
* Chunks instead of single windows (`encoder.batching`): per-frame models compute their
  convolutions once per frame, which keeps the population model within the 2-core budget.
* Early stopping on validation loss with patience, at most 100 epochs by default, best
  checkpoint kept (YADLRetina: 100 epochs with early stopping; REFERENCES).
* Everything a resumed run needs is written to `train_state.pt` after every epoch.
* Deterministic under a seed: one torch seed, one numpy Generator for the chunk order; the
  same seed gives the same weights as the trainer before this refactor
  (`tests/encoder/test_trainer_reference.py` checks the digests).
* Under torchrun each rank trains on a disjoint share of each epoch's chunks and DDP averages
  gradients; all ranks evaluate the full validation split, so they take identical
  early-stopping decisions; only rank 0 writes.
* Batches are built on a background thread (`prefetch`) from a stimulus left on disk
  (`encoder.lazy_recording`), so a 900 MB recording is never in memory and loading overlaps
  compute.
* Several recordings train one shared core with one readout per session
  (`encoder.models.multisession`); the loss of a step is its session's, the validation loss
  is summed over sessions.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from encoder.batching import predict_frames
from encoder.distributed import DistInfo, init_distributed, shutdown_distributed
from encoder.losses import get_loss
from encoder.models import RetinaModel, build_model, get_spec
from encoder.models.ln import LNModel
from encoder.recording import Recording, stimulus_as_contrast
from encoder.timebase import frames_from_ms
from encoder.training.callbacks import (
    TRAIN_STATE_FILE,
    BestCheckpoint,
    Callback,
    EarlyStopping,
    MaxMinutes,
    MetricsFiles,
    Progress,
    TrainState,
)
from encoder.training.config import TrainConfig, TrainError, check_config, check_device
from encoder.training.data import (
    EpochPlan,
    RecordingLike,
    Session,
    batch_stream,
    open_sessions,
    plan_chunks,
    plan_epoch,
)
from encoder.training.events import (
    EpochMetrics,
    EpochStarted,
    SessionMetrics,
    StepDone,
    Stopped,
    StopReason,
    TrainEvent,
)
from encoder.training.init import (
    apply_init_from,
    init_output_from_mean,
    init_selector_from_sta,
)
from encoder.training.prefetch import Prefetcher

TRAIN_CONFIG_FILE = "train_config.json"


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
    sessions: tuple[str, ...] = ()


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's state tensors (names + bytes), to compare weights across ranks."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def pearson_per_cell(pred: NDArray[np.floating], obs: NDArray[np.floating]) -> NDArray[np.float64]:
    """Pearson r per column of [n, n_cells] arrays; NaN where either column is constant."""
    p = pred - pred.mean(0)
    o = obs - obs.mean(0)
    denom = np.sqrt((p**2).sum(0) * (o**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * o).sum(0) / denom
    return np.where(denom > 0, r, np.nan).astype(np.float64)


class _ChunkRunner(nn.Module):
    """Wraps `forward_chunk` as `forward`, so DDP's gradient hooks see the call."""

    def __init__(self, model: RetinaModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, session: str | None = None) -> tuple[Tensor, Tensor]:
        fwd: Any = self.model.forward_chunk
        out = fwd(x) if session is None else fwd(x, session)
        return out, self.model.penalty().to(out.device)


def warm_ema_decay(decay: float, n_averaged: int) -> float:
    """The weight average's decay at its update number `n_averaged` + 1: min(decay,
    (1 + n) / (10 + n)).

    Why: a constant 0.995 from the first step would keep half of the initial weights' share
    for 140 steps, so a short run (a few epochs, `--max-minutes`) would validate and keep a
    model close to its initialisation. The ramp makes the average follow the raw weights
    early and reach `decay` after about (10·decay − 1) / (1 − decay) steps (1,800 at 0.995).
    """
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def evaluate_split(
    model: RetinaModel,
    recording: RecordingLike,
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


def build_multisession(
    config: TrainConfig, sessions: list[Session], frame_shape: tuple[int, int], rate_hz: float
) -> RetinaModel:
    """One shared core and a readout per session (`encoder.models.multisession`)."""
    from encoder.models.multisession import build_multisession_model

    model: RetinaModel = build_multisession_model(
        config.model,
        config.model_config,
        frame_shape=frame_shape,
        frame_rate_hz=rate_hz,
        cells_per_session={s.name: len(s.cells) for s in sessions},
    )
    return model


class Trainer:
    """One training run: `Trainer(data, run_dir, config).run()`.

    data: one recording path per session. recordings: the same recordings in memory (tests,
    benchmarks), else they are opened lazily. callbacks: added after the defaults.
    """

    def __init__(
        self,
        data: Sequence[Path],
        run_dir: Path,
        config: TrainConfig,
        *,
        recordings: Sequence[Recording] | None = None,
        progress: Callable[[TrainEvent], None] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if not data:
            raise TrainError("--data: give at least one recording")
        self.t_start = time.monotonic()
        self.data = list(data)
        self.run_dir = run_dir
        self.config = config
        self._recordings = recordings
        self._progress = progress
        self._extra_callbacks = list(callbacks)
        self.callbacks: list[Callback] = []
        self.sessions: list[Session] = []
        self.meta_fields: list[dict[str, Any]] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.ema: AveragedModel | None = None  # the weight average (TrainConfig.ema_decay)
        self._raw_weights: dict[str, Tensor] | None = None  # set while the average is in
        self.epochs: list[EpochMetrics] = []
        self.best_loss, self.best_epoch, self.bad_epochs, self.start_epoch = math.inf, 0, 0, 1
        self.stop_reason: StopReason | None = None
        self.rng = np.random.default_rng(config.seed)
        self.dist = DistInfo(rank=0, world_size=1, backend=None)
        self.data_wait_ms = 0.0

    # ------------------------------------------------------------------ the whole run
    def run(self) -> TrainResult:
        try:
            self.prepare_data()
            self.build_model()
            self.start_run()
            if isinstance(self.model, LNModel):
                return self.fit_closed_form()
            self.init_weights()
            self.make_optimizer()
            self.resume()
            if self.bad_epochs >= self.config.patience:
                self.request_stop("early-stopping")
            epoch = self.start_epoch
            while self.stop_reason is None and epoch <= self.config.max_epochs:
                self.end_epoch(self.train_epoch(epoch))
                epoch += 1
            reason: StopReason = self.stop_reason or (
                "early-stopping" if self.bad_epochs >= self.config.patience else "max-epochs"
            )
            return self.finish(reason, weights_digest(self.model))
        finally:
            for s in self.sessions:
                s.close()
            shutdown_distributed(self.dist)

    # ------------------------------------------------------------------ steps
    def prepare_data(self) -> None:
        """Check the options and open the recordings; refuse before anything is written."""
        cfg = self.config
        self.device = check_device(cfg.device)
        check_config(cfg)
        self.loss_name = cfg.loss or get_spec(cfg.model).default_loss
        self.ema_decay = (
            cfg.ema_decay if cfg.ema_decay is not None else get_spec(cfg.model).default_ema_decay
        )
        self.loss_fn = get_loss(self.loss_name)
        self.sessions = open_sessions(self.data, self._recordings, cfg.cells)
        self.multisession = len(self.sessions) > 1
        if self.multisession and (cfg.model == "ln" or cfg.init_from is not None):
            raise TrainError(
                "several --data recordings train a shared core by gradient descent: "
                "not with --model ln or --init-from"
            )

    def build_model(self) -> None:
        """Seed torch, build the model for the data's geometry, cut the chunks."""
        cfg = self.config
        first = self.sessions[0].recording
        torch.set_num_threads(max(1, cfg.threads))
        torch.manual_seed(cfg.seed)
        if self.multisession:
            self.model = build_multisession(
                cfg, self.sessions, first.frame_shape, first.frame_rate_hz
            )
        else:
            self.model = build_model(
                cfg.model,
                cfg.model_config,
                len(self.sessions[0].cells),
                first.frame_shape,
                first.frame_rate_hz,
            )
        self.window = self.model.window_frames
        self.chunk_frames = frames_from_ms(cfg.chunk_ms, first.frame_rate_hz)
        self.epoch_frames = (
            None if cfg.epoch_ms is None else frames_from_ms(cfg.epoch_ms, first.frame_rate_hz)
        )
        plan_chunks(self.sessions, self.window, self.chunk_frames)

    def start_run(self) -> None:
        """Join DDP, create the run directory, apply --init-from, write train_config.json."""
        cfg = self.config
        self.dist = init_distributed(self.device)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.init_from is not None:
            apply_init_from(self.model, cfg.init_from, cfg.freeze)
        self.model.to(self.device)
        self.meta_fields = [s.meta_fields(self.loss_name, cfg.seed) for s in self.sessions]
        self.callbacks = [
            *([BestCheckpoint(), MetricsFiles(), TrainState()] if self.dist.is_main else []),
            *([Progress(self._progress)] if self._progress is not None else []),
            MaxMinutes(cfg.max_minutes),
            EarlyStopping(cfg.patience),
            *self._extra_callbacks,
        ]
        if self.dist.is_main:
            data: str | list[str] = (
                [str(p) for p in self.data] if self.multisession else str(self.data[0])
            )
            # The options as resolved: a default that comes from the model (ema_decay: None)
            # is written as the value the run used.
            resolved = {**asdict(cfg), "ema_decay": self.ema_decay}
            (self.run_dir / TRAIN_CONFIG_FILE).write_text(
                json.dumps({"data": data, **resolved}, indent=2, default=str) + "\n"
            )

    def fit_closed_form(self) -> TrainResult:
        """The LN baseline: STA filters and a fitted nonlinearity, one 'epoch', no optimiser."""
        assert isinstance(self.model, LNModel)
        s = self.sessions[0]
        rec = s.recording
        self.model.fit(
            stimulus_as_contrast(rec.stimulus[0 : rec.n_frames]),
            rec.responses[:, s.cells],
            rec.splits["train"],
        )
        ((val_loss, val_pcc),) = self.validate()
        elapsed_ms = (time.monotonic() - self.t_start) * 1000.0
        metrics = EpochMetrics(
            epoch=1,
            train_loss=float("nan"),
            val_loss=val_loss,
            val_pcc=val_pcc,
            epoch_ms=elapsed_ms,
            elapsed_ms=elapsed_ms,
            sessions=(
                SessionMetrics(
                    session=s.name,
                    train_loss=float("nan"),
                    val_loss=val_loss,
                    val_pcc=val_pcc,
                    steps=0,
                ),
            ),
        )
        self.epochs.append(metrics)
        self.best_loss, self.best_epoch = val_loss, 1
        self._fire("on_improvement", metrics)
        self._fire("on_epoch_end", metrics)
        return self.finish("closed-form", "", minutes=elapsed_ms / 60000.0)

    def init_weights(self) -> None:
        """Start rate-map locations at the cells' STA peaks and outputs at their mean counts."""
        if self.config.init_from is None and not self.config.resume:
            for i, s in enumerate(self.sessions):
                model = self.session_model(i)
                init_selector_from_sta(model, s.recording, s.cells)
                init_output_from_mean(model, s.recording, s.cells)

    def make_optimizer(self) -> None:
        """Adam (AdamW with `weight_decay` > 0) on the trainable parameters, the optional
        plateau decay, DDP's wrapper."""
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = (
            torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            if cfg.weight_decay > 0
            else torch.optim.Adam(params, lr=cfg.lr)
        )
        # Why: near its optimum the Poisson loss on spike counts is noisy, and a smaller step
        # averages that noise out; measured on cnn-lstm, see the README's accuracy section.
        self.scheduler = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=cfg.lr_decay, patience=cfg.lr_decay_patience
            )
            if cfg.lr_decay < 1.0
            else None
        )
        self.ema = self._new_average()
        self.runner: nn.Module = _ChunkRunner(self.model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # Other sessions' readouts get no gradient from a step: DDP must allow that.
            self.runner = DistributedDataParallel(
                self.runner, find_unused_parameters=self.multisession
            )

    def resume(self) -> None:
        """With --resume, restore weights, optimiser, RNGs and counters from train_state.pt."""
        if not self.config.resume:
            return
        assert self.optimizer is not None
        state_path = self.run_dir / TRAIN_STATE_FILE
        if not state_path.exists():
            raise TrainError(f"--resume: {state_path} not found (nothing to resume)")
        state = torch.load(state_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        if "config" in state:
            self.model.config = type(self.model.config)(**state["config"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema = self._new_average()  # from the restored weights, unless the state has one
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        self.best_loss, self.best_epoch, self.bad_epochs = (
            state["best_loss"],
            state["best_epoch"],
            state["bad_epochs"],
        )
        self.epochs = [_epoch_from_state(e) for e in state["epochs"]]
        self.start_epoch = state["epoch"] + 1

    def _new_average(self) -> AveragedModel | None:
        """A weight average starting at the model's current weights (None when off).

        Why: with 16 steps per epoch the last weights carry the noise of the last few batches;
        the validation loss that early stopping and the best checkpoint go by is then partly
        that noise. The average is the model the run validates, keeps and exports; the
        optimiser keeps stepping the raw weights. See `warm_ema_decay` for short runs."""
        if self.ema_decay <= 0.0:
            return None
        decay = self.ema_decay

        def average(
            avg: tuple[Tensor, ...] | list[Tensor],
            new: tuple[Tensor, ...] | list[Tensor],
            n_averaged: Tensor | int,
        ) -> None:
            d = warm_ema_decay(decay, int(n_averaged))
            for a, w in zip(avg, new, strict=True):
                if a.is_floating_point():
                    a.mul_(d).add_(w, alpha=1.0 - d)
                else:  # integer buffers (a batch counter) are not averaged
                    a.copy_(w)

        return AveragedModel(self.model, multi_avg_fn=average, use_buffers=True)

    @contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """The averaged weights in the model (validation, checkpoints), then the raw ones back."""
        if self.ema is None or self._raw_weights is not None:
            yield
            return
        self._raw_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema.module.state_dict())
        try:
            yield
        finally:
            self.model.load_state_dict(self._raw_weights)
            self._raw_weights = None

    def plan(self) -> EpochPlan:
        return plan_epoch(
            self.sessions,
            self.rng,
            self.epoch_frames,
            self.chunk_frames,
            self.config.batch_size,
            self.dist.rank,
            self.dist.world_size,
        )

    def train_epoch(self, epoch: int) -> EpochMetrics:
        """One pass over the epoch's plan (batches prefetched), then validation."""
        assert self.optimizer is not None
        cfg = self.config
        t_epoch = time.monotonic()
        plan = self.plan()
        self._fire("on_epoch_start", EpochStarted(epoch=epoch, steps=len(plan.steps)))
        self.model.train()
        epoch_lr = float(self.optimizer.param_groups[0]["lr"])
        losses: list[float] = []
        per_session: list[list[float]] = [[] for _ in self.sessions]

        def stream() -> Iterator[tuple[int, Tensor, Tensor]]:
            return batch_stream(self.sessions, plan, self.window, cfg.batch_size)

        prefetcher = Prefetcher(stream, cfg.prefetch) if cfg.prefetch > 0 else None
        source: Prefetcher[tuple[int, Tensor, Tensor]] | _Timed = (
            prefetcher if prefetcher is not None else _Timed(stream())
        )
        try:
            for step, (k, x, y) in enumerate(source, start=1):
                x, y = x.to(self.device), y.to(self.device)
                name = self.sessions[k].name
                self.optimizer.zero_grad(set_to_none=True)
                pred, penalty = self.runner(x, name if self.multisession else None)
                data_loss = self.loss_fn(pred, y)
                (data_loss + penalty).backward()
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                value = float(data_loss.detach())
                losses.append(value)
                per_session[k].append(value)
                self._fire(
                    "on_step_end",
                    StepDone(
                        epoch=epoch, step=step, loss=float(np.mean(losses[-20:])), session=name
                    ),
                )
        finally:
            if prefetcher is not None:
                prefetcher.close()
        wait_ms = source.wait_ms
        self.data_wait_ms += wait_ms
        with self.averaged_weights():
            scores = self.validate()
        sessions = tuple(
            SessionMetrics(
                session=s.name,
                train_loss=float(np.mean(per_session[i])) if per_session[i] else float("nan"),
                val_loss=scores[i][0],
                val_pcc=scores[i][1],
                steps=len(per_session[i]),
            )
            for i, s in enumerate(self.sessions)
        )
        now = time.monotonic()
        return EpochMetrics(
            epoch=epoch,
            train_loss=float(np.mean(losses)),
            val_loss=float(sum(v for v, _ in scores)) if self.multisession else scores[0][0],
            val_pcc=_mean_pcc([p for _, p in scores]),
            epoch_ms=(now - t_epoch) * 1000.0,
            elapsed_ms=(now - self.t_start) * 1000.0,
            data_wait_ms=wait_ms,
            lr=epoch_lr,
            sessions=sessions,
        )

    def validate(self) -> list[tuple[float, float]]:
        """(val loss, val PCC) of every session, each with its own readout."""
        return [
            evaluate_split(
                self.session_model(i),
                s.recording,
                "val",
                s.cells,
                self.loss_fn,
                self.device,
                self.chunk_frames,
            )
            for i, s in enumerate(self.sessions)
        ]

    def end_epoch(self, metrics: EpochMetrics) -> None:
        """Decay the rate, track the best loss, fire on_improvement and on_epoch_end (with the
        averaged weights in the model, when there is an average: they are what is kept)."""
        if self.scheduler is not None:
            self.scheduler.step(metrics.val_loss)
        self.epochs.append(metrics)
        with self.averaged_weights():
            if metrics.val_loss < self.best_loss - 1e-6:
                self.best_loss, self.best_epoch = metrics.val_loss, metrics.epoch
                self.bad_epochs = 0
                self._fire("on_improvement", metrics)
            else:
                self.bad_epochs += 1
            self._fire("on_epoch_end", metrics)

    def finish(self, reason: StopReason, digest: str, minutes: float | None = None) -> TrainResult:
        """Fire on_stop and build the result."""
        elapsed_ms = (time.monotonic() - self.t_start) * 1000.0
        event = Stopped(
            reason=reason,
            epochs=len(self.epochs),
            best_epoch=self.best_epoch,
            best_val_loss=self.best_loss,
            elapsed_ms=elapsed_ms,
        )
        self._fire("on_stop", event)
        return TrainResult(
            run_dir=self.run_dir,
            best_epoch=self.best_epoch,
            best_val_loss=self.best_loss,
            epochs=self.epochs,
            minutes=elapsed_ms / 60000.0 if minutes is None else minutes,
            n_parameters=self.model.n_parameters(),
            stopped=reason,
            weights_sha256=digest,
            sessions=tuple(s.name for s in self.sessions),
        )

    # ------------------------------------------------------------------ for the callbacks
    def session_model(self, i: int) -> RetinaModel:
        """The single-session view of session i (the model itself with one session)."""
        if not self.multisession:
            return self.model
        view: RetinaModel = self.model.session_model(self.sessions[i].name)  # type: ignore[operator]
        return view

    def request_stop(self, reason: StopReason) -> None:
        """Stop after this epoch; the first reason asked for is the one reported."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def state_dict(self) -> dict[str, Any]:
        """What train_state.pt holds: enough to continue as if never stopped."""
        assert self.optimizer is not None
        raw = self._raw_weights if self._raw_weights is not None else self.model.state_dict()
        return {
            "model": raw,  # the weights the optimiser steps, never the average
            "ema": None if self.ema is None else self.ema.state_dict(),
            "config": self.model.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "epoch": self.epochs[-1].epoch if self.epochs else 0,
            "epochs": [e.model_dump_json() for e in self.epochs],
        }

    def _fire(self, hook: str, event: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, event)


class _Timed:
    """Batches built in line (--prefetch 0), with the time spent building them in `wait_ms`."""

    def __init__(self, items: Iterator[tuple[int, Tensor, Tensor]]) -> None:
        self._items = items
        self.wait_ms = 0.0

    def __iter__(self) -> _Timed:
        return self

    def __next__(self) -> tuple[int, Tensor, Tensor]:
        t0 = time.monotonic()
        try:
            return next(self._items)
        finally:
            self.wait_ms += (time.monotonic() - t0) * 1000.0


def _mean_pcc(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _epoch_from_state(entry: Any) -> EpochMetrics:
    """An epoch from train_state.pt: a JSON line, or (runs from before the typed events) a
    dict with `seconds`."""
    if isinstance(entry, str):
        return EpochMetrics.model_validate_json(entry)
    old = dict(entry)
    seconds = float(old.pop("seconds", 0.0))
    return EpochMetrics.model_validate({**old, "epoch_ms": seconds * 1000.0})


def train(
    data: str | Path | Sequence[str | Path],
    run_dir: str | Path,
    config: TrainConfig,
    progress: Callable[[TrainEvent], None] | None = None,
    recording: Recording | Sequence[Recording] | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train `config.model` on recording(s) `data`, writing checkpoint + metrics into `run_dir`.

    Several recordings train one shared core with one readout per session. `progress(event)`
    receives the typed events (`EpochStarted`, `StepDone`, `EpochMetrics`, `Stopped`); the CLI
    renders them with rich. `recording`: the same data already in memory.
    """
    paths = [Path(data)] if isinstance(data, str | Path) else [Path(p) for p in data]
    recordings = (
        None
        if recording is None
        else [recording]
        if isinstance(recording, Recording)
        else list(recording)
    )
    trainer = Trainer(
        paths, Path(run_dir), config, recordings=recordings, progress=progress, callbacks=callbacks
    )
    return trainer.run()


def dist_info() -> DistInfo:
    """The current process's rank and world size (single process outside torchrun)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        backend=None,
    )
