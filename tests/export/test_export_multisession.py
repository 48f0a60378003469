"""Export of a multi-session checkpoint: one session's cells, or the shared rate maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from encoder.checkpoint import load_multisession_checkpoint, make_multisession_meta, save_checkpoint
from encoder.losses import poisson_loss
from encoder.models.multisession import MultiSessionModel, build_multisession_model
from encoder.recording import read_recording, stimulus_as_contrast
from export.cli import app
from export.exporter import ExportOptions, export_bundle
from export.source import ExportError, load_source
from runtime.bundle import load_bundle

pytestmark = pytest.mark.cli
runner = CliRunner()
CELLS = {"a": 3, "b": 2}


def _train_a_few_steps(model: MultiSessionModel, stimulus: np.ndarray, steps: int = 4) -> None:
    """Adam on Poisson counts, alternating sessions: every readout and the core move."""
    rng = np.random.default_rng(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    length = model.window_frames + 15
    for step in range(steps):
        session = model.sessions[step % len(model.sessions)]
        start = int(rng.integers(0, len(stimulus) - length))
        x = torch.from_numpy(stimulus[None, start : start + length])
        pred = model.forward_chunk(x, session)
        target = torch.from_numpy(rng.poisson(1.0, size=pred.shape).astype(np.float32))
        loss = poisson_loss(pred, target) + model.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _run(kind: str, tmp: Path, kit: Any) -> Path:
    data = kit.make_recording(tmp / f"{kind}.h5")
    stimulus = stimulus_as_contrast(read_recording(data).stimulus)
    torch.manual_seed(0)
    config = {**kit.TINY_CONFIGS[kind], "window_ms": kit.WINDOW * 1000.0 / kit.RATE_HZ}
    model = build_multisession_model(
        kind,
        config,
        frame_shape=kit.FRAME_SHAPE,
        frame_rate_hz=kit.RATE_HZ,
        cells_per_session=dict(CELLS),
    )
    _train_a_few_steps(model, stimulus)
    sessions = [
        {
            "name": s,
            "cells": {
                "ids": [f"{s}{i}" for i in range(n)],
                "types": ["ON transient"] * n,
                "center_deg": [[0.1 * i, 0.0] for i in range(n)],
            },
            "pixel_size_deg": kit.PIXEL_DEG,
            "stimulus_kind": "pink",
            "data_path": str(data),
        }
        for s, n in CELLS.items()
    ]
    meta = make_multisession_meta(model, sessions, loss="poisson")
    return save_checkpoint(tmp / f"{kind}_run", model, meta)


def _ort_window(bundle: Path, windows: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.stack([sess.run(["rates"], {"window": w[None]})[0][0] for w in windows])


def test_export_of_one_session_runs_in_ort_like_its_torch_view(tmp_path: Path, kit: Any) -> None:
    run = _run("cnn-lstm", tmp_path, kit)
    source = load_source(run, "b")
    assert source.session == "b" and source.sessions == ("a", "b")
    manifest = export_bundle(source, tmp_path / "bundle_b", ExportOptions(step_frames=200))
    assert manifest.output.n == 2 and manifest.output.ids == ("b0", "b1")
    assert {f.form for f in manifest.forms} == {"window", "step"}  # the step form exported too
    assert all(p.passed for p in manifest.parity.forms)
    load_bundle(tmp_path / "bundle_b")

    multi = load_multisession_checkpoint(run).model
    windows = np.random.default_rng(1).uniform(-1, 1, (6, kit.WINDOW, *kit.FRAME_SHAPE))
    windows = windows.astype(np.float32)
    with torch.no_grad():
        torch_rates = multi(torch.from_numpy(windows), "b").numpy() * kit.RATE_HZ
        other = multi(torch.from_numpy(windows), "a").numpy() * kit.RATE_HZ
    onnx_rates = _ort_window(tmp_path / "bundle_b", windows)
    assert onnx_rates.shape == (6, 2)
    np.testing.assert_allclose(onnx_rates, torch_rates, rtol=1e-4, atol=1e-4)
    assert other.shape == (6, 3)  # the other session's readout is not what was exported


def test_multisession_export_without_or_with_a_wrong_session_is_refused(
    tmp_path: Path, kit: Any
) -> None:
    run = _run("deep-retina", tmp_path, kit)
    with pytest.raises(ExportError, match=r"sessions a, b\); choose whose cells"):
        load_source(run)
    out = tmp_path / "bundle"
    res = runner.invoke(app, ["export", str(run), "--out", str(out)])
    assert res.exit_code == 2
    assert "sessions a, b" in res.output and "--session" in res.output
    assert "Traceback" not in res.output and not out.exists()
    res = runner.invoke(app, ["export", str(run), "--out", str(out), "--session", "zz"])
    assert res.exit_code == 2 and "unknown session 'zz'" in res.output and not out.exists()


def test_rate_maps_of_a_multisession_model_export_without_a_session(
    tmp_path: Path, kit: Any
) -> None:
    run = _run("streaming", tmp_path, kit)
    out = tmp_path / "maps"
    res = runner.invoke(app, ["export", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    manifest = load_bundle(out).manifest
    assert manifest.model.kind == "ratemap"
    multi = load_multisession_checkpoint(run).model
    windows = np.random.default_rng(2).uniform(-1, 1, (3, kit.WINDOW, *kit.FRAME_SHAPE))
    windows = windows.astype(np.float32)
    with torch.no_grad():
        maps = multi.core(torch.from_numpy(windows)).numpy() * kit.RATE_HZ
    np.testing.assert_allclose(_ort_window(out, windows), maps, rtol=1e-4, atol=1e-4)
    source = load_source(run)
    assert source.session == "" and source.sessions == ("a", "b")
    with pytest.raises(ExportError, match="--int8 scores the rate maps through one session"):
        export_bundle(
            source,
            tmp_path / "int8",
            ExportOptions(int8_calibration=Path(str(source.data_path))),
        )
    assert not (tmp_path / "int8").exists()
