"""The options of one training run, defined once: `npe train`'s flags take their defaults here.

Torch-free on purpose: `encoder.cli_models` reads `train_default(name)` at import time to
declare its options, and `npe --help` must not import torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from encoder.errors import EncoderError


class TrainError(EncoderError, ValueError):
    """A training request that cannot run (bad option, missing device, incompatible init)."""


@dataclass(frozen=True)
class TrainConfig:
    """Options of one training run (all of `npe train`'s flags but --data and --out)."""

    model: str
    model_config: dict[str, Any] = field(default_factory=dict)
    loss: str | None = None  # default: the model's own
    lr: float = 1e-3
    # Multiply the learning rate by lr_decay when the validation loss has not improved for
    # lr_decay_patience + 1 epochs (torch's ReduceLROnPlateau); 1.0 = constant rate.
    lr_decay: float = 1.0
    lr_decay_patience: int = 2
    # Decoupled weight decay per step (AdamW: w ← w − lr·weight_decay·w); 0 = plain Adam.
    weight_decay: float = 0.0
    # Validate and keep an exponential moving average of the weights (per optimiser step:
    # avg ← d·avg + (1 − d)·w) instead of the last weights; training itself goes on from the
    # raw weights. None = the model's own default (RegisteredModel.default_ema_decay); 0 = off.
    ema_decay: float | None = None
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
    # Batches built ahead on a background thread while the model trains (0 = in line).
    prefetch: int = 2


def train_default(name: str) -> Any:
    """The default of TrainConfig field `name` (the one definition the CLI options read)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"TrainConfig.{name} has no default")
    raise KeyError(f"TrainConfig has no field {name!r}")


def check_config(config: TrainConfig) -> None:
    """Refuse option values that cannot train, before anything is read or written."""
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
    if config.ema_decay is not None and not 0.0 <= config.ema_decay < 1.0:
        raise TrainError(f"--ema-decay must lie in [0, 1), got {config.ema_decay}")
    if not 0.0 <= config.weight_decay < 1.0:
        raise TrainError(f"--weight-decay must lie in [0, 1), got {config.weight_decay}")
    if config.prefetch < 0:
        raise TrainError(f"--prefetch must be ≥ 0, got {config.prefetch}")


def check_device(device: str) -> str:
    """'cpu' or 'cuda[:k]'; a clear TrainError when CUDA is asked for and absent."""
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise TrainError(
                f"--device {device} requested but no CUDA GPU is available "
                f"(torch {torch.__version__}, cuda build: {torch.version.cuda})"
            )
        return device
    raise TrainError(f"--device must be 'cpu' or 'cuda[:N]', got {device!r}")
