"""Checkpoints: a run directory with `model.safetensors` (weights) + `checkpoint.json` (meta).

The meta holds everything needed to rebuild and serve the model without guessing: model
name and config, loss, frame rate, window, frame size, pixel size, stimulus kind, the cells
(ids, types, centres) and where the training data came from (path + sha256). The export
engineer rebuilds models from it (`load_checkpoint(run_dir).model`).

Two kinds share the file names and schema: a single-session checkpoint (`CheckpointMeta`,
one `cells`) and a multi-session one (`MultiSessionMeta`: one shared core, `sessions` each
with its cells and data). `load_checkpoint(run_dir, session=NAME)` gives a session's
single-session view of either kind; `load_multisession_checkpoint` the whole model.
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
from encoder.models.multisession import SESSION_NAME, MultiSessionModel
from encoder.timebase import ms_from_frames
from hardware.untrusted_json import UntrustedFileError, load_untrusted_json

WEIGHTS_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
CHECKPOINT_SCHEMA = "npe.checkpoint"
#: 2: weights keyed `core.…` / `readout.…` (models are a core plus a readout), and
#: multi-session checkpoints (`sessions`). Version 1 files load through `LEGACY_KEYS`.
CHECKPOINT_VERSION = 2

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


class _ModelMeta(BaseModel):
    """What every checkpoint says of its model, one session or several: name, config, loss,
    and the data geometry its kernels were built for (frame rate, window, frame shape)."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    schema_name: Literal["npe.checkpoint"] = "npe.checkpoint"
    model_name: str
    model_config_values: dict[str, Any] = Field(alias="model_config_dict", default_factory=dict)
    loss: LossName
    frame_rate_hz: float = Field(gt=0)
    window_frames: int = Field(ge=1)
    frame_shape: tuple[int, int]
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
    def model_config_dict(self) -> dict[str, Any]:
        return dict(self.model_config_values)


class CheckpointMeta(_ModelMeta):
    """Validated description of a trained single-session model (frozen)."""

    schema_version: Literal[1, 2] = 2
    pixel_size_deg: float = Field(gt=0)
    stimulus_kind: str
    cells: CellsMeta
    data_path: str = ""
    data_sha256: str = ""

    @property
    def n_cells(self) -> int:
        return len(self.cells.ids)


class SessionMeta(BaseModel):
    """One session of a multi-session checkpoint: its cells and the recording they come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=SESSION_NAME.pattern)
    cells: CellsMeta
    pixel_size_deg: float = Field(gt=0)
    stimulus_kind: str
    data_path: str = ""
    data_sha256: str = ""

    @property
    def n_cells(self) -> int:
        return len(self.cells.ids)


class MultiSessionMeta(_ModelMeta):
    """Validated description of a multi-session model (frozen): shared geometry, sessions.

    Every session shares frame rate, window and frame shape (the core's kernels are in
    frames and pixels); each has its own cells, pixel size and training recording.
    """

    schema_version: Literal[2] = 2
    sessions: tuple[SessionMeta, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_sessions(self) -> MultiSessionMeta:
        names = self.session_names
        if len(set(names)) != len(names):
            raise ValueError(f"sessions: names must be unique, got {list(names)}")
        return self

    @property
    def session_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sessions)

    @property
    def cells_per_session(self) -> dict[str, int]:
        return {s.name: s.n_cells for s in self.sessions}

    def session(self, name: str) -> SessionMeta:
        """The session called `name`, or a refusal listing the sessions."""
        for s in self.sessions:
            if s.name == name:
                return s
        raise CheckpointError(
            f"unknown session {name!r}; this checkpoint has {', '.join(self.session_names)}"
        )

    def for_session(self, name: str) -> CheckpointMeta:
        """The single-session meta of session `name` (what its exported bundle describes)."""
        s = self.session(name)
        return CheckpointMeta.model_validate(
            {
                "schema_version": self.schema_version,
                "model_name": self.model_name,
                "model_config_dict": self.model_config_dict,
                "loss": self.loss,
                "frame_rate_hz": self.frame_rate_hz,
                "window_frames": self.window_frames,
                "frame_shape": self.frame_shape,
                "pixel_size_deg": s.pixel_size_deg,
                "stimulus_kind": s.stimulus_kind,
                "cells": s.cells,
                "data_path": s.data_path,
                "data_sha256": s.data_sha256,
                "seed": self.seed,
                "epoch": self.epoch,
                "metrics": self.metrics,
                "torch_version": self.torch_version,
            }
        )


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A rebuilt model (eval mode, CPU) and its meta.

    For one session of a multi-session checkpoint, `model` is that session's view (shared
    core + its readout), `meta` its single-session meta and `session` its name.
    """

    model: RetinaModel
    meta: CheckpointMeta
    run_dir: Path
    session: str = ""


@dataclass(frozen=True)
class LoadedMultiSessionCheckpoint:
    """A rebuilt multi-session model (eval mode, CPU) and its meta."""

    model: MultiSessionModel
    meta: MultiSessionMeta
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


