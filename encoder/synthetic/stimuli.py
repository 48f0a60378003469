"""Stimulus movies for the synthetic retina, as uint8 luminance frames [n, H, W].

Five kinds, each a standard probe of retinal coding:

* ``whitenoise`` — binary checkerboard, the classic stimulus for spike-triggered averages.
* ``pink`` — spatiotemporal 1/f noise, the stimulus of the original experiments (at 120 Hz,
  YADLRetina, REFERENCES.md): spatially 1/f amplitude spectrum, temporally pink.
* ``natural`` — natural images that ship inside scikit-image (nothing downloaded), viewed
  through fixational drift (a random walk) and saccades (jumps to a new spot or image).
* ``bars`` — bright or dark bars sweeping across the field in random directions.
* ``gratings`` — drifting sinusoidal gratings of random orientation, period, speed, contrast.

Everything is generated with numpy array operations per chunk/segment (no per-pixel Python
loops) and is a pure function of the `numpy.random.Generator` passed in, so a seed
reproduces the movie exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
from numpy.typing import NDArray
from scipy import signal

GREY = 127.5
_CHUNK = 8192  # frames per chunk where float intermediates would otherwise be large

# Natural images bundled with scikit-image (files inside the installed package).
NATURAL_IMAGES: tuple[str, ...] = (
    "camera",
    "astronaut",
    "coffee",
    "chelsea",
    "coins",
    "moon",
    "rocket",
    "brick",
    "grass",
    "gravel",
)

#: Natural images kept out of the main movie (train/val/test) and used only for the repeated
#: clip, so the repeat figures (PCC, FEV, gain) measure generalisation to novel scenes, as a
#: real experiment's held-out clip does, not recall of scenes seen in training. Two
#: object-scale scenes (a person, a cat), like most of the set; holding out the two textures
#: (grass, gravel) instead made an unrepresentative clip (truth ceiling 0.39 instead of 0.90).
HELD_OUT_SCENES: tuple[int, ...] = (
    NATURAL_IMAGES.index("astronaut"),
    NATURAL_IMAGES.index("chelsea"),
)
TRAINING_SCENES: tuple[int, ...] = tuple(
    i for i in range(len(NATURAL_IMAGES)) if i not in HELD_OUT_SCENES
)


def _to_uint8(contrast: NDArray[np.floating]) -> NDArray[np.uint8]:
    """Contrast in [-1, 1] → uint8 luminance with the npe convention L = 127.5 (1 + c)."""
    return np.clip(np.rint(GREY + GREY * contrast), 0, 255).astype(np.uint8)


def white_noise(
    n_frames: int, height: int, width: int, rng: np.random.Generator, checker_px: int = 1
) -> NDArray[np.uint8]:
    """[n, H, W] binary checkerboard (0 or 255), a new independent pattern every frame."""
    gh, gw = math.ceil(height / checker_px), math.ceil(width / checker_px)
    grid = rng.integers(0, 2, size=(n_frames, gh, gw), dtype=np.uint8) * np.uint8(255)
    frames = np.repeat(np.repeat(grid, checker_px, axis=1), checker_px, axis=2)
    return np.ascontiguousarray(frames[:, :height, :width])


# A standard 3-pole/3-zero "pinking" filter: white noise in, ~1/f power out over ~3 decades.
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])


def pink_noise(
    n_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    rms_contrast: float = 0.35,
) -> NDArray[np.uint8]:
    """[n, H, W] spatiotemporal 1/f noise.

    Temporal: each pixel's white noise passes through a pinking IIR filter, whose state is
    carried across chunks (no seams). Spatial: each frame's amplitude spectrum is shaped to
    1/|f| with a 2-D FFT. Scaled to `rms_contrast` and clipped to [-1, 1].
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0 / max(height, width)  # finite DC gain (the mean stays near grey)
    spatial_gain = (1.0 / radius).astype(np.float32)
    zi = np.zeros((len(_PINK_A) - 1, height, width))
    out = np.empty((n_frames, height, width), dtype=np.uint8)
    scale: float | None = None
    for start in range(0, n_frames, _CHUNK):
        n = min(_CHUNK, n_frames - start)
        white = rng.standard_normal((n, height, width))
        temporal, zi = signal.lfilter(_PINK_B, _PINK_A, white, axis=0, zi=zi)
        spectrum = np.fft.rfft2(temporal.astype(np.float32), axes=(1, 2)) * spatial_gain
        movie = np.fft.irfft2(spectrum, s=(height, width), axes=(1, 2))
        if scale is None:  # one constant from the first chunk keeps chunks consistent
            scale = rms_contrast / max(float(movie.std()), 1e-12)
        out[start : start + n] = _to_uint8(movie * scale)
    return out


