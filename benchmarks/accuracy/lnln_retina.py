"""An independently written LN-LN subunit retina, so an accuracy figure holds on data that
npe's own simulator (`encoder.synthetic`) did not make.

Why: every model in npe was tuned on `encoder.synthetic`'s recordings. A model that has merely
learned that simulator's quirks (its mosaics, temporal filters, nonlinearity, natural images
and their eye movements) would look good there and fail on a real retina. This module shares
no code with `encoder.synthetic`; only the file it writes is npe's recording format.

The retina (12 cells by default: 6 ON and 6 OFF, centres on a jittered grid):
* subunits: Gaussian spatial profiles (σ 1 px) on a jittered hexagonal lattice, each filtered
  in time by a biphasic kernel given in ms (ON: fast and transient, OFF: slower and more
  sustained), then rectified with the cell's polarity (threshold-linear, a small threshold);
* a cell sums its subunits with Gaussian weights (σ 2.5 px) minus a weak, wider surround of
  the same subunits (σ 5 px): the second linear stage;
* output: a sigmoid of the standardised generator, with each cell's baseline and maximum rate
  drawn at random (3–12 Hz, 100–200 Hz), standardised on the training ensemble only;
* Poisson spikes per frame bin.

Stimulus: 1/f scenes (random-phase images with a 1/f amplitude spectrum, no natural photos),
viewed through fixational drift (a Gaussian random walk, 0.05°/frame at 40 Hz) and saccades
(every 0.2–0.8 s, uniformly, to a new spot; a new scene every ~4 s). The repeated clip is cut
from a scene that the main movie never shows (its own seed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.signal import fftconvolve

from encoder.recording import CellInfo, Recording, Repeats


@dataclass(frozen=True)
class LNLNConfig:
    """One LN-LN recording: geometry, durations (s), eye movements, seed."""

    frame_rate_hz: float = 40.0
    size_px: int = 32
    pixel_size_deg: float = 0.25
    n_on: int = 6
    n_off: int = 6
    train_s: float = 375.0
    val_s: float = 52.5
    test_s: float = 52.5
    repeat_s: float = 20.0
    n_repeats: int = 10
    n_scenes: int = 16  # training scenes; the repeat clip's scene is one more, held out
    scene_px: int = 192
    drift_deg_per_frame: float = 0.05
    saccade_interval_s: tuple[float, float] = (0.2, 0.8)
    scene_change_s: float = 4.0
    seed: int = 0

    @property
    def n_cells(self) -> int:
        return self.n_on + self.n_off


# ------------------------------------------------------------------ stimulus
def one_over_f_scene(size: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """A random-phase image with a 1/f amplitude spectrum, scaled to contrast in [-1, 1]."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amplitude = 1.0 / f
    amplitude[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
    img = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(size, size))
    img /= 3.0 * img.std()  # ±3σ spans the contrast range; the rest is clipped
    return np.asarray(np.clip(img, -1.0, 1.0), np.float64)


def _crop(scene: NDArray[np.float64], y: float, x: float, size: int) -> NDArray[np.float64]:
    """Bilinear crop of `size`×`size` px with its top-left corner at (y, x)."""
    y0, x0 = math.floor(y), math.floor(x)
    dy, dx = y - y0, x - x0
    patch = scene[y0 : y0 + size + 1, x0 : x0 + size + 1]
    top = (1 - dx) * patch[:-1, :-1] + dx * patch[:-1, 1:]
    bottom = (1 - dx) * patch[1:, :-1] + dx * patch[1:, 1:]
    return (1 - dy) * top + dy * bottom


def eye_movement_movie(
    scenes: list[NDArray[np.float64]], n_frames: int, cfg: LNLNConfig, rng: np.random.Generator
) -> NDArray[np.float32]:
    """[n_frames, size, size] contrast: drift within a fixation, saccades between them."""
    size, fr = cfg.size_px, cfg.frame_rate_hz
    limit = cfg.scene_px - size - 2
    drift_px = cfg.drift_deg_per_frame / cfg.pixel_size_deg
    out = np.empty((n_frames, size, size), np.float32)
    scene = int(rng.integers(len(scenes)))
    y, x = rng.uniform(0, limit, 2)
    next_saccade = 0
    next_scene = round(cfg.scene_change_s * fr)
    for t in range(n_frames):
        if t >= next_saccade:
            y, x = rng.uniform(0, limit, 2)
            next_saccade = t + max(1, round(rng.uniform(*cfg.saccade_interval_s) * fr))
        if t >= next_scene:
            scene = int(rng.integers(len(scenes)))
            next_scene = t + round(cfg.scene_change_s * fr * rng.uniform(0.5, 1.5))
        y = float(np.clip(y + rng.normal(0, drift_px), 0, limit))
        x = float(np.clip(x + rng.normal(0, drift_px), 0, limit))
        out[t] = _crop(scenes[scene], y, x, size)
    return out


