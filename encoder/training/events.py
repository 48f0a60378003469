"""Training progress as typed events: what the trainer reports, the CLI shows and files keep.

Why pydantic models and not dicts: the same event goes to the progress display, to
`metrics.jsonl` (one `model_dump_json` line per epoch, read back with `model_validate_json`
by `read_metrics`) and into `train_state.pt` for `--resume`; one typed definition keeps the
three in step, and a misspelt key is an error instead of a silent NaN. Durations are in ms.

NaN is a legitimate value (the closed-form LN fit has no training loss; a constant cell has
no correlation), so the models write it as the JSON constant `NaN`, which they read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from encoder.training.config import TrainError

_EVENT_CONFIG = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

StopReason = Literal["early-stopping", "max-epochs", "max-minutes", "closed-form"]


class EpochStarted(BaseModel):
    """An epoch begins: `steps` optimiser steps on this rank."""

    model_config = _EVENT_CONFIG
    kind: Literal["epoch-start"] = "epoch-start"
    epoch: int
    steps: int


class StepDone(BaseModel):
    """One optimiser step: `loss` is the mean data loss of the epoch's last 20 steps."""

    model_config = _EVENT_CONFIG
    kind: Literal["step"] = "step"
    epoch: int
    step: int
    loss: float
    session: str


class SessionMetrics(BaseModel):
    """One session's share of an epoch (multi-session training; one entry otherwise)."""

    model_config = _EVENT_CONFIG
    session: str
    train_loss: float
    val_loss: float
    val_pcc: float
    steps: int


class EpochMetrics(BaseModel):
    """An epoch's result. val_loss is summed over sessions; val_pcc is their mean.

    epoch_ms: time spent in this epoch; elapsed_ms: since the run (or its resumption)
    started; data_wait_ms: time the loop waited for batches; lr: the rate used.
    """

    model_config = _EVENT_CONFIG
    kind: Literal["epoch"] = "epoch"
    epoch: int
    train_loss: float
    val_loss: float
    val_pcc: float
    epoch_ms: float
    elapsed_ms: float = 0.0
    data_wait_ms: float = 0.0
    lr: float = float("nan")
    sessions: tuple[SessionMetrics, ...] = Field(default_factory=tuple)


class Improved(BaseModel):
    """The validation loss improved: the best checkpoint was rewritten."""

    model_config = _EVENT_CONFIG
    kind: Literal["improved"] = "improved"
    epoch: int
    val_loss: float


class Stopped(BaseModel):
    """Training ended, and why."""

    model_config = _EVENT_CONFIG
    kind: Literal["stopped"] = "stopped"
    reason: StopReason
    epochs: int
    best_epoch: int
    best_val_loss: float
    elapsed_ms: float


TrainEvent = EpochStarted | StepDone | EpochMetrics | Improved | Stopped


def read_metrics(path: str | Path) -> list[EpochMetrics]:
    """The epochs of a `metrics.jsonl` file, each line checked by `EpochMetrics`."""
    from pydantic import ValidationError

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [EpochMetrics.model_validate_json(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, ValidationError) as exc:
        raise TrainError(f"{path}: not a metrics file ({str(exc).splitlines()[0]})") from None
