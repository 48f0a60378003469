"""Representative stimulus windows for INT8 quantisation (`npe calibrate frames`).

Static INT8 quantisation fixes each activation's range from calibration data; windows that
miss part of the input distribution (very low or very high contrast, still vs. moving
scenes) give ranges that clip in deployment. So we do not take the first n windows: we
draw candidate windows over the whole recording (its train split when it has one — test data
must not shape the model), measure each one's RMS contrast and temporal variance, and pick
n windows stratified over the joint quantiles of both, so the set spans the distribution.

Output (the contract `npe export --int8 --calibration-data FILE` reads): an .npz with
`windows [n, T, H, W] float32` contrast in [-1, 1], `frame_rate_hz` scalar and `source` str;
coverage statistics are printed and written as JSON beside it.

The recording is opened with the torch-free recording reader (`encoder.recording.open_stimulus`,
the one reader of format v1); only the windows needed are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from calibration.errors import CalibrationPackageError
from encoder.recording import RecordingFormatError, open_stimulus, stimulus_as_contrast

MAX_VIDEO_FRAMES = 20_000


class FramesError(CalibrationPackageError, ValueError):
    """Input that cannot give calibration windows (wrong file, too short, bad options)."""


def _to_contrast(frames: NDArray[Any]) -> NDArray[np.float32]:
    """The recording's own contrast convention; float contrast clipped to [-1, 1]."""
    return np.clip(stimulus_as_contrast(frames), -1.0, 1.0)


def _window_stats(w: NDArray[np.float32]) -> tuple[float, float]:
    """(RMS contrast, mean temporal variance per pixel) of one window [T, H, W]."""
    return float(np.sqrt(np.mean(w**2))), float(np.mean(np.var(w, axis=0)))


def _stratified(stats: NDArray[np.float64], n: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Pick n of the candidates (stats [m, 2]) spread over the joint quantile grid."""
    m = stats.shape[0]
    if m <= n:
        return np.arange(m)
    bins = max(int(np.sqrt(n)), 1)
    ranks = np.argsort(np.argsort(stats, axis=0), axis=0) * bins // m  # [m, 2] in 0..bins-1
    cell = ranks[:, 0] * bins + ranks[:, 1]
    pools = [list(rng.permutation(np.flatnonzero(cell == c))) for c in range(bins * bins)]
    chosen: list[int] = []
    while len(chosen) < n:
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(int(pool.pop()))
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _recording_source(path: Path) -> tuple[Any, float, list[tuple[int, int]], Any]:
    """Open a recording lazily (encoder's one reader); (stimulus, rate, train ranges, file)."""
    try:
        f = open_stimulus(path)
    except RecordingFormatError as exc:
        raise FramesError(str(exc)) from None
    return f.stimulus, f.frame_rate_hz, f.train_ranges, f


def _video_frames(
    source: str | int, size: tuple[int, int] | None, max_frames: int
) -> NDArray[np.uint8]:
    """Grayscale frames [n, H, W] uint8 from a video file or camera index."""
    import cv2

    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise FramesError(f"cannot open video source {source!r}")
    frames: list[NDArray[np.uint8]] = []
    try:
        while len(frames) < max_frames:
            ok, img = cap.read()
            if not ok:
                break
            g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
            if size is not None:
                g = cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            frames.append(np.asarray(g, dtype=np.uint8))
    finally:
        cap.release()
    if not frames:
        raise FramesError(f"no frames read from {source!r}")
    return np.stack(frames).astype(np.uint8)


def collect_frames(
    out: Path,
    n: int = 256,
    data: Path | None = None,
    video: Path | None = None,
    camera: int | None = None,
    window_frames: int | None = None,
    size: str | None = None,
    frame_rate_hz: float = 100.0,
    seed: int = 0,
    progress: Any = None,
) -> dict[str, Any]:
    """Write `out` (.npz) with n representative windows; return the coverage statistics."""
    if n < 1:
        raise FramesError(f"--n must be ≥ 1, got {n}")
    rng = np.random.default_rng(seed)
    hw: tuple[int, int] | None = None
    if size is not None:
        try:
            h, w = (int(v) for v in size.lower().split("x"))
            hw = (h, w)
        except ValueError as exc:
            raise FramesError(f"--size must look like 64x64, got {size!r}") from exc
    fh = None
    if data is not None:
        stim, rate, ranges, fh = _recording_source(Path(data))
        source = f"recording:{Path(data).name}"
    else:
        src: str | int = str(video) if video is not None else int(camera or 0)
        stim = _video_frames(src, hw, MAX_VIDEO_FRAMES)
        rate, ranges = frame_rate_hz, [(0, stim.shape[0])]
        source = f"video:{Path(str(video)).name}" if video is not None else f"camera:{camera}"
    try:
        t = window_frames or round(0.25 * rate)
        if t < 1:
            raise FramesError(f"window of {t} frames at {rate} Hz")
        ends = np.concatenate(
            [np.arange(a + t - 1, b, dtype=np.int64) for a, b in ranges if b - a >= t]
            or [np.zeros(0, np.int64)]
        )
        if ends.size == 0:
            raise FramesError(f"{source}: no range holds a full window of {t} frames")
        n_cand = min(ends.size, max(4 * n, 512))
        cand = np.sort(rng.choice(ends, size=n_cand, replace=False))
        stats = np.zeros((n_cand, 2))
        for i, e in enumerate(cand):
            stats[i] = _window_stats(_to_contrast(np.asarray(stim[e - t + 1 : e + 1])))
        pick = _stratified(stats, n, rng)
        windows = np.stack([_to_contrast(np.asarray(stim[e - t + 1 : e + 1])) for e in cand[pick]])
    finally:
        if fh is not None:
            fh.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        windows=windows.astype(np.float32),
        frame_rate_hz=np.float64(rate),
        source=np.str_(source),
    )
    tmp.replace(out)
    sel = stats[pick]
    hist, _ = np.histogram(windows, bins=10, range=(-1.0, 1.0))
    result: dict[str, Any] = {
        "out": str(out),
        "source": source,
        "n_windows": int(windows.shape[0]),
        "window_frames": int(t),
        "frame_shape": [int(windows.shape[2]), int(windows.shape[3])],
        "frame_rate_hz": rate,
        "candidates": int(n_cand),
        "contrast_mean": float(windows.mean()),
        "contrast_sd": float(windows.std()),
        "contrast_histogram": [int(c) for c in hist],
        "rms_contrast_pct": [float(v) for v in np.percentile(sel[:, 0], [5, 50, 95])],
        "temporal_variance_pct": [float(v) for v in np.percentile(sel[:, 1], [5, 50, 95])],
        "candidate_rms_contrast_pct": [float(v) for v in np.percentile(stats[:, 0], [5, 50, 95])],
        "candidate_temporal_variance_pct": [
            float(v) for v in np.percentile(stats[:, 1], [5, 50, 95])
        ],
    }
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(result, indent=2))
    result["json_path"] = str(json_path)
    return result