# ------------------------------------------------------------------ retina
def biphasic_kernel(
    frame_rate_hz: float, tau_ms: float, ratio: float, length_ms: float = 400.0
) -> NDArray[np.float64]:
    """Causal biphasic filter (difference of gamma-like lobes), unit L1 norm, tap 0 = now."""
    t = np.arange(max(2, round(length_ms / 1000.0 * frame_rate_hz))) * 1000.0 / frame_rate_hz
    fast = (t / tau_ms) ** 3 * np.exp(-t / tau_ms)
    slow = (t / (2 * tau_ms)) ** 3 * np.exp(-t / (2 * tau_ms))
    k = fast / fast.max() - ratio * slow / slow.max()
    return np.asarray(k / np.abs(k).sum(), np.float64)


@dataclass(frozen=True)
class LNLNRetina:
    """Ground truth: subunit maps, temporal kernels, pooling weights, output nonlinearity."""

    subunits: NDArray[np.float64]  # [n_sub, H*W] spatial profiles
    pooling: NDArray[np.float64]  # [n_cells, n_sub] centre − surround weights
    polarity: NDArray[np.float64]  # [n_cells] +1 ON, −1 OFF
    kernels: dict[int, NDArray[np.float64]]  # polarity → temporal kernel
    threshold: float
    baseline_hz: NDArray[np.float64]
    max_hz: NDArray[np.float64]
    slope: float
    centers_px: NDArray[np.float64]  # [n_cells, 2] (y, x)

    def generator(self, movie: NDArray[np.float32]) -> NDArray[np.float64]:
        """[n, H, W] contrast → [n, n_cells] generator signal (before the output nonlinearity)."""
        n = movie.shape[0]
        spatial = movie.reshape(n, -1).astype(np.float64) @ self.subunits.T  # [n, n_sub]
        out = np.zeros((n, len(self.polarity)))
        for pol, kernel in self.kernels.items():
            cells = np.flatnonzero(self.polarity == pol)
            drive = fftconvolve(spatial, kernel[:, None], axes=0)[:n]  # causal
            rect = np.maximum(pol * drive - self.threshold, 0.0)
            out[:, cells] = rect @ self.pooling[cells].T
        return out

    def rates(
        self, generator: NDArray[np.float64], mean: NDArray[np.float64], std: NDArray[np.float64]
    ) -> NDArray[np.float32]:
        """Sigmoid of the standardised generator: baseline at the training mean."""
        z = (generator - mean) / std
        b = np.log(self.max_hz / self.baseline_hz - 1.0)  # sigmoid(−b) = baseline / max
        return np.asarray(self.max_hz / (1.0 + np.exp(-(self.slope * z - b))), np.float32)


def build_retina(cfg: LNLNConfig, rng: np.random.Generator) -> LNLNRetina:
    size = cfg.size_px
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # Subunits on a jittered hexagonal lattice (spacing 2 px) over the central region.
    centers = []
    for row, y in enumerate(np.arange(4.0, size - 4.0, 2.0 * math.sqrt(3) / 2)):
        for x in np.arange(4.0 + (row % 2), size - 4.0, 2.0):
            centers.append((y + rng.normal(0, 0.2), x + rng.normal(0, 0.2)))
    sub = np.asarray(centers)
    sigma_sub = 1.0
    profiles = np.exp(
        -((yy.ravel()[None] - sub[:, :1]) ** 2 + (xx.ravel()[None] - sub[:, 1:]) ** 2)
        / (2 * sigma_sub**2)
    )
    profiles /= profiles.sum(1, keepdims=True)
    # Cells: ON and OFF each on a jittered 3×2 grid, interleaved.
    cell_c = []
    polarity = []
    for pol, n, offset in ((1.0, cfg.n_on, 0.0), (-1.0, cfg.n_off, 3.0)):
        cols = math.ceil(math.sqrt(n * 1.5))
        rows = math.ceil(n / cols)
        ys = np.linspace(10, size - 11, rows) + offset / 2
        xs = np.linspace(9, size - 10, cols) + offset
        grid = [(y, x) for y in ys for x in xs][:n]
        for y, x in grid:
            cell_c.append((y + rng.normal(0, 0.7), x + rng.normal(0, 0.7)))
            polarity.append(pol)
    cc = np.asarray(cell_c)
    d2 = ((cc[:, None, :] - sub[None]) ** 2).sum(-1)  # [n_cells, n_sub]
    centre = np.exp(-d2 / (2 * 2.5**2))
    surround = np.exp(-d2 / (2 * 5.0**2))
    pooling = centre / centre.sum(1, keepdims=True) - 0.3 * surround / surround.sum(
        1, keepdims=True
    )
    kernels = {
        1: biphasic_kernel(cfg.frame_rate_hz, tau_ms=12.0, ratio=0.9),
        -1: biphasic_kernel(cfg.frame_rate_hz, tau_ms=20.0, ratio=0.4),
    }
    n = cfg.n_cells
    return LNLNRetina(
        subunits=profiles,
        pooling=pooling,
        polarity=np.asarray(polarity),
        kernels=kernels,
        threshold=0.005,
        baseline_hz=rng.uniform(3.0, 12.0, n),
        max_hz=rng.uniform(100.0, 200.0, n),
        slope=1.6,
        centers_px=cc,
    )


