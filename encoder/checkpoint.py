"""Checkpoints: a run directory with `model.safetensors` (weights) + `checkpoint.json` (meta).

The meta holds everything needed to rebuild and serve the model without guessing: model
name and config, loss, frame rate, window, frame size, pixel size, stimulus kind, the cells
(ids, types, centres) and where the training data came from (path + sha256). The export
engineer rebuilds models from it (`load_checkpoint(run_dir).model`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from encoder.errors import EncoderError
from encoder.models import RetinaModel
from encoder.timebase import ms_from_frames
from hardware.untrusted_json import UntrustedFileError, load_untrusted_json

WEIGHTS_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
CHECKPOINT_SCHEMA = "npe.checkpoint"
CHECKPOINT_VERSION = 1

LossName = Literal["poisson", "bce", "mse"]


class CheckpointError(EncoderError, ValueError):
    """A run directory that does not hold a usable checkpoint."""


class CellsMeta(BaseModel):
    """The recorded cells a model predicts, in output order.

    center_deg: [n_cells] of (x, y) degrees from the stimulus centre; None where unknown.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ids: tuple[str, ...]
    types: tuple[str, ...]
    center_deg: tuple[tuple[float | None, float | None], ...]

    @model_validator(mode="after")
    def _same_length(self) -> CellsMeta:
        n = len(self.ids)
        if n == 0:
            raise ValueError("cells: at least one cell is required")
        if len(self.types) != n or len(self.center_deg) != n:
            raise ValueError(
                f"cells: ids ({n}), types ({len(self.types)}) and center_deg "
                f"({len(self.center_deg)}) must have the same length"
            )
        if len(set(self.ids)) != n:
            raise ValueError("cells: ids must be unique")
        return self

    @field_validator("center_deg", mode="before")
    @classmethod
    def _nan_to_none(cls, value: Any) -> Any:
        def clean(v: Any) -> Any:
            return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

        return tuple(tuple(clean(float(v)) if v is not None else None for v in xy) for xy in value)


class CheckpointMeta(BaseModel):
    """Validated description of a trained model (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    schema_name: Literal["npe.checkpoint"] = "npe.checkpoint"
    schema_version: Literal[1] = 1
    model_name: str
    model_config_values: dict[str, Any] = Field(alias="model_config_dict", default_factory=dict)
    loss: LossName
    frame_rate_hz: float = Field(gt=0)
    window_frames: int = Field(ge=1)
    frame_shape: tuple[int, int]
    pixel_size_deg: float = Field(gt=0)
    stimulus_kind: str
    cells: CellsMeta
    data_path: str = ""
    data_sha256: str = ""
    seed: int = 0
    epoch: int = Field(ge=0, default=0)
    metrics: dict[str, Any] = Field(default_factory=dict)
    torch_version: str = ""

    @field_validator("frame_shape")
    @classmethod
    def _positive_shape(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1:
            raise ValueError(f"frame_shape must be positive (height, width), got {value}")
        return value

    @property
    def n_cells(self) -> int:
        return len(self.cells.ids)

    @property
    def model_config_dict(self) -> dict[str, Any]:
        return dict(self.model_config_values)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A rebuilt model (eval mode, CPU) and its meta."""

    model: RetinaModel
    meta: CheckpointMeta
    run_dir: Path


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def make_meta(model: RetinaModel, **fields: Any) -> CheckpointMeta:
    """CheckpointMeta for `model` (name, config, frame rate, window and frame shape taken from
    the model)."""
    base: dict[str, Any] = {
        "model_name": model.name,
        "model_config_dict": model.config_dict(),
        "frame_rate_hz": model.frame_rate_hz,
        "window_frames": model.window_frames,
        "frame_shape": model.frame_shape,
    }
    base.update(fields)
    return CheckpointMeta.model_validate(base)


def save_checkpoint(run_dir: str | Path, model: RetinaModel, meta: CheckpointMeta) -> Path:
    """Write weights and meta into `run_dir` (created); returns the directory.

    Refuses a meta that disagrees with the model (name, cells, window, frame shape), because a
    checkpoint that rebuilds a different model than it stores would fail only at export time.
    """
    import torch
    from safetensors.torch import save_file

    problems = []
    if meta.model_name != model.name:
        problems.append(f"model name {meta.model_name!r} ≠ model {model.name!r}")
    if meta.n_cells != model.n_cells:
        problems.append(f"{meta.n_cells} cells in meta ≠ {model.n_cells} model outputs")
    if meta.window_frames != model.window_frames:
        problems.append(f"window {meta.window_frames} ≠ model window {model.window_frames}")
    if tuple(meta.frame_shape) != model.frame_shape:
        problems.append(f"frame_shape {meta.frame_shape} ≠ model {model.frame_shape}")
    if abs(meta.frame_rate_hz - model.frame_rate_hz) > 1e-9 * model.frame_rate_hz:
        problems.append(f"frame rate {meta.frame_rate_hz:g} Hz ≠ model {model.frame_rate_hz:g} Hz")
    if problems:
        raise CheckpointError("checkpoint meta disagrees with the model: " + "; ".join(problems))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = run_dir / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, run_dir / WEIGHTS_FILE)
    meta = meta.model_copy(update={"torch_version": torch.__version__})
    payload = meta.model_dump(mode="json", by_alias=True)
    _atomic_write(run_dir / META_FILE, (json.dumps(payload, indent=2) + "\n").encode())
    return run_dir