@cache
def _natural_image(name: str) -> NDArray[np.float32]:
    """Grayscale float32 [h, w] in [0, 255] of a scikit-image bundled image."""
    from skimage import color, data

    img = np.asarray(getattr(data, name)())
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3]) * 255.0
    return img.astype(np.float32)


def _scaled_image(name: str, short_side: int) -> NDArray[np.float32]:
    from skimage.transform import resize

    img = _natural_image(name)
    factor = short_side / min(img.shape)
    shape = (
        max(short_side, round(img.shape[0] * factor)),
        max(short_side, round(img.shape[1] * factor)),
    )
    return np.asarray(resize(img, shape, anti_aliasing=True, preserve_range=True), np.float32)


def plan_fixations(
    n_frames: int,
    rng: np.random.Generator,
    frame_rate_hz: float,
    mean_fixation_s: float = 0.4,
    new_image_probability: float = 0.25,
    scenes: Sequence[int] | None = None,
) -> list[tuple[int, int, int]]:
    """Fixations of `natural_movie` as (start, stop, image index), images drawn from `scenes`."""
    pool = tuple(range(len(NATURAL_IMAGES))) if scenes is None else tuple(scenes)
    if not pool or any(not 0 <= i < len(NATURAL_IMAGES) for i in pool):
        raise ValueError(f"scenes must index the {len(NATURAL_IMAGES)} natural images, got {pool}")
    fixations: list[tuple[int, int, int]] = []
    t = 0
    image = pool[int(rng.integers(len(pool)))]
    while t < n_frames:
        length = max(
            round(0.1 * frame_rate_hz), round(rng.exponential(mean_fixation_s) * frame_rate_hz)
        )
        fixations.append((t, min(n_frames, t + length), image))
        t += length
        if rng.random() < new_image_probability:
            image = pool[int(rng.integers(len(pool)))]
    return fixations


def natural_movie(
    n_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    frame_rate_hz: float,
    mean_fixation_s: float = 0.4,
    drift_px_per_sqrt_s: float = 1.5,
    new_image_probability: float = 0.25,
    scenes: Sequence[int] | None = None,
) -> NDArray[np.uint8]:
    """[n, H, W] crops of bundled natural images moved by fixational eye movements.

    Fixations last an exponential time (mean `mean_fixation_s`, at least 0.1 s); within a
    fixation the gaze drifts as a random walk (`drift_px_per_sqrt_s`, sub-pixel, bilinear
    interpolation); each fixation ends in a saccade to a uniformly random spot, landing on
    a new image with probability `new_image_probability`. Images are rescaled so that their
    short side is 4-6 frame heights, so a crop shows object-scale structure, not texture.
    `scenes`: indices into NATURAL_IMAGES the movie may show (default all).
    """
    size = max(height, width)
    fixations = plan_fixations(
        n_frames, rng, frame_rate_hz, mean_fixation_s, new_image_probability, scenes
    )
    # One rescaled copy per (image, scale) actually used; scale drawn per image.
    short_sides = rng.integers(4 * size, 6 * size + 1, size=len(NATURAL_IMAGES))
    images = {
        i: _scaled_image(NATURAL_IMAGES[i], int(short_sides[i])) for i in {f[2] for f in fixations}
    }
    step = drift_px_per_sqrt_s / math.sqrt(frame_rate_hz)
    out = np.empty((n_frames, height, width), dtype=np.uint8)
    rows = np.arange(height)[None, :, None]
    cols = np.arange(width)[None, None, :]
    for start, stop, index in fixations:
        img = images[index]
        max_y, max_x = img.shape[0] - height - 1, img.shape[1] - width - 1
        n = stop - start
        origin = rng.uniform([0, 0], [max_y, max_x])
        walk = origin + np.cumsum(rng.normal(0.0, step, size=(n, 2)), axis=0)
        walk[:, 0] = np.clip(walk[:, 0], 0, max_y)
        walk[:, 1] = np.clip(walk[:, 1], 0, max_x)
        iy, ix = np.floor(walk[:, 0]).astype(np.int64), np.floor(walk[:, 1]).astype(np.int64)
        fy = (walk[:, 0] - iy).astype(np.float32)[:, None, None]
        fx = (walk[:, 1] - ix).astype(np.float32)[:, None, None]
        r = iy[:, None, None] + rows
        c = ix[:, None, None] + cols
        frames = (
            (1 - fy) * (1 - fx) * img[r, c]
            + (1 - fy) * fx * img[r, c + 1]
            + fy * (1 - fx) * img[r + 1, c]
            + fy * fx * img[r + 1, c + 1]
        )
        out[start:stop] = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    return out


