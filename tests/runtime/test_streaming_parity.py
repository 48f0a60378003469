"""The streaming runtime's rates equal the offline model's on the same clip.

The clip is a real video file (OpenCV writer/reader). Offline: decode every frame,
preprocess, build every 10-frame window (zeros before the start) and run the bundle's
*window* form. Streaming: the live loop on that file as fast as possible with the *step*
form carrying state from bin to bin, and — separately — with the window form over the
ring buffer. At 100 fps and 100 bins/s, bin k holds frame k.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.bundle import default_bundle_path
from runtime.clock import VirtualClock
from runtime.inference import OrtEngine
from runtime.loop import BinView, StreamingRuntime
from runtime.preprocess import Preprocessor
from runtime.sources import VideoFileSource
from runtime.spec import ModelSpec, load_model_spec

from .conftest import RecordingAudit, RecordingLink

N_FRAMES = 40  # > the default bundle's 25-frame window


def _write_clip(path: Path) -> None:
    rng = np.random.default_rng(3)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 100.0, (80, 60), True)
    assert w.isOpened()
    for i in range(N_FRAMES):
        img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8).repeat(10, 0).repeat(10, 1)
        img[:, (i * 3) % 80 :] //= 2  # a moving edge so consecutive frames differ
        w.write(img)
    w.release()


def _offline_rates(spec: ModelSpec, clip: Path) -> np.ndarray:
    pre = Preprocessor(spec, camera_fov_deg=30.0)
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(pre(img).copy())
    cap.release()
    assert len(frames) == N_FRAMES
    T = spec.window_frames
    x = np.concatenate([np.zeros((T - 1, spec.height, spec.width), np.float32), np.stack(frames)])
    form = spec.find_form("window")
    assert form is not None
    eng = OrtEngine(form)
    return np.stack([eng.run(np.ascontiguousarray(x[k : k + T])).copy() for k in range(N_FRAMES)])


def _stream(spec: ModelSpec, clip: Path, form_kind: str, pipeline: object) -> np.ndarray:
    form = spec.find_form(form_kind)  # type: ignore[arg-type]
    assert form is not None
    got: list[np.ndarray] = []

    def grab(v: BinView) -> None:
        assert v.rates is not None, v.zero_reason
        got.append(v.rates.copy())

    rt = StreamingRuntime(
        spec,
        OrtEngine(form),
        VideoFileSource(clip),
        Preprocessor(spec, camera_fov_deg=30.0),
        pipeline,  # type: ignore[arg-type]
        RecordingLink(),
        RecordingAudit(),
        clock=VirtualClock(),
        observer=grab,
    )
    summary = rt.run()
    assert summary.stop_reason == "source ended"
    assert summary.counters.bins_dropped == 0
    assert len(got) == N_FRAMES
    return np.stack(got)


@pytest.mark.parametrize("form_kind", ["step", "window"])
def test_streaming_rates_equal_offline_window_model(
    toy_spec: ModelSpec, tmp_path: Path, form_kind: str, utah_pipeline: object
) -> None:
    clip = tmp_path / "clip.avi"
    _write_clip(clip)
    want = _offline_rates(toy_spec, clip)
    got = _stream(toy_spec, clip, form_kind, utah_pipeline)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert np.ptp(want) > 1.0  # the clip really drives the model


def test_shipped_bundle_streams_like_its_window_form(tmp_path: Path, utah_pipeline: object) -> None:
    """The default bundle's step form in the live loop = its window form offline, from the
    first full window on (before it, a window form sees zero-contrast padding frames while the
    step form starts from its zero state: the model contract only promises t ≥ T-1)."""
    path = default_bundle_path()
    if not (path / "manifest.json").is_file():
        pytest.skip("no default bundle shipped")
    spec = load_model_spec(path)
    if spec.find_form("step") is None:
        pytest.skip("the default bundle has no step form")
    clip = tmp_path / "clip.avi"
    _write_clip(clip)
    want = _offline_rates(spec, clip)
    got = _stream(spec, clip, "step", utah_pipeline)
    T = spec.window_frames
    scale = float(np.abs(want[T - 1 :]).max())
    np.testing.assert_allclose(got[T - 1 :], want[T - 1 :], rtol=1e-4, atol=1e-4 * scale)