def read_meta(run_dir: str | Path) -> CheckpointMeta:
    """Read and validate `checkpoint.json` of `run_dir`."""
    path = Path(run_dir) / META_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: missing (is {run_dir} a training run directory?)")
    try:
        raw = load_untrusted_json(path, "checkpoint config")
    except UntrustedFileError as exc:
        raise CheckpointError(str(exc)) from exc
    try:
        return CheckpointMeta.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(f"{path}: invalid field {where!r}: {first['msg']}") from exc


#: Config fields of older checkpoints that counted frames, and the `_ms` field that replaced
#: each. Why: a frame count means a different duration at every frame rate; an old checkpoint
#: records its frame rate, so the count converts exactly (`frames_from_ms` gives it back).
LEGACY_FRAME_FIELDS: dict[str, dict[str, str]] = {
    "cnn-lstm": {"lstm_steps": "lstm_ms"},
    "streaming": {"temporal2": "temporal2_ms"},
}

#: Config fields added after checkpoints of a model were already being written, with the
#: value that rebuilds the layout such an older checkpoint was trained with. Why: the saved
#: config holds every field (`config_dict`), so a missing one means an older checkpoint, and
#: the new field's default would describe a different network than its weights.
LEGACY_CONFIG: dict[str, dict[str, Callable[[CheckpointMeta], Any]]] = {
    # before layer 1's temporal stage: purely spatial layer 1 = LSTM over the whole window
    "cnn-lstm": {"lstm_ms": lambda meta: ms_from_frames(meta.window_frames, meta.frame_rate_hz)},
}


def _saved_config(meta: CheckpointMeta) -> dict[str, Any]:
    """The checkpoint's model config in ms, converting or filling the fields it predates.

    Frame-counted fields become ms at the checkpoint's frame rate, a missing `window_ms`
    comes from its `window_frames`, and LEGACY_CONFIG fills fields added later.
    """
    config = meta.model_config_dict
    for old, new in LEGACY_FRAME_FIELDS.get(meta.model_name, {}).items():
        if old in config and new not in config:
            config[new] = ms_from_frames(int(config.pop(old)), meta.frame_rate_hz)
    if "window_ms" not in config:
        config["window_ms"] = ms_from_frames(meta.window_frames, meta.frame_rate_hz)
    for field, value in LEGACY_CONFIG.get(meta.model_name, {}).items():
        if field not in config:
            config[field] = value(meta)
    return config


def load_checkpoint(run_dir: str | Path) -> LoadedCheckpoint:
    """Rebuild the model of `run_dir` from its meta and load its weights (eval mode, CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from encoder.models import ModelConfigError, build_model

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    weights = run_dir / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{weights}: missing (the run has no saved weights)")
    try:
        model = build_model(
            meta.model_name,
            _saved_config(meta),
            meta.n_cells,
            (meta.frame_shape[0], meta.frame_shape[1]),
            meta.frame_rate_hz,
        )
    except (ModelConfigError, TypeError) as exc:
        raise CheckpointError(f"{run_dir / META_FILE}: cannot rebuild the model: {exc}") from exc
    if model.window_frames != meta.window_frames:
        raise CheckpointError(
            f"{run_dir / META_FILE}: window_ms {model.config.window_ms:g} ms is "
            f"{model.window_frames} frames at {meta.frame_rate_hz:g} Hz, but the checkpoint "
            f"records a {meta.window_frames}-frame window"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: weights do not match model {meta.model_name!r}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, tensor in own.items():
        if tuple(tensor.shape) != tuple(state[name].shape):
            raise CheckpointError(
                f"{weights}: tensor {name!r} has shape {list(state[name].shape)}, "
                f"model expects {list(tensor.shape)} (config and weights disagree)"
            )
    model.load_state_dict(state)
    model.eval()
    return LoadedCheckpoint(model=model, meta=meta, run_dir=run_dir)
