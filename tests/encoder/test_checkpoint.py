"""Checkpoint round trip and refusals (real safetensors + JSON files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    make_meta,
    save_checkpoint,
)
from encoder.models import build_model

CFG = {
    "window_ms": 80.0,  # 8 frames at the meta's 100 Hz
    "kernel1": 5,
    "kernel2": 3,
    "spatial1": 3,
    "channels1": 3,
    "spatial2": 3,
    "channels2": 3,
    "temporal2_ms": 30.0,
    "n_types": 2,
}


def _meta(model: torch.nn.Module, **extra: object) -> CheckpointMeta:
    fields: dict[str, object] = {
        "loss": "poisson",
        "frame_rate_hz": 100.0,
        "pixel_size_deg": 0.25,
        "stimulus_kind": "uint8",
        "cells": {
            "ids": ["a", "b"],
            "types": ["ON transient", "OFF sustained"],
            "center_deg": [[0.5, -1.0], [float("nan"), 2.0]],
        },
        "data_path": "/data/x.h5",
        "data_sha256": "ab" * 32,
        "seed": 3,
        "epoch": 7,
        "metrics": {"val_loss": 0.25},
    }
    fields.update(extra)
    return make_meta(model, **fields)  # type: ignore[arg-type]


def test_round_trip_rebuilds_identical_model_and_meta(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("streaming", CFG, 2, (16, 16), 100.0)
    meta = _meta(model)
    save_checkpoint(tmp_path / "run", model, meta)
    loaded = load_checkpoint(tmp_path / "run")
    assert not loaded.model.training
    assert loaded.meta.model_dump(mode="json", exclude={"torch_version"}) == meta.model_dump(
        mode="json", exclude={"torch_version"}
    )
    assert loaded.meta.cells.center_deg[1] == (None, 2.0)  # NaN stored as JSON null
    assert loaded.meta.torch_version == torch.__version__
    x = torch.randn(2, 8, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor)


def test_meta_is_frozen_and_validated() -> None:
    model = build_model("streaming", CFG, 2, (16, 16), 100.0)
    meta = _meta(model)
    with pytest.raises(Exception, match="frozen"):
        meta.seed = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="frame_rate_hz"):
        _meta(model, frame_rate_hz=-1.0)
    with pytest.raises(ValueError, match="same length"):
        _meta(model, cells={"ids": ["a", "b"], "types": ["ON"], "center_deg": [[0, 0], [0, 0]]})
    with pytest.raises(ValueError, match="loss"):
        _meta(model, loss="hinge")


def test_save_refuses_meta_that_disagrees_with_model(tmp_path: Path) -> None:
    model = build_model("streaming", CFG, 2, (16, 16), 100.0)
    other = build_model("streaming", CFG, 3, (16, 16), 100.0)
    meta = _meta(model)
    with pytest.raises(CheckpointError, match="2 cells in meta ≠ 3 model outputs"):
        save_checkpoint(tmp_path / "run", other, meta)
    assert not (tmp_path / "run").exists()


def test_load_refuses_missing_altered_or_mismatched_files(tmp_path: Path) -> None:
    model = build_model("streaming", CFG, 2, (16, 16), 100.0)
    run = save_checkpoint(tmp_path / "run", model, _meta(model))
    with pytest.raises(CheckpointError, match=r"checkpoint\.json: missing"):
        load_checkpoint(tmp_path / "nothing")
    # a config that builds a different architecture than the stored weights
    raw = json.loads((run / META_FILE).read_text())
    raw["model_config_dict"]["spatial1"] = 4
    (run / META_FILE).write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(run)
    raw["model_config_dict"]["spatial1"] = 3
    raw["schema_version"] = 3  # a version from the future
    (run / META_FILE).write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="schema_version"):
        load_checkpoint(run)
    raw["schema_version"] = 2
    (run / META_FILE).write_text(json.dumps(raw))
    (run / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(run)
    (run / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_checkpoint(run)
    assert np.isfinite(raw["frame_rate_hz"])


def _as_legacy(run: Path, drop: tuple[str, ...], frames: dict[str, int]) -> None:
    """Rewrite a saved config as an older, frame-counted checkpoint wrote it."""
    meta_path = run / META_FILE
    raw = json.loads(meta_path.read_text())
    for key in drop:
        del raw["model_config_dict"][key]
    raw["model_config_dict"].update(frames)
    meta_path.write_text(json.dumps(raw))


def test_cnn_lstm_checkpoint_from_before_the_temporal_stage_loads_as_trained(
    tmp_path: Path,
) -> None:
    """A checkpoint whose saved config predates `lstm_steps` holds a purely spatial layer 1;
    it must rebuild that network (not the new default's) and give the same outputs."""
    torch.manual_seed(0)
    tiny = {"window_ms": 80.0, "kernel1": 5, "kernel2": 3, "hidden": 8}
    old = build_model("cnn-lstm", {**tiny, "lstm_ms": 990.0}, 2, (16, 16), 100.0).eval()
    assert old.time1 is None  # type: ignore[attr-defined]
    save_checkpoint(tmp_path / "run", old, _meta(old))
    # as written before lstm_steps (and before any _ms field) existed
    _as_legacy(tmp_path / "run", ("lstm_ms", "window_ms"), {})
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.model.time1 is None  # type: ignore[attr-defined]
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), old(x))
    # a current checkpoint keeps its own value: the default layout has the temporal stage
    new = build_model("cnn-lstm", {**tiny, "lstm_ms": 40.0}, 2, (16, 16), 100.0).eval()
    save_checkpoint(tmp_path / "new", new, _meta(new))
    assert load_checkpoint(tmp_path / "new").model.time1 is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "drop", [("readout", "padding", "map_hidden"), ("readout", "padding", "map_hidden", "pool")]
)
def test_cnn_lstm_checkpoint_from_before_the_map_layout_loads_as_the_dense_layout(
    tmp_path: Path, drop: tuple[str, ...]
) -> None:
    """Checkpoints saved before the map layout became the default (2026-12-04) have no
    `readout`/`padding` fields (and the oldest no `pool`): they hold YADLRetina's dense layout
    and must rebuild it, not the new default, with the same outputs; a current map-layout
    checkpoint stays a map layout."""
    torch.manual_seed(0)
    tiny = {"window_ms": 80.0, "kernel1": 5, "kernel2": 3, "hidden": 8, "lstm_ms": 40.0}
    dense = {**tiny, "readout": "dense", "padding": "valid", "pool": 1}
    old = build_model("cnn-lstm", dense, 2, (16, 16), 100.0).eval()
    save_checkpoint(tmp_path / "run", old, _meta(old))
    _as_legacy(tmp_path / "run", drop, {})
    loaded = load_checkpoint(tmp_path / "run").model
    assert not loaded.core.per_location  # type: ignore[union-attr]
    x = torch.randn(2, 10, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.forward_chunk(x), old.forward_chunk(x))
    new = build_model("cnn-lstm", tiny, 2, (16, 16), 100.0).eval()
    save_checkpoint(tmp_path / "new", new, _meta(new))
    assert load_checkpoint(tmp_path / "new").model.core.per_location  # type: ignore[union-attr]


