"""`npe train`'s public names, kept where callers import them from.

The trainer itself lives in `encoder.training` (small steps with callbacks, typed progress
events, lazy reads with prefetch, multi-session); this module re-exports it so that
`from encoder.train import TrainConfig, train` keeps working.
"""

from __future__ import annotations

from encoder.training.callbacks import (
    METRICS_CSV,
    METRICS_JSON,
    METRICS_JSONL,
    TRAIN_STATE_FILE,
    Callback,
)
from encoder.training.config import TrainConfig, TrainError, check_device, train_default
from encoder.training.data import resolve_cells
from encoder.training.events import (
    EpochMetrics,
    EpochStarted,
    Improved,
    SessionMetrics,
    StepDone,
    Stopped,
    TrainEvent,
    read_metrics,
)
from encoder.training.trainer import (
    TRAIN_CONFIG_FILE,
    Trainer,
    TrainResult,
    dist_info,
    pearson_per_cell,
    train,
    weights_digest,
)

__all__ = [
    "METRICS_CSV",
    "METRICS_JSON",
    "METRICS_JSONL",
    "TRAIN_CONFIG_FILE",
    "TRAIN_STATE_FILE",
    "Callback",
    "EpochMetrics",
    "EpochStarted",
    "Improved",
    "SessionMetrics",
    "StepDone",
    "Stopped",
    "TrainConfig",
    "TrainError",
    "TrainEvent",
    "TrainResult",
    "Trainer",
    "check_device",
    "dist_info",
    "pearson_per_cell",
    "read_metrics",
    "resolve_cells",
    "train",
    "train_default",
    "weights_digest",
]