def make_multisession_meta(
    model: MultiSessionModel, sessions: list[SessionMeta] | list[dict[str, Any]], **fields: Any
) -> MultiSessionMeta:
    """MultiSessionMeta for `model` (name, config, frame rate, window and frame shape taken from
    the model; `sessions` in the model's session order)."""
    base: dict[str, Any] = {
        "model_name": model.model_name,
        "model_config_dict": model.config_dict(),
        "frame_rate_hz": model.frame_rate_hz,
        "window_frames": model.window_frames,
        "frame_shape": model.frame_shape,
        "sessions": sessions,
    }
    base.update(fields)
    return MultiSessionMeta.model_validate(base)


def _disagreements(model: RetinaModel, meta: CheckpointMeta | MultiSessionMeta) -> list[str]:
    """What a meta says differently from the model it is saved with (empty: they agree)."""
    problems = []
    if isinstance(meta, MultiSessionMeta):
        if not isinstance(model, MultiSessionModel):
            return [f"a multi-session meta for a single-session {model.name!r} model"]
        if meta.model_name != model.model_name:
            problems.append(f"model name {meta.model_name!r} ≠ model {model.model_name!r}")
        if meta.cells_per_session != model.n_cells_per_session or meta.session_names != tuple(
            model.sessions
        ):
            problems.append(
                f"sessions {meta.cells_per_session} in meta ≠ model {model.n_cells_per_session}"
            )
    else:
        if isinstance(model, MultiSessionModel):
            return ["a single-session meta for a multi-session model (use MultiSessionMeta)"]
        if meta.model_name != model.name:
            problems.append(f"model name {meta.model_name!r} ≠ model {model.name!r}")
        if meta.n_cells != model.n_cells:
            problems.append(f"{meta.n_cells} cells in meta ≠ {model.n_cells} model outputs")
    return problems


def save_checkpoint(
    run_dir: str | Path, model: RetinaModel, meta: CheckpointMeta | MultiSessionMeta
) -> Path:
    """Write weights and meta into `run_dir` (created); returns the directory.

    Refuses a meta that disagrees with the model (name, cells or sessions, window, frame
    shape), because a checkpoint that rebuilds a different model than it stores would fail
    only at export time. A `MultiSessionModel` is saved with a `MultiSessionMeta`.
    """
    import torch
    from safetensors.torch import save_file

    problems = _disagreements(model, meta)
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
    update: dict[str, Any] = {"torch_version": torch.__version__}
    update["schema_version"] = CHECKPOINT_VERSION
    meta = meta.model_copy(update=update)
    payload = meta.model_dump(mode="json", by_alias=True)
    _atomic_write(run_dir / META_FILE, (json.dumps(payload, indent=2) + "\n").encode())
    return run_dir


def read_any_meta(run_dir: str | Path) -> CheckpointMeta | MultiSessionMeta:
    """Read and validate `checkpoint.json` of `run_dir`: either kind (a `sessions` field
    marks a multi-session checkpoint)."""
    path = Path(run_dir) / META_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: missing (is {run_dir} a training run directory?)")
    try:
        raw = load_untrusted_json(path, "checkpoint config")
    except UntrustedFileError as exc:
        raise CheckpointError(str(exc)) from exc
    kind: type[CheckpointMeta] | type[MultiSessionMeta] = (
        MultiSessionMeta if isinstance(raw, dict) and "sessions" in raw else CheckpointMeta
    )
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(f"{path}: invalid field {where!r}: {first['msg']}") from exc


def read_meta(run_dir: str | Path) -> CheckpointMeta:
    """Read and validate the `checkpoint.json` of a single-session run directory."""
    meta = read_any_meta(run_dir)
    if isinstance(meta, MultiSessionMeta):
        raise CheckpointError(_needs_session(run_dir, meta))
    return meta


def _needs_session(run_dir: str | Path, meta: MultiSessionMeta) -> str:
    return (
        f"{run_dir}: a multi-session checkpoint (sessions {', '.join(meta.session_names)}); "
        "choose one with --session NAME"
    )


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
LEGACY_CONFIG: dict[str, dict[str, Callable[[CheckpointMeta | MultiSessionMeta], Any]]] = {
    # before layer 1's temporal stage: purely spatial layer 1 = LSTM over the whole window
    # and before the map layout became the default (2026-12-04): YADLRetina's dense layout
    "cnn-lstm": {
        "lstm_ms": lambda meta: ms_from_frames(meta.window_frames, meta.frame_rate_hz),
        "pool": lambda meta: 1,
        "readout": lambda meta: "dense",
        "padding": lambda meta: "valid",
    },
    # before the per-cell gain and offset of the cell selector
    "streaming": {"cell_affine": lambda meta: False},
}


def _saved_config(meta: CheckpointMeta | MultiSessionMeta) -> dict[str, Any]:
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