def _segments(
    n_frames: int, rng: np.random.Generator, frame_rate_hz: float, lo_s: float, hi_s: float
) -> list[tuple[int, int]]:
    out = []
    t = 0
    while t < n_frames:
        length = max(1, round(rng.uniform(lo_s, hi_s) * frame_rate_hz))
        out.append((t, min(n_frames, t + length)))
        t += length
    return out


def moving_bars(
    n_frames: int, height: int, width: int, rng: np.random.Generator, frame_rate_hz: float
) -> NDArray[np.uint8]:
    """[n, H, W] single bright or dark bars sweeping across a grey field.

    Each sweep draws a direction, polarity, width (1-4 px, scaled with frame size) and speed
    (0.5-2 frame widths per second); the bar enters on one side and leaves on the other.
    """
    size = max(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy -= (height - 1) / 2
    xx -= (width - 1) / 2
    half_diag = 0.5 * math.hypot(height, width)
    out = np.empty((n_frames, height, width), dtype=np.uint8)
    t = 0
    while t < n_frames:
        theta = rng.uniform(0, 2 * math.pi)
        polarity = 1.0 if rng.random() < 0.5 else -1.0
        bar_w = rng.uniform(1.0, 4.0) * size / 32
        speed = rng.uniform(0.5, 2.0) * size / frame_rate_hz  # px per frame
        travel = 2 * (half_diag + bar_w)
        n = min(n_frames - t, max(1, math.ceil(travel / speed)))
        u = xx * math.cos(theta) + yy * math.sin(theta)
        pos = -half_diag - bar_w + speed * np.arange(n, dtype=np.float32)
        dist = np.abs(u[None] - pos[:, None, None])
        coverage = np.clip(bar_w / 2 + 0.5 - dist, 0.0, 1.0)  # anti-aliased edges
        out[t : t + n] = _to_uint8(polarity * coverage)
        t += n
    return out


def drifting_gratings(
    n_frames: int, height: int, width: int, rng: np.random.Generator, frame_rate_hz: float
) -> NDArray[np.uint8]:
    """[n, H, W] drifting sinusoidal gratings, a new one every 1-2 s.

    Each block draws orientation/direction, spatial period (4-16 px, scaled with frame size),
    temporal frequency (1-8 Hz) and Michelson contrast (0.3-1).
    """
    size = max(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n_frames, height, width), dtype=np.uint8)
    for start, stop in _segments(n_frames, rng, frame_rate_hz, 1.0, 2.0):
        theta = rng.uniform(0, 2 * math.pi)
        period = rng.uniform(4.0, 16.0) * size / 32
        freq = rng.uniform(1.0, 8.0)
        contrast = rng.uniform(0.3, 1.0)
        phase0 = rng.uniform(0, 2 * math.pi)
        u = (xx * math.cos(theta) + yy * math.sin(theta)) / period
        tt = np.arange(stop - start, dtype=np.float32) / frame_rate_hz
        phase = 2 * math.pi * (u[None] - freq * tt[:, None, None]) + phase0
        out[start:stop] = _to_uint8(contrast * np.sin(phase))
    return out


def generate_stimulus(
    kind: str,
    n_frames: int,
    height: int,
    width: int,
    frame_rate_hz: float,
    rng: np.random.Generator,
    checker_px: int = 1,
    scenes: Sequence[int] | None = None,
) -> NDArray[np.uint8]:
    """[n_frames, height, width] uint8 movie of stimulus `kind` (see module docstring).

    `scenes` limits the natural movie to those NATURAL_IMAGES indices (other kinds draw fresh
    random patterns for every call, so any clip of them is novel already)."""
    makers: dict[str, Callable[[], NDArray[np.uint8]]] = {
        "whitenoise": lambda: white_noise(n_frames, height, width, rng, checker_px),
        "pink": lambda: pink_noise(n_frames, height, width, rng),
        "natural": lambda: natural_movie(
            n_frames, height, width, rng, frame_rate_hz, scenes=scenes
        ),
        "bars": lambda: moving_bars(n_frames, height, width, rng, frame_rate_hz),
        "gratings": lambda: drifting_gratings(n_frames, height, width, rng, frame_rate_hz),
    }
    if kind not in makers:
        raise ValueError(f"unknown stimulus {kind!r}; expected one of {', '.join(makers)}")
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    return makers[kind]()
