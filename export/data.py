"""Real stimulus for verification and quantisation: windows and clips from a recording or .npz.

Sources accepted wherever export needs data (`--data`, `--calibration-data`):

* a recording `.h5` (npe recording format v1): windows and a clip from its test split
  (calibration windows from its train split), at the model's frame rate and frame size;
* an `.npz` with ``windows: [n, T, H, W] float32`` contrast in [-1, 1], ``frame_rate_hz`` and
  ``source`` (the INT8 calibration format written by `npe calibrate frames`), optionally with
  ``clip: [N, H, W] float32`` consecutive frames for the step-by-step check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from export.source import ExportError


@dataclass(frozen=True)
class StimulusData:
    """Windows (and optionally a consecutive clip and the recorded counts) from one source.

    Attributes:
        windows: [n, T, H, W] float32 contrast.
        clip: [N, H, W] float32 consecutive contrast frames, or None.
        targets: [n, n_cells] float32 recorded counts of each window's newest frame, or None.
        source: what the data is (path and split).
    """

    windows: NDArray[np.float32]
    clip: NDArray[np.float32] | None
    targets: NDArray[np.float32] | None
    source: str


def _check_geometry(
    path: Path, frame_rate_hz: float, shape: tuple[int, ...], expected: tuple[int, ...], rate: float
) -> None:
    if abs(frame_rate_hz - rate) > 1e-6 * rate:
        raise ExportError(
            f"{path}: frame rate {frame_rate_hz:g} Hz differs from the model's {rate:g} Hz"
        )
    if tuple(shape) != tuple(expected):
        raise ExportError(f"{path}: data of shape {list(shape)}, the model needs {list(expected)}")


def _pick(n_avail: int, n: int) -> NDArray[np.int64]:
    """n evenly spaced indices in [0, n_avail) (deterministic)."""
    n = min(n, n_avail)
    return np.unique(np.linspace(0, n_avail - 1, n).round().astype(np.int64))


def load_stimulus(
    path: Path,
    window_frames: int,
    frame_shape: tuple[int, int],
    frame_rate_hz: float,
    split: str = "test",
    n_windows: int = 16,
    clip_frames: int = 240,
) -> StimulusData:
    """Load up to `n_windows` windows (and a `clip_frames` clip if the data has one) from `path`."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such data file")
    t, (h, w) = window_frames, frame_shape
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "windows" not in z:
                    raise ExportError(f"{path}: .npz has no 'windows' array [n, T, H, W]")
                windows = np.asarray(z["windows"], dtype=np.float32)
                clip = np.asarray(z["clip"], dtype=np.float32) if "clip" in z else None
                rate = float(z["frame_rate_hz"]) if "frame_rate_hz" in z else frame_rate_hz
                source = str(z["source"]) if "source" in z else str(path)
        except (OSError, ValueError) as exc:
            raise ExportError(f"{path}: not a readable .npz ({exc})") from exc
        if windows.ndim != 4 or len(windows) == 0:
            raise ExportError(
                f"{path}: 'windows' must be [n, T, H, W] with n ≥ 1, got {list(windows.shape)}"
            )
        _check_geometry(path, rate, windows.shape[1:], (t, h, w), frame_rate_hz)
        if clip is not None:
            _check_geometry(path, rate, clip.shape[1:], (h, w), frame_rate_hz)
        for name, arr in (("windows", windows), ("clip", clip)):
            if arr is not None and not (np.all(np.isfinite(arr)) and np.abs(arr).max() <= 1.0):
                raise ExportError(f"{path}: '{name}' must be finite contrast in [-1, 1]")
        idx = _pick(len(windows), n_windows)
        return StimulusData(windows[idx], clip, None, f"{source} ({path.name})")

    from encoder.recording import RecordingFormatError, read_recording
    from encoder.windows import WindowedRecording

    try:
        rec = read_recording(path)
    except RecordingFormatError as exc:
        raise ExportError(f"{path}: {exc}") from exc
    _check_geometry(path, rec.frame_rate_hz, rec.frame_shape, (h, w), frame_rate_hz)
    ds = WindowedRecording(rec, split, window_frames=t)
    if len(ds) == 0:
        raise ExportError(f"{path}: split {split!r} has no complete {t}-frame window")
    x, y = ds.batch(_pick(len(ds), n_windows))
    clip_arr: NDArray[np.float32] | None = None
    if clip_frames > 0:
        from encoder.recording import stimulus_as_contrast

        order = [split] + [n for n in ("test", "val", "train") if n != split]
        ranges = [tuple(r) for name in order for r in rec.splits[name].tolist()]
        for start, stop in ranges:
            if stop - start >= clip_frames:
                clip_arr = stimulus_as_contrast(rec.stimulus[start : start + clip_frames])
                break
    return StimulusData(
        x.numpy().astype(np.float32),
        clip_arr,
        y.numpy().astype(np.float32),
        f"{path} ({split} split)",
    )


def random_windows(
    n: int, window_frames: int, frame_shape: tuple[int, int], seed: int
) -> NDArray[np.float32]:
    """[n, T, H, W] uniform contrast in [-1, 1] (seeded: parity figures are reproducible)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(n, window_frames, *frame_shape)).astype(np.float32)


def random_clip(n: int, frame_shape: tuple[int, int], seed: int) -> NDArray[np.float32]:
    """[n, H, W] uniform contrast in [-1, 1] (seeded)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(n, *frame_shape)).astype(np.float32)
