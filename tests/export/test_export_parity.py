"""Parity of every registered model kind: ONNX Runtime against PyTorch, fp32, real + random data.

Besides the exporter's own figures, each test recomputes ORT vs torch itself (independently of
`export.parity`) on real windows from the recording, and for stateful models step by step over
200 consecutive frames against `forward_sequence`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from encoder.models import MODEL_REGISTRY
from encoder.recording import read_recording, stimulus_as_contrast
from export.exporter import ExportOptions, export_bundle
from export.source import load_source
from runtime.bundle import load_bundle


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("kind", "overrides"),
    [(kind, {}) for kind in sorted(MODEL_REGISTRY)]
    + [("cnn-lstm", {"pool": 2})]  # the optional pooling before the LSTM projection
    + [("cnn-lstm", {"readout": "map"})]  # an LSTM per place, each cell read at its own
    + [("cnn-lstm", {"readout": "map", "padding": "same", "pool": 2})]
    # the rate-map model without the per-cell affine of its cell selector (older checkpoints)
    + [("streaming", {"cell_affine": False})],
)
def test_every_model_kind_exports_with_fp32_parity(
    kind: str, overrides: dict[str, Any], tmp_path: Path, recording_path: Path, kit: Any
) -> None:
    model = kit.tiny_model(kind, **overrides)
    run = kit.make_checkpoint(tmp_path / "run", model, recording_path)
    manifest = export_bundle(
        load_source(run), tmp_path / "bundle", ExportOptions(step_frames=200, n_real=8)
    )
    bundle = load_bundle(tmp_path / "bundle")
    m = bundle.manifest
    assert m.model.name == kind
    assert m.model.stateful == bool(model.stateful)
    assert m.model.kind == ("ratemap" if model.ratemap else "cells")
    assert [f.form for f in m.forms] == (["window", "step"] if model.stateful else ["window"])
    for fig in manifest.parity.forms:
        assert fig.passed and fig.correlation >= 0.99999, fig
        assert fig.n_real > 0  # real windows/clip from the checkpoint's training recording
    if model.stateful:
        assert manifest.parity.step_frames >= 200

    # Independent check on real windows of the test split: ORT window form == torch × rate.
    rec = read_recording(recording_path)
    contrast = stimulus_as_contrast(rec.stimulus[600:700])
    windows = np.stack([contrast[i : i + kit.WINDOW] for i in range(0, 60, 6)])
    sess = _session(bundle.path / "model.onnx")
    got = np.stack([sess.run(["rates"], {"window": w[None]})[0][0] for w in windows])
    with torch.no_grad():
        x = torch.from_numpy(windows)
        ref = (model.forward_maps(x) if model.ratemap else model(x)).numpy() * kit.RATE_HZ
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    assert int(np.prod(got.shape[1:])) == m.output.n
    if model.stateful:
        _check_step_by_step(model, bundle.path, recording_path, kit)


def _check_step_by_step(model: Any, bundle_dir: Path, recording_path: Path, kit: Any) -> None:
    """The stateful step-by-step check: 200 consecutive real frames through the step form."""
    form = load_bundle(bundle_dir).manifest.find_form("step")
    assert form is not None
    rec = read_recording(recording_path)
    clip = stimulus_as_contrast(rec.stimulus[600:800])  # 200 consecutive real frames
    sess = _session(bundle_dir / form.file)
    state = {s.input: np.zeros(s.shape, np.float32) for s in form.state}
    outs = []
    for frame in clip:
        res = sess.run(["rates", *[s.output for s in form.state]], {"frame": frame[None], **state})
        outs.append(res[0][0])
        state = {s.input: v for s, v in zip(form.state, res[1:], strict=True)}
    got = np.stack(outs)
    x = torch.from_numpy(clip[None])
    with torch.no_grad():
        seq = model.forward_sequence_maps(x) if model.ratemap else model.forward_sequence(x)
    ref = seq[0].numpy() * kit.RATE_HZ
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] >= 0.99999
    if model.ratemap:  # the streaming model's memory is the window: step == full window
        windows = x[0].unfold(0, kit.WINDOW, 1).permute(0, 3, 1, 2)
        with torch.no_grad():
            full = model.forward_maps(windows).numpy() * kit.RATE_HZ
        np.testing.assert_allclose(
            got[kit.WINDOW - 1 :], full, rtol=1e-4, atol=1e-4 * float(np.abs(full).max())
        )
    assert got.shape == (200, *ref.shape[1:])  # 200 steps were compared
