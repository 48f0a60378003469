"""INT8 accuracy guard and ORT-format output, on a recording whose responses the model explains.

The recording's spike counts are Poisson draws from the model's own (rescaled) predictions, so
the fp32 model has a clearly positive test-split PCC and quantisation error shows up in it.
Good calibration (the recording's train split) keeps the drop ≤ 0.01 and the INT8 model is
written; calibration windows of almost zero contrast set activation ranges far too narrow — a
real calibration fault — and the guard must refuse to write the INT8 model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from encoder.recording import stimulus_as_contrast
from export.exporter import ExportOptions, export_bundle
from export.source import load_source
from runtime.bundle import load_bundle


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory, kit: Any) -> tuple[Path, Path]:
    """(run dir, recording) of a single-cnn whose recording it predicts well."""
    base = tmp_path_factory.mktemp("int8")
    model = kit.tiny_model("single-cnn", seed=1)

    def counts(stim: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(stimulus_as_contrast(stim))[None]
        with torch.no_grad():
            lam = model.forward_chunk(x)[0].numpy()
        lam = 3.0 * (lam - lam.min(0)) / (lam.max(0) - lam.min(0))
        lam = np.concatenate([np.zeros((kit.WINDOW - 1, lam.shape[1])), lam])
        return np.random.default_rng(0).poisson(lam)

    rec = kit.make_recording(base / "explained.h5", counts=counts)
    return kit.make_checkpoint(base / "run", model, rec), rec


def test_int8_written_when_accuracy_holds_and_ort_format_listed(
    explained: tuple[Path, Path], tmp_path: Path
) -> None:
    run, rec = explained
    out = tmp_path / "bundle"
    m = export_bundle(
        load_source(run), out, ExportOptions(int8_calibration=rec, ort=True, n_real=4)
    )
    q = m.parity.int8
    assert q is not None and q.passed and q.file == "model.int8.onnx"
    assert q.mean_pcc_fp32 > 0.2  # the data is explainable, so the guard measures something
    assert q.pcc_drop == pytest.approx(q.mean_pcc_fp32 - q.mean_pcc_int8)
    assert q.pcc_drop <= 0.01
    assert q.latency_ms_fp32 > 0 and q.latency_ms_int8 > 0
    assert q.n_test_windows > 100
    bundle = load_bundle(out)
    int8 = bundle.manifest.find_form("window", "int8")
    assert int8 is not None and "model.int8.onnx" in bundle.manifest.files
    assert int8.inputs == bundle.manifest.forms[0].inputs
    ops = {n.op_type for n in __import__("onnx").load(str(out / int8.file)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    # ORT-format copies: listed, hashed, and they compute what the .onnx computes.
    fp32 = bundle.manifest.forms[0]
    assert fp32.ort_file == "model.ort" and "model.ort" in bundle.manifest.files
    x = np.random.default_rng(2).uniform(-1, 1, fp32.data_input.shape).astype(np.float32)
    a = ort.InferenceSession(str(out / fp32.file)).run(None, {"window": x})[0]
    b = ort.InferenceSession(str(out / "model.ort")).run(None, {"window": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_int8_not_written_when_calibration_is_unrepresentative(
    explained: tuple[Path, Path], tmp_path: Path, kit: Any
) -> None:
    run, rec = explained
    bad = tmp_path / "flat.npz"
    rng = np.random.default_rng(3)
    windows = rng.uniform(-0.01, 0.01, (16, kit.WINDOW, *kit.FRAME_SHAPE)).astype(np.float32)
    np.savez(bad, windows=windows, frame_rate_hz=kit.RATE_HZ, source="flat grey")
    out = tmp_path / "bundle"
    m = export_bundle(
        load_source(run), out, ExportOptions(int8_calibration=bad, data=rec, n_real=4)
    )
    q = m.parity.int8
    assert q is not None and not q.passed and q.file is None
    assert q.pcc_drop > 0.01
    assert not (out / "model.int8.onnx").exists()
    bundle = load_bundle(out)  # the fp32 bundle is still complete and verified
    assert bundle.manifest.find_form("window", "int8") is None
    assert bundle.manifest.parity.int8 == q


def test_int8_needs_a_recording_to_score_accuracy(
    explained: tuple[Path, Path], tmp_path: Path, kit: Any
) -> None:
    run, _ = explained
    cal = tmp_path / "cal.npz"
    windows = np.zeros((4, kit.WINDOW, *kit.FRAME_SHAPE), np.float32)
    np.savez(cal, windows=windows, frame_rate_hz=kit.RATE_HZ, source="x")
    src = load_source(run)
    src = type(src)(**{**src.__dict__, "data_path": None})
    from export.source import ExportError

    with pytest.raises(ExportError, match=r"--int8 needs a recording"):
        export_bundle(src, tmp_path / "b", ExportOptions(int8_calibration=cal))
    assert not (tmp_path / "b").exists()


def test_int8_quantises_convolutions_and_keeps_the_recurrent_part_float(
    tmp_path: Path, kit: Any
) -> None:
    import onnx

    from export.onnx_io import export_module
    from export.quantize import _quantize
    from export.wrappers import WindowRates
    from runtime.bundle import ModelForm, TensorSpec

    model = kit.tiny_model("cnn-lstm")
    src = tmp_path / "lstm.onnx"
    example = torch.zeros(1, kit.WINDOW, *kit.FRAME_SHAPE)
    export_module(WindowRates(model, kit.RATE_HZ, False), (example,), ["window"], ["rates"], src)
    form = ModelForm(
        file="lstm.onnx",
        form="window",
        inputs=(TensorSpec(name="window", shape=tuple(example.shape)),),
        outputs=(TensorSpec(name="rates", shape=(1, kit.N_CELLS)),),
    )
    windows = np.random.default_rng(0).uniform(-1, 1, (8, *example.shape[1:])).astype(np.float32)
    _quantize(src, tmp_path / "lstm.int8.onnx", form, windows)
    graph = onnx.load(str(tmp_path / "lstm.int8.onnx")).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    init = {t.name for t in graph.initializer}

    def quantised_inputs(op: str) -> list[bool]:
        return [
            producer.get(i) == "DequantizeLinear"
            for n in graph.node
            if n.op_type == op
            for i in n.input[:2]
            if i and i not in init
        ]

    convs = quantised_inputs("Conv")
    assert convs and all(convs)  # every convolution runs on QDQ tensors
    gemms = quantised_inputs("MatMul") + quantised_inputs("Gemm")
    assert gemms and not any(gemms)  # LSTM gates and readout stay fp32
