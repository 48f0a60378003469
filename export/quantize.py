"""Static INT8 (QDQ) quantisation of the window form, guarded by accuracy on the test split.

Why this recipe (REFERENCES, runtime facts): ONNX Runtime's static QDQ quantisation with a
calibration reader pays off for convolutions on CPUs with VNNI; recurrent parts must stay float
(or use dynamic quantisation), so only Conv nodes are quantised (weights per channel, int8;
activations uint8 from MinMax calibration) and everything else — the CNN-LSTM's gates, dense
readouts, softplus — stays fp32. The INT8 model is written only if the mean Pearson correlation
with the recorded responses on the test split drops by at most 0.01; both models' latency is
measured (batch 1, one thread) and recorded.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export import onnx_io, parity
from export.data import StimulusData, load_stimulus
from export.source import ExportError, ExportSource
from runtime.bundle import BundleManifest, Int8Figures, ModelForm

INT8_FILE = "model.int8.onnx"
MAX_PCC_DROP = 0.01
N_CALIBRATION = 64
N_TEST = 400


class _Reader:
    """CalibrationDataReader over windows [n, T, H, W] (one batch-1 feed per window)."""

    def __init__(self, input_name: str, windows: NDArray[np.float32]) -> None:
        self._name = input_name
        self._windows = windows
        self._i = 0

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        if self._i >= len(self._windows):
            return None
        w = self._windows[self._i][None].astype(np.float32)
        self._i += 1
        return {self._name: w}

    def rewind(self) -> None:
        self._i = 0


def mean_pcc(pred: NDArray[np.float64], target: NDArray[np.float64]) -> float:
    """Mean over cells of Pearson r between prediction and target columns ([n, cells] each).

    Cells whose target or prediction is constant over the test windows have no correlation and
    are skipped; NaN if none is left.
    """
    rs = []
    for c in range(target.shape[1]):
        p, t = pred[:, c], target[:, c]
        if np.std(p) > 1e-12 and np.std(t) > 1e-12:
            rs.append(float(np.corrcoef(p, t)[0, 1]))
    return float(np.mean(rs)) if rs else float("nan")


def _to_cells(source: ExportSource, rates: NDArray[np.float32]) -> NDArray[np.float64]:
    """Bundle outputs [n, ...] (spikes/s) → per-cell predictions [n, n_cells] for scoring.

    Rate-map models score through their trained cell selector (map → recorded cells), applied
    to the ONNX output, so the INT8 error in the maps is what gets measured.
    """
    if not source.is_ratemap:
        return rates.reshape(len(rates), -1).astype(np.float64)
    import torch

    with torch.no_grad():
        maps = torch.from_numpy(np.ascontiguousarray(rates, dtype=np.float32))
        cells = source.model.selector(maps)
    return cells.numpy().astype(np.float64)


def _latency_ms(sess: Any, form: ModelForm, window: NDArray[np.float32], n: int = 200) -> float:
    """Median wall time of one batch-1 call (after 20 warm-up calls), in ms."""
    feed = {form.data_input.name: window[None].astype(np.float32)}
    out = [form.rate_output.name]
    for _ in range(20):
        sess.run(out, feed)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(out, feed)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def test_recording(source: ExportSource, calibration: Path, data: Path | None) -> Path:
    """The recording whose test split scores INT8 accuracy: calibration, --data or training data.

    Raises ExportError (before anything is exported) when none of them is a recording file.
    """
    if not Path(calibration).is_file():
        raise ExportError(f"{calibration}: no such calibration data file")
    for path in (calibration, data, source.data_path):
        if path is not None and Path(path).suffix == ".h5" and Path(path).is_file():
            return Path(path)
    raise ExportError(
        "--int8 needs a recording (.h5) with a test split to measure the accuracy change: "
        "pass it as --calibration-data or --data (the checkpoint's training data was not found)"
    )


def _test_data(source: ExportSource, calibration: Path, options: Any) -> StimulusData:
    return load_stimulus(
        test_recording(source, calibration, options.data),
        source.window_frames,
        source.frame_shape,
        source.frame_rate_hz,
        split="test",
        n_windows=N_TEST,
        clip_frames=0,
    )


def _quantize(src: Path, dst: Path, form: ModelForm, windows: NDArray[np.float32]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model_in = pre
    except Exception:  # pre-processing is an optimisation; quantise the original if it fails
        model_in = src
    try:
        quantize_static(
            str(model_in),
            str(dst),
            _Reader(form.data_input.name, windows),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        pre.unlink(missing_ok=True)
        for extra in dst.parent.glob("*.onnx.data"):
            extra.unlink()


def quantize_bundle_form(
    source: ExportSource,
    work: Path,
    base: BundleManifest,
    forms: list[ModelForm],
    options: Any,
    real: StimulusData | None,
    say: Any,
) -> tuple[list[ModelForm], Int8Figures]:
    """Quantise the window form into `work/model.int8.onnx` if accuracy holds.

    Returns the (possibly extended) form list and the INT8 figures for the manifest.
    """
    calibration = Path(options.int8_calibration)
    window_form = next(f for f in forms if f.form == "window")
    say(f"INT8: loading calibration windows from {calibration}")
    cal = load_stimulus(
        calibration,
        source.window_frames,
        source.frame_shape,
        source.frame_rate_hz,
        split="train",
        n_windows=N_CALIBRATION,
        clip_frames=0,
    )
    test = _test_data(source, calibration, options)
    if test.targets is None:
        raise ExportError(f"{test.source}: no recorded responses to score INT8 accuracy")
    say(f"INT8: static QDQ quantisation (Conv, per-channel) with {len(cal.windows)} windows")
    dst = work / INT8_FILE
    _quantize(work / window_form.file, dst, window_form, cal.windows)
    int8_form = ModelForm.model_validate(
        {**window_form.model_dump(), "file": INT8_FILE, "precision": "int8"}
    )
    onnx_io.finalize_model(
        dst, base.metadata_for(int8_form), f"INT8 (QDQ) copy of {window_form.file}"
    )
    say(f"INT8: scoring fp32 and int8 on {len(test.windows)} test windows")
    s32 = parity.session(work / window_form.file)
    s8 = parity.session(dst)
    out32 = parity.run_windows(s32, window_form, test.windows)
    out8 = parity.run_windows(s8, int8_form, test.windows)
    target = test.targets.astype(np.float64)
    pcc32 = mean_pcc(_to_cells(source, out32), target)
    pcc8 = mean_pcc(_to_cells(source, out8), target)
    drop = pcc32 - pcc8
    ok = math.isfinite(drop) and drop <= MAX_PCC_DROP
    lat32 = _latency_ms(s32, window_form, test.windows[0])
    lat8 = _latency_ms(s8, int8_form, test.windows[0])
    if not ok:
        dst.unlink()
        say(
            f"[red]INT8 refused: mean PCC {pcc32:.4f} → {pcc8:.4f} (drop {drop:.4f} > "
            f"{MAX_PCC_DROP}); {INT8_FILE} not written"
        )
    figures = Int8Figures(
        file=INT8_FILE if ok else None,
        source_form=window_form.file,
        calibration_source=cal.source,
        n_calibration_windows=len(cal.windows),
        n_test_windows=len(test.windows),
        mean_pcc_fp32=pcc32,
        mean_pcc_int8=pcc8,
        pcc_drop=drop,
        max_pcc_drop=MAX_PCC_DROP,
        latency_ms_fp32=lat32,
        latency_ms_int8=lat8,
        passed=ok,
    )
    return ([*forms, int8_form] if ok else forms), figures
