"""Fixtures of the export tests: tiny real recordings (HDF5) and tiny real checkpoints.

Every model kind of `encoder.models.MODEL_REGISTRY` gets a tiny configuration so that one
export (trace, checker, ORT-vs-torch parity) takes a second or two; kinds added to the registry
later are exported with their default configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from encoder.checkpoint import make_meta, save_checkpoint
from encoder.models import build_model
from encoder.recording import CellInfo, Recording, write_recording

FRAME_SHAPE = (24, 24)
WINDOW = 6
RATE_HZ = 100.0
PIXEL_DEG = 0.25
N_CELLS = 3
CELL_TYPES = ("ON transient", "OFF sustained", "unknown")

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "single-cnn": {"filters1": 2, "kernel1": 5, "filters2": 2, "kernel2": 3},
    # LSTM over 30 ms = 3 of 6 frames: layer 1's temporal stage (and its cache) is exported
    "cnn-lstm": {
        "filters1": 2,
        "kernel1": 5,
        "filters2": 2,
        "kernel2": 3,
        "hidden": 8,
        "lstm_ms": 30.0,
    },
    "deep-retina": {"filters1": 2, "kernel1": 5, "filters2": 2, "kernel2": 3},
    "fullyconv": {
        "filters1": 2,
        "kernel1": 5,
        "filters2": 2,
        "kernel2": 3,
        "n_types": 2,
        "type_labels": ["ON", "OFF"],
    },
    "ln": {},
    "streaming": {
        "spatial1": 2,
        "kernel1": 5,
        "channels1": 2,
        "spatial2": 2,
        "kernel2": 3,
        "channels2": 2,
        "temporal2_ms": 30.0,
        "n_types": 2,
        "type_labels": ["ON", "OFF"],
    },
}


def tiny_model(kind: str, seed: int = 0, **config_overrides: Any) -> Any:
    torch.manual_seed(seed)
    config = {
        **TINY_CONFIGS.get(kind, {}),
        "window_ms": WINDOW * 1000.0 / RATE_HZ,
        **config_overrides,
    }
    return build_model(kind, config, N_CELLS, FRAME_SHAPE, RATE_HZ).eval()


def make_recording(
    path: Path, n_frames: int = 900, counts: Callable[[np.ndarray], np.ndarray] | None = None
) -> Path:
    """Write a real recording: uint8 pink-ish noise, splits train/val/test = 500/100/300 frames.

    counts: optional function stimulus uint8 [n, H, W] → spike counts [n, N_CELLS]; default
    Poisson noise around a luminance-driven rate.
    """
    rng = np.random.default_rng(7)
    coarse = rng.uniform(0, 255, size=(n_frames, 6, 6))
    stim = np.kron(coarse, np.ones((4, 4))).astype(np.uint8)
    if counts is None:
        drive = stim[:, 8:16, 8:16].mean(axis=(1, 2)) / 255.0
        lam = np.stack([drive, 1 - drive, 0.5 * np.ones_like(drive)], axis=1)
        resp = rng.poisson(lam).astype(np.uint16)
    else:
        resp = np.asarray(counts(stim), dtype=np.uint16)
    centers = np.array([[0.0, 0.0], [1.0, -0.5], [np.nan, np.nan]], dtype=np.float32)
    rec = Recording(
        stimulus=stim,
        responses=resp,
        cells=CellInfo(ids=("c0", "c1", "c2"), types=CELL_TYPES, center_deg=centers),
        splits={
            "train": np.array([[0, 500]], dtype=np.int64),
            "val": np.array([[500, 600]], dtype=np.int64),
            "test": np.array([[600, n_frames]], dtype=np.int64),
        },
        frame_rate_hz=RATE_HZ,
        pixel_size_deg=PIXEL_DEG,
        source="export tests",
    )
    return write_recording(rec, path)


def make_checkpoint(run_dir: Path, model: Any, data: Path | None) -> Path:
    meta = make_meta(
        model,
        loss=model.default_loss,
        frame_rate_hz=RATE_HZ,
        pixel_size_deg=PIXEL_DEG,
        stimulus_kind="pink",
        cells={
            "ids": ["c0", "c1", "c2"],
            "types": list(CELL_TYPES),
            "center_deg": [[0.0, 0.0], [1.0, -0.5], [None, None]],
        },
        data_path=str(data) if data else "",
    )
    return save_checkpoint(run_dir, model, meta)


class ExportKit:
    """The helpers above, handed to tests as the `kit` fixture (importlib mode has no conftest import)."""

    FRAME_SHAPE = FRAME_SHAPE
    WINDOW = WINDOW
    RATE_HZ = RATE_HZ
    PIXEL_DEG = PIXEL_DEG
    N_CELLS = N_CELLS
    TINY_CONFIGS = TINY_CONFIGS
    tiny_model = staticmethod(tiny_model)
    make_recording = staticmethod(make_recording)
    make_checkpoint = staticmethod(make_checkpoint)


@pytest.fixture(scope="session")
def kit() -> type[ExportKit]:
    return ExportKit


@pytest.fixture(scope="session")
def recording_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_recording(tmp_path_factory.mktemp("rec") / "tiny.h5")


@pytest.fixture(scope="session")
def streaming_bundle(tmp_path_factory: pytest.TempPathFactory, recording_path: Path) -> Path:
    """A streaming-model bundle exported once through the real checkpoint path."""
    from export.exporter import ExportOptions, export_bundle
    from export.source import load_source

    base = tmp_path_factory.mktemp("streaming")
    run = make_checkpoint(base / "run", tiny_model("streaming"), recording_path)
    out = base / "bundle"
    export_bundle(load_source(run), out, ExportOptions(step_frames=200))
    return out