def _counts(
    rates_hz: NDArray[np.float32], fr: float, rng: np.random.Generator
) -> NDArray[np.uint16]:
    return np.minimum(rng.poisson(rates_hz.astype(np.float64) / fr), 65535).astype(np.uint16)


def _uint8(movie: NDArray[np.float32]) -> NDArray[np.uint8]:
    return np.clip(np.round(127.5 * (1.0 + movie)), 0, 255).astype(np.uint8)


def simulate_lnln(cfg: LNLNConfig) -> Recording:
    """The recording: train/val/test from training scenes, repeats from a held-out scene."""
    seeds = np.random.SeedSequence([cfg.seed, 15]).spawn(6)
    rng_retina, rng_scene, rng_eye, rng_rep, rng_spk, rng_rspk = (
        np.random.default_rng(s) for s in seeds
    )
    fr = cfg.frame_rate_hz
    retina = build_retina(cfg, rng_retina)
    scenes = [one_over_f_scene(cfg.scene_px, rng_scene) for _ in range(cfg.n_scenes)]
    held_out = [one_over_f_scene(cfg.scene_px, rng_rep)]
    n_split = {
        k: round(s * fr)
        for k, s in (("train", cfg.train_s), ("val", cfg.val_s), ("test", cfg.test_s))
    }
    n_main = sum(n_split.values())
    # Stored as uint8 (npe's convention): the retina sees exactly the frames the models see.
    stim = _uint8(eye_movement_movie(scenes, n_main, cfg, rng_eye))
    rep_stim = _uint8(eye_movement_movie(held_out, round(cfg.repeat_s * fr), cfg, rng_rep))
    as_contrast = lambda s: (s.astype(np.float32) - 127.5) / 127.5  # noqa: E731
    gen = retina.generator(as_contrast(stim))
    train_gen = gen[: n_split["train"]]
    mean, std = train_gen.mean(0), train_gen.std(0) + 1e-12
    rates = retina.rates(gen, mean, std)
    rep_rates = retina.rates(retina.generator(as_contrast(rep_stim)), mean, std)
    counts = _counts(rates, fr, rng_spk)
    rep_counts = _counts(
        np.broadcast_to(rep_rates, (cfg.n_repeats, *rep_rates.shape)), fr, rng_rspk
    )
    bounds = np.cumsum([0, n_split["train"], n_split["val"], n_split["test"]])
    splits = {
        k: np.asarray([[bounds[i], bounds[i + 1]]], np.int64)
        for i, k in enumerate(("train", "val", "test"))
    }
    half = (cfg.size_px - 1) / 2
    center_deg = np.stack(
        [
            (retina.centers_px[:, 1] - half) * cfg.pixel_size_deg,
            -(retina.centers_px[:, 0] - half) * cfg.pixel_size_deg,
        ],
        axis=1,
    ).astype(np.float32)
    types = tuple("ON transient" if p > 0 else "OFF sustained" for p in retina.polarity)
    return Recording(
        stimulus=stim,
        responses=counts,
        cells=CellInfo(
            ids=tuple(f"lnln-{i:02d}" for i in range(cfg.n_cells)),
            types=types,
            center_deg=center_deg,
        ),
        splits=splits,
        frame_rate_hz=fr,
        pixel_size_deg=cfg.pixel_size_deg,
        source=f"benchmarks/accuracy/lnln_retina.py: {asdict(cfg)}",
        repeats=Repeats(stimulus=rep_stim, responses=rep_counts, truth_rates_hz=rep_rates),
        truth_rates_hz=rates,
    )
