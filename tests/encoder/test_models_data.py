"""Tiny in-memory recordings with a hidden LN-like generator, for the models engineer's tests.

12×12 px binary white noise at 20 Hz (window = 5 frames), three cells (two ON, one OFF) with
Gaussian centres and a 5-frame temporal filter, softplus rates and Poisson counts: strong,
learnable structure in a few thousand frames, so short trainings are meaningful and fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encoder.recording import CellInfo, Recording, Repeats, write_recording

FRAME_RATE = 20.0  # → window_frames_for = 5
SIZE = 12


def _rates(contrast: np.ndarray, rng_seed: int = 0) -> np.ndarray:
    """contrast [n, H, W] → expected counts per bin [n, 3]."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    centres = [(3.5, 3.5, 1.0), (7.5, 6.0, 1.0), (5.0, 8.5, -1.0)]
    temporal = np.array([0.0, 0.2, 0.5, 1.0, 0.6])  # oldest … newest
    rates = np.zeros((contrast.shape[0], 3))
    for c, (cy, cx, sign) in enumerate(centres):
        spatial = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
        drive = (contrast * spatial).sum((1, 2))
        g = np.zeros_like(drive)
        for lag, w in enumerate(temporal[::-1]):
            g[lag:] += w * drive[: drive.shape[0] - lag]
        rates[:, c] = np.log1p(np.exp(sign * 0.6 * g - 0.5))
    return rates


def make_recording(
    n_frames: int = 3000, n_repeats: int = 4, rep_frames: int = 200, seed: int = 0
) -> Recording:
    rng = np.random.default_rng(seed)
    stim = rng.choice(np.array([0, 255], dtype=np.uint8), size=(n_frames, SIZE, SIZE))
    contrast = (stim.astype(np.float32) - 127.5) / 127.5
    rates = _rates(contrast)
    responses = rng.poisson(rates).astype(np.uint16)
    rep_stim = rng.choice(np.array([0, 255], dtype=np.uint8), size=(rep_frames, SIZE, SIZE))
    rep_rates = _rates((rep_stim.astype(np.float32) - 127.5) / 127.5)
    rep_resp = rng.poisson(np.broadcast_to(rep_rates, (n_repeats, *rep_rates.shape))).astype(
        np.uint16
    )
    a, b = int(n_frames * 0.7), int(n_frames * 0.85)
    return Recording(
        stimulus=stim,
        responses=responses,
        cells=CellInfo(
            ids=("c0", "c1", "c2"),
            types=("ON transient", "ON transient", "OFF sustained"),
            center_deg=np.array([[-0.6, 0.6], [-0.0, -0.4], [0.6, 0.25]], dtype=np.float32),
        ),
        splits={
            "train": np.array([[0, a]], dtype=np.int64),
            "val": np.array([[a, b]], dtype=np.int64),
            "test": np.array([[b, n_frames]], dtype=np.int64),
        },
        frame_rate_hz=FRAME_RATE,
        pixel_size_deg=0.25,
        source="tests: hidden LN generator",
        repeats=Repeats(
            stimulus=rep_stim,
            responses=rep_resp,
            truth_rates_hz=(rep_rates * FRAME_RATE).astype(np.float32),
        ),
        truth_rates_hz=(rates * FRAME_RATE).astype(np.float32),
    )


def write_tiny(path: Path, **kwargs: int) -> Path:
    return write_recording(make_recording(**kwargs), path)


TINY_STREAMING = {
    "kernel1": 5,
    "kernel2": 3,
    "spatial1": 4,
    "channels1": 4,
    "spatial2": 4,
    "channels2": 4,
    "temporal2_ms": 100.0,  # 2 frames at 20 Hz
    "n_types": 3,
    "noise_sigma": 0.0,
}
TINY_SINGLE = {"kernel1": 5, "kernel2": 3}