@pytest.mark.parametrize("rate_hz", [40.0, 100.0, 120.0])
def test_frame_counted_checkpoints_load_with_identical_outputs(
    tmp_path: Path, rate_hz: float
) -> None:
    """Checkpoints written when temporal fields were frame counts (`lstm_steps`, `temporal2`,
    no `window_ms`) map them to ms through their own frame rate and rebuild the same network."""
    torch.manual_seed(0)
    cases = {
        "cnn-lstm": ({"kernel1": 5, "kernel2": 3, "hidden": 8}, "lstm_ms", "lstm_steps", 3),
        "streaming": (
            {k: v for k, v in CFG.items() if "_ms" not in k},
            "temporal2_ms",
            "temporal2",
            2,
        ),
    }
    for name, (cfg, ms_field, old_field, n) in cases.items():
        model = build_model(
            name,
            {**cfg, "window_ms": 7000.0 / rate_hz, ms_field: n * 1000.0 / rate_hz},
            2,
            (16, 16),
            rate_hz,
        ).eval()
        assert model.window_frames == 7
        run = tmp_path / f"{name}-{rate_hz:g}"
        save_checkpoint(run, model, _meta(model, frame_rate_hz=rate_hz))
        _as_legacy(run, (ms_field, "window_ms"), {old_field: n})
        loaded = load_checkpoint(run).model
        assert loaded.temporal_frames() == model.temporal_frames()
        x = torch.randn(2, 9, 16, 16)
        with torch.no_grad():
            assert torch.equal(loaded.forward_chunk(x), model.forward_chunk(x))


def test_shipped_default_checkpoint_still_gives_the_shipped_bundles_outputs() -> None:
    """export/default_checkpoint (trained at 100 Hz with `temporal2` = 5 frames) loads through
    the ms mapping and reproduces the shipped ONNX window form (real ONNX Runtime)."""
    import onnxruntime as ort

    root = Path(__file__).resolve().parents[2]
    ckpt = load_checkpoint(root / "export" / "default_checkpoint")
    assert "temporal2" in json.loads((ckpt.run_dir / META_FILE).read_text())["model_config_dict"]
    assert ckpt.model.temporal_frames() == {"window_ms": 25, "temporal2_ms": 5}
    windows = np.load(ckpt.run_dir / "parity_data.npz")["windows"][:2]
    session = ort.InferenceSession(str(root / "runtime" / "default_bundle" / "model.onnx"))
    shipped = np.concatenate([session.run(None, {"window": w[None]})[0] for w in windows])
    with torch.no_grad():
        maps = ckpt.model.forward_maps(torch.from_numpy(windows)).numpy()  # type: ignore[operator]
    np.testing.assert_allclose(maps * ckpt.meta.frame_rate_hz, shipped, rtol=1e-4, atol=1e-4)