#: Weight names of version-1 checkpoints (each model's own layers) → today's `core.…` /
#: `readout.…` names, as (old prefix, new prefix) per model. Why a table: the weights are the
#: same tensors, only their place in the model moved when models became core + readout.
LEGACY_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "single-cnn": (
        ("conv1.", "core.conv1."),
        ("conv2.", "core.conv2."),
        ("dense.", "readout.linear."),
    ),
    "cnn-lstm": (
        ("conv1.", "core.conv1."),
        ("time1.", "core.time1."),
        ("conv2.", "core.conv2."),
        ("lstm_input.", "core.lstm_input."),
        ("recurrent.", "core.recurrent."),
        ("readout.", "readout.linear."),
    ),
    "deep-retina": (
        ("conv1.", "core.conv1."),
        ("conv2.", "core.conv2."),
        ("dense.", "readout.linear."),
    ),
    "fullyconv": (
        ("conv1.", "core.conv1."),
        ("conv2.", "core.conv2."),
        ("readout.", "core.type_maps."),
        ("selector.", "readout."),
    ),
    "streaming": (
        ("space1.", "core.space1."),
        ("time1.", "core.time1."),
        ("space2.", "core.space2."),
        ("time2.", "core.time2."),
        ("readout.", "core.type_maps."),
        ("selector.", "readout."),
    ),
    "ln": tuple((f"{n}", f"readout.{n}") for n in ("filters", "g_mean", "g_std", "gain", "offset")),
}


def legacy_state(model_name: str, state: dict[str, Any]) -> dict[str, Any]:
    """A version-1 state dict under today's names (unknown names are kept, and then refused)."""
    rules = LEGACY_KEYS.get(model_name, ())
    renamed: dict[str, Any] = {}
    for key, tensor in state.items():
        new = key
        for old, replacement in rules:
            if key == old or key.startswith(old):
                new = replacement + key[len(old) :]
                break
        renamed[new] = tensor
    return renamed


def _build(meta: CheckpointMeta | MultiSessionMeta, run_dir: Path) -> RetinaModel:
    """The model `meta` describes, freshly built (weights not loaded yet)."""
    from encoder.models import ModelConfigError, build_model
    from encoder.models.multisession import build_multisession_model

    shape = (meta.frame_shape[0], meta.frame_shape[1])
    try:
        model: RetinaModel
        if isinstance(meta, MultiSessionMeta):
            model = build_multisession_model(
                meta.model_name,
                _saved_config(meta),
                frame_shape=shape,
                frame_rate_hz=meta.frame_rate_hz,
                cells_per_session=meta.cells_per_session,
            )
        else:
            model = build_model(
                meta.model_name, _saved_config(meta), meta.n_cells, shape, meta.frame_rate_hz
            )
    except (ModelConfigError, TypeError) as exc:
        raise CheckpointError(f"{run_dir / META_FILE}: cannot rebuild the model: {exc}") from exc
    if model.window_frames != meta.window_frames:
        raise CheckpointError(
            f"{run_dir / META_FILE}: window_ms {model.config.window_ms:g} ms is "
            f"{model.window_frames} frames at {meta.frame_rate_hz:g} Hz, but the checkpoint "
            f"records a {meta.window_frames}-frame window"
        )
    return model


def _load_weights(
    model: RetinaModel, meta: CheckpointMeta | MultiSessionMeta, run_dir: Path
) -> None:
    """Load `run_dir`'s weights into `model` after checking every name and shape."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = run_dir / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{weights}: missing (the run has no saved weights)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from exc
    if meta.schema_version == 1:
        state = legacy_state(meta.model_name, state)
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


def load_checkpoint(run_dir: str | Path, session: str | None = None) -> LoadedCheckpoint:
    """Rebuild the model of `run_dir` from its meta and load its weights (eval mode, CPU).

    A multi-session checkpoint needs `session`: the result is that session's single-session
    view. A single-session checkpoint refuses a `session`.
    """
    run_dir = Path(run_dir)
    meta = read_any_meta(run_dir)
    if isinstance(meta, MultiSessionMeta):
        if session is None:
            raise CheckpointError(_needs_session(run_dir, meta))
        view_meta = meta.for_session(session)
        multi = load_multisession_checkpoint(run_dir)
        return LoadedCheckpoint(
            model=multi.model.session_model(session).eval(),
            meta=view_meta,
            run_dir=run_dir,
            session=session,
        )
    if session is not None:
        raise CheckpointError(
            f"{run_dir}: a single-session checkpoint has no sessions (drop --session {session})"
        )
    model = _build(meta, run_dir)
    _load_weights(model, meta, run_dir)
    return LoadedCheckpoint(model=model, meta=meta, run_dir=run_dir)


def load_multisession_checkpoint(run_dir: str | Path) -> LoadedMultiSessionCheckpoint:
    """Rebuild a multi-session model (shared core + a readout per session) and its weights."""
    run_dir = Path(run_dir)
    meta = read_any_meta(run_dir)
    if not isinstance(meta, MultiSessionMeta):
        raise CheckpointError(f"{run_dir}: a single-session checkpoint, not a multi-session one")
    model = _build(meta, run_dir)
    assert isinstance(model, MultiSessionModel)
    _load_weights(model, meta, run_dir)
    return LoadedMultiSessionCheckpoint(model=model, meta=meta, run_dir=run_dir)
