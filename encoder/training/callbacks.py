"""What happens around the training loop, as callbacks the `Trainer` fires.

Why callbacks: checkpointing, the metrics files, the resumable train state, early stopping,
the wall-clock cap and the progress display used to be interleaved in one 240-line loop; as
callbacks each is one small class, and a caller (a benchmark, a test) adds its own without
touching the loop. The trainer fires them in list order; the default list keeps the order the
old loop had (checkpoint, metrics, state, progress, then the stop rules), and only rank 0
gets the ones that write files.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from encoder.checkpoint import SessionMeta, make_meta, make_multisession_meta, save_checkpoint
from encoder.training.events import (
    EpochMetrics,
    EpochStarted,
    Improved,
    StepDone,
    Stopped,
    TrainEvent,
)
from encoder.training.init import label_types

if TYPE_CHECKING:
    from encoder.training.trainer import Trainer

TRAIN_STATE_FILE = "train_state.pt"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
METRICS_JSONL = "metrics.jsonl"
SESSIONS_DIR = "sessions"

#: Scalar columns of metrics.csv (per-session values are in metrics.jsonl / metrics.json).
CSV_FIELDS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_pcc",
    "epoch_ms",
    "elapsed_ms",
    "data_wait_ms",
    "lr",
)


class Callback:
    """Hooks of the training loop; each default does nothing."""

    def on_epoch_start(self, trainer: Trainer, event: EpochStarted) -> None:
        """An epoch is about to run."""

    def on_step_end(self, trainer: Trainer, event: StepDone) -> None:
        """One optimiser step finished."""

    def on_improvement(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        """The validation loss improved on the best so far (the closed-form fit counts)."""

    def on_epoch_end(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        """An epoch (or the closed-form fit) finished and was validated."""

    def on_stop(self, trainer: Trainer, event: Stopped) -> None:
        """Training ended."""


class BestCheckpoint(Callback):
    """Write the best model: `run_dir` for one session. A multi-session run writes the shared
    core with every readout to `run_dir` (a multi-session checkpoint: `npe evaluate --data A
    --data B` scores each session and the pool, `npe export --session NAME` exports one), and
    each session's view also to `run_dir/sessions/<name>/` as an ordinary single-session
    checkpoint, for tools that take one session."""

    def on_improvement(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        scores = {"val_loss": metrics.val_loss, "val_pcc": metrics.val_pcc}
        if trainer.optimizer is not None:  # the closed-form fit has no training loss
            scores["train_loss"] = metrics.train_loss
        for i, session in enumerate(trainer.sessions):
            model = trainer.session_model(i)
            if trainer.optimizer is not None:  # the closed-form fit never labelled its types
                label_types(model, session.cell_types)
            if trainer.multisession:
                per = metrics.sessions[i]
                scores = {
                    "val_loss": per.val_loss,
                    "val_pcc": per.val_pcc,
                    "train_loss": per.train_loss,
                }
                target = trainer.run_dir / SESSIONS_DIR / session.name
            else:
                target = trainer.run_dir
            meta = make_meta(model, epoch=metrics.epoch, metrics=scores, **trainer.meta_fields[i])
            save_checkpoint(target, model, meta)
        if trainer.multisession:
            self._save_shared(trainer, metrics)
        trainer.model.to(trainer.device)

    @staticmethod
    def _save_shared(trainer: Trainer, metrics: EpochMetrics) -> None:
        """The whole multi-session model, with one `SessionMeta` per session in its order."""
        from encoder.models.multisession import MultiSessionModel

        model = trainer.model
        assert isinstance(model, MultiSessionModel)
        sessions = []
        for session, fields in zip(trainer.sessions, trainer.meta_fields, strict=True):
            sessions.append(
                SessionMeta(
                    name=session.name,
                    cells=fields["cells"],
                    pixel_size_deg=fields["pixel_size_deg"],
                    stimulus_kind=fields["stimulus_kind"],
                    data_path=fields["data_path"],
                    data_sha256=fields["data_sha256"],
                )
            )
        meta = make_multisession_meta(
            model,
            sessions,
            loss=trainer.loss_name,
            seed=trainer.config.seed,
            epoch=metrics.epoch,
            metrics={"val_loss": metrics.val_loss, "val_pcc": metrics.val_pcc},
        )
        save_checkpoint(trainer.run_dir, model, meta)


class MetricsFiles(Callback):
    """metrics.csv (scalars), metrics.json ({"epochs": [...]}) and metrics.jsonl (one
    `EpochMetrics.model_dump_json` per line, read back by `events.read_metrics`)."""

    def on_epoch_end(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        run_dir = trainer.run_dir
        with open(run_dir / METRICS_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_FIELDS))
            writer.writeheader()
            for e in trainer.epochs:
                writer.writerow({k: getattr(e, k) for k in CSV_FIELDS})
        rows = [e.model_dump(mode="json") for e in trainer.epochs]
        (run_dir / METRICS_JSON).write_text(json.dumps({"epochs": rows}, indent=2) + "\n")
        (run_dir / METRICS_JSONL).write_text(
            "".join(e.model_dump_json() + "\n" for e in trainer.epochs)
        )


class TrainState(Callback):
    """Everything `--resume` needs, after every epoch: weights, optimiser, scheduler, RNGs,
    counters and the epochs so far (as their JSON lines)."""

    def on_epoch_end(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        if trainer.optimizer is None:  # closed form: nothing to resume
            return
        torch.save(trainer.state_dict(), trainer.run_dir / TRAIN_STATE_FILE)


class Progress(Callback):
    """Forward every event to a `progress(event)` function (the CLI's rich display)."""

    def __init__(self, progress: Callable[[TrainEvent], None]) -> None:
        self.progress = progress

    def on_epoch_start(self, trainer: Trainer, event: EpochStarted) -> None:
        self.progress(event)

    def on_step_end(self, trainer: Trainer, event: StepDone) -> None:
        self.progress(event)

    def on_improvement(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        self.progress(Improved(epoch=metrics.epoch, val_loss=metrics.val_loss))

    def on_epoch_end(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        self.progress(metrics)

    def on_stop(self, trainer: Trainer, event: Stopped) -> None:
        self.progress(event)


class MaxMinutes(Callback):
    """Stop after `--max-minutes` of wall time (checked after each epoch)."""

    def __init__(self, max_minutes: float | None) -> None:
        self.max_minutes = max_minutes

    def on_epoch_end(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        if (
            self.max_minutes is not None
            and (time.monotonic() - trainer.t_start) / 60 >= self.max_minutes
        ):
            trainer.request_stop("max-minutes")


class EarlyStopping(Callback):
    """Stop when the validation loss has not improved for `--patience` epochs."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        if trainer.bad_epochs >= self.patience:
            trainer.request_stop("early-stopping")
