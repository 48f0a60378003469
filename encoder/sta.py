"""Spike-triggered averages: each cell's mean stimulus window before its spikes.

The STA is the first look at any recording: where each cell's receptive field sits, whether it
is ON or OFF, and how fast it is. On white noise it estimates the linear receptive field, so
on the synthetic retina its centre must land on the true centre (a test), and the estimated
centres are what `/cells/center_deg` holds for real recordings whose centres are unknown.

Computed per lag as one sparse matrix product over all frames and cells (spike counts
[cells, N] @ stimulus [N, H*W]), in chunks of frames, so memory stays bounded for long recordings.
Windows never cross the boundary of a split range, like `encoder.windows`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage, optimize, sparse

from encoder.recording import Recording, stimulus_as_contrast
from encoder.windows import window_frames_for

_CHUNK = 4096


@dataclass(frozen=True)
class STAResult:
    """STAs and receptive-field estimates of every cell.

    Attributes:
        sta: [n_cells, T, H, W] float32 spike-triggered average contrast minus the mean
            window; index 0 is the oldest frame, T-1 the frame of the spike (like a model window).
        spike_counts: [n_cells] int64 spikes that entered each STA.
        spatial: [n_cells, H, W] float32 rank-1 spatial profile, signed so ON centres are > 0.
        temporal: [n_cells, T] float32 rank-1 temporal profile (same order as `sta`).
        polarity: [n_cells] int64 +1 ON, -1 OFF, 0 no spikes.
        center_px: [n_cells, 2] float64 (row, col) estimated centre; NaN when no spikes.
        center_deg: [n_cells, 2] float64 (x right, y up) degrees from the stimulus centre.
        window_frames: T.
    """

    sta: NDArray[np.float32]
    spike_counts: NDArray[np.int64]
    spatial: NDArray[np.float32]
    temporal: NDArray[np.float32]
    polarity: NDArray[np.int64]
    center_px: NDArray[np.float64]
    center_deg: NDArray[np.float64]
    window_frames: int

    def __post_init__(self) -> None:
        n, T = self.sta.shape[:2]
        for name, arr, shape in (
            ("spike_counts", self.spike_counts, (n,)),
            ("spatial", self.spatial, (n, *self.sta.shape[2:])),
            ("temporal", self.temporal, (n, T)),
            ("polarity", self.polarity, (n,)),
            ("center_px", self.center_px, (n, 2)),
            ("center_deg", self.center_deg, (n, 2)),
        ):
            if arr.shape != shape:
                raise ValueError(
                    f"STAResult.{name}: expected shape {list(shape)}, got {list(arr.shape)}"
                )


def _accumulate(
    recording: Recording, T: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], int]:
    """Sums over valid windows: spike-weighted windows [n, T, HW], plain windows [T, HW]."""
    n_cells = recording.n_cells
    hw = recording.frame_shape[0] * recording.frame_shape[1]
    weighted = np.zeros((n_cells, T, hw))
    plain = np.zeros((T, hw))
    spikes = np.zeros(n_cells, dtype=np.int64)
    n_windows = 0
    ranges = sorted(tuple(r) for rs in recording.splits.values() for r in rs.tolist())
    for start, stop in ranges:
        for s in range(start + T - 1, stop, _CHUNK):  # s..e: newest frames of the windows
            e = min(stop, s + _CHUNK)
            x = stimulus_as_contrast(recording.stimulus[s - T + 1 : e]).reshape(-1, hw)
            # Spike counts are sparse (most bins empty): a sparse product is ~3x faster.
            counts_t = sparse.csr_matrix(recording.responses[s:e].T.astype(np.float32))
            m = e - s
            for lag in range(T):  # window index T-1-lag is `lag` frames before the spike
                frames = x[T - 1 - lag : T - 1 - lag + m]
                weighted[:, T - 1 - lag] += counts_t @ frames
                plain[T - 1 - lag] += frames.sum(axis=0, dtype=np.float64)
            spikes += np.asarray(counts_t.sum(axis=1)).ravel().astype(np.int64)
            n_windows += m
    return weighted, plain, spikes, n_windows


def _gaussian(coords: NDArray[np.float64], *p: float) -> NDArray[np.float64]:
    r0, c0, sigma, amp, offset = p
    rr, cc = coords
    return offset + amp * np.exp(-((rr - r0) ** 2 + (cc - c0) ** 2) / (2 * sigma**2))


def estimate_center(spatial: NDArray[np.floating]) -> tuple[float, float]:
    """(row, col) of the positive blob of a [H, W] spatial profile, to sub-pixel precision.

    A 2-D Gaussian (plus offset) is fitted around the peak of the lightly smoothed profile;
    a fit handles fields cut by the frame edge better than a centroid. Falls back to the
    smoothed peak when the fit fails or leaves the frame.
    """
    h, w = spatial.shape
    smooth = ndimage.gaussian_filter(spatial.astype(np.float64), 1.0)
    r0, c0 = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float64)
    peak = float(smooth[r0, c0])
    guess = [float(r0), float(c0), 2.0, peak if peak > 0 else 1.0, 0.0]
    try:
        popt, _ = optimize.curve_fit(
            _gaussian,
            np.stack([rr.ravel(), cc.ravel()]),
            spatial.astype(np.float64).ravel(),
            p0=guess,
            bounds=([-1, -1, 0.5, 0, -np.inf], [h, w, max(h, w), np.inf, np.inf]),
            maxfev=2000,
        )
    except (RuntimeError, ValueError):
        return float(r0), float(c0)
    if math.hypot(popt[0] - r0, popt[1] - c0) > 3.0 * max(1.0, popt[2]):
        return float(r0), float(c0)
    return float(popt[0]), float(popt[1])


def compute_sta(recording: Recording, window_frames: int | None = None) -> STAResult:
    """STA of every cell over all split ranges of the main stream, with centre estimates."""
    T = window_frames_for(recording.frame_rate_hz) if window_frames is None else window_frames
    if T < 1:
        raise ValueError(f"window_frames must be >= 1, got {T}")
    h, w = recording.frame_shape
    weighted, plain, spikes, n_windows = _accumulate(recording, T)
    mean_window = plain / max(n_windows, 1)
    sta = weighted / np.maximum(spikes, 1)[:, None, None] - mean_window[None]
    sta[spikes == 0] = 0.0
    n = recording.n_cells
    spatial = np.zeros((n, h * w))
    temporal = np.zeros((n, T))
    polarity = np.zeros(n, dtype=np.int64)
    centers = np.full((n, 2), np.nan)
    for c in range(n):  # one small SVD per cell
        if spikes[c] == 0:
            continue
        u, s, vt = np.linalg.svd(sta[c], full_matrices=False)
        t_prof, s_prof = u[:, 0] * s[0], vt[0]
        # Orient: the temporal lobe of largest magnitude counts as positive, so the spatial
        # profile's sign at its peak then says ON (+) or OFF (-).
        k = int(np.argmax(np.abs(t_prof)))
        if t_prof[k] < 0:
            t_prof, s_prof = -t_prof, -s_prof
        smooth = ndimage.gaussian_filter(s_prof.reshape(h, w), 1.0)
        pol = 1 if smooth.flat[int(np.argmax(np.abs(smooth)))] > 0 else -1
        spatial[c] = s_prof * pol
        temporal[c] = t_prof * pol
        polarity[c] = pol
        centers[c] = estimate_center(spatial[c].reshape(h, w))
    center_deg = np.stack(
        [
            (centers[:, 1] - (w - 1) / 2) * recording.pixel_size_deg,
            ((h - 1) / 2 - centers[:, 0]) * recording.pixel_size_deg,
        ],
        axis=1,
    )
    return STAResult(
        sta=sta.reshape(n, T, h, w).astype(np.float32),
        spike_counts=spikes,
        spatial=spatial.reshape(n, h, w).astype(np.float32),
        temporal=temporal.astype(np.float32),
        polarity=polarity,
        center_px=centers,
        center_deg=center_deg,
        window_frames=T,
    )
