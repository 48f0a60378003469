"""A model retina with known ground truth: mosaics of ganglion cells pooling rectified subunits.

Why this model: npe's retina CNNs must be tested on data whose truth is known, and that data
must not be trivially linear — the original work found learned filters with localised
subunits (YADLRetina; Yan, Liu et al., REFERENCES.md), which only appear if the cells pool
rectified, bipolar-like subunits. Per ganglion cell c and frame t::

    x_t                      stimulus contrast [H, W] in [-1, 1]
    u_kt = S_k · x_t         subunit k: a small Gaussian (bipolar-like) spatial filter
    b_kt = p (f * u_k)_t     biphasic temporal filter f of the cell's type, polarity p (+1 ON, -1 OFF)
    r_kt = max(b_kt + θ_b, 0)             rectified subunit output (tonic release θ_b at grey)
    centre_ct = Σ_k w_ck r_kt             pooled by a Gaussian centre
    surround_ct = (h * Σ_k v_ck r_k)_t    pooled by a 2.5x wider Gaussian, delayed by lowpass h
    g_ct = centre_ct - a · surround_ct    difference of Gaussians over rectified subunits

The surround pools the same rectified subunits (amacrine-like inhibition), so a full-field
decrement lowers an ON cell's drive (net weight 1 - a > 0) instead of exciting it through a
linear surround, and the tonic release θ_b lets decrements pull the drive below rest.
    rate_ct = r_min + (r_max - r_min) · sigmoid(β (g_ct - μ_c) / σ_c - θ)
    spikes_ct ~ Poisson(rate_ct / frame_rate)

The output nonlinearity is a saturating sigmoid rather than an unbounded softplus, so the
rates stay inside the configured range (refractoriness bounds real ganglion cells too). Its
operating point (μ_c, σ_c) adapts to the stimulus ensemble, as real retinas adapt to contrast:
it is fitted on the training part of each recording and stored with it, so that every stimulus
kind drives the cells over the same realistic range (baseline a few Hz, peaks ~100-200 Hz).

Cell types: ON/OFF × transient/sustained plus "OFF large fast" — the original work reported
transient OFF, OFF large fast and transient ON cells (YADLRetina, REFERENCES.md). Each type
tiles the field with its own jittered hexagonal mosaic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import signal
from scipy.special import expit, logit

from encoder.recording import stimulus_as_contrast
from encoder.synthetic.config import SimulationConfig

_CHUNK = 8192


@dataclass(frozen=True)
class CellType:
    """Parameters shared by one ganglion-cell type (sizes in pixels at mosaic_scale 1).

    Attributes:
        name: the type label written to /cells/type.
        polarity: +1 ON (responds to increments), -1 OFF (to decrements).
        center_sigma_px: Gaussian centre σ; the surround σ is `surround_factor` times it.
        spacing_px: hexagonal mosaic spacing.
        tau_ms: (fast, slow) time constants of the biphasic temporal filter.
        biphasic: weight of the slow negative lobe (≈1 transient, ≈0.3 sustained).
        surround_weight: a, strength of the surround.
    """

    name: str
    polarity: int
    center_sigma_px: float
    spacing_px: float
    tau_ms: tuple[float, float]
    biphasic: float
    surround_factor: float = 2.5
    surround_weight: float = 0.4


CELL_TYPES: tuple[CellType, ...] = (
    CellType("ON transient", +1, 2.6, 10.0, (12.0, 24.0), 0.9),
    CellType("OFF transient", -1, 2.6, 10.0, (12.0, 24.0), 0.9),
    CellType("ON sustained", +1, 2.3, 10.0, (20.0, 40.0), 0.35),
    CellType("OFF sustained", -1, 2.3, 10.0, (20.0, 40.0), 0.35),
    CellType("OFF large fast", -1, 4.2, 17.0, (8.0, 16.0), 0.95),
)

SUBUNIT_SPACING_PX = 2.0
SUBUNIT_SIGMA_PX = 1.0
SIGMOID_GAIN = 2.0  # β: z-scored drive → log-odds; sets how sparse and high the peaks are
SUBUNIT_THRESHOLD = 0.05  # θ_b: tonic release, in units of filtered contrast
SURROUND_TAU_MS = 20.0  # h: the surround lags the centre
FILTER_MS = 250.0  # the filters fit inside the models' 250 ms window, so the truth is learnable


def biphasic_filter(
    tau_ms: tuple[float, float], biphasic: float, frame_rate_hz: float
) -> NDArray[np.float64]:
    """[L] temporal filter, lag 0 first: difference of two 3rd-order gamma kernels, L1 = 1.

    Covers FILTER_MS (L = round(0.25 s × rate)), sampled at bin centres so the shape in
    milliseconds is the same at 100 and 120 Hz.
    """
    n = max(2, round(FILTER_MS / 1000.0 * frame_rate_hz))
    t = (np.arange(n) + 0.5) * 1000.0 / frame_rate_hz

    def gamma(tau: float) -> NDArray[np.float64]:
        return (t / tau) ** 3 * np.exp(-t / tau) / (6.0 * tau)

    f = gamma(tau_ms[0]) - biphasic * gamma(tau_ms[1])
    return f / np.abs(f).sum()


def _hex_mosaic(
    height: int, width: int, spacing: float, margin: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """[n, 2] (row, col) centres of a jittered hexagonal lattice inside the margin."""
    offset = rng.uniform(0, spacing, size=2)
    angle = rng.uniform(0, math.pi / 3)
    reach = math.ceil(2 * max(height, width) / spacing) + 2
    i, j = np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1), indexing="ij")
    pts = np.stack([i * math.sqrt(3) / 2, j + 0.5 * (i % 2)], axis=-1).reshape(-1, 2) * spacing
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    pts = pts @ rot.T + offset + np.array([height / 2, width / 2]) - spacing / 2
    pts += rng.normal(0, 0.1 * spacing, size=pts.shape)
    inside = (
        (pts[:, 0] >= margin)
        & (pts[:, 0] <= height - 1 - margin)
        & (pts[:, 1] >= margin)
        & (pts[:, 1] <= width - 1 - margin)
    )
    pts = pts[inside]
    if len(pts) == 0:  # every type is represented, even on a tiny field
        pts = np.array([[(height - 1) / 2, (width - 1) / 2]]) + rng.normal(0, 0.5, size=(1, 2))
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    return pts[order]


def _gaussian_maps(
    centres_px: NDArray[np.float64], sigma: float | NDArray[np.float64], height: int, width: int
) -> NDArray[np.float64]:
    """[H*W, n] Gaussian spatial profiles (each sums to 1 over the frame)."""
    rr, cc = np.mgrid[0:height, 0:width]
    d2 = (rr.reshape(-1, 1) - centres_px[None, :, 0]) ** 2 + (
        cc.reshape(-1, 1) - centres_px[None, :, 1]
    ) ** 2
    g = np.exp(-d2 / (2 * np.asarray(sigma) ** 2))
    return g / g.sum(axis=0, keepdims=True)


@dataclass(frozen=True)
class TrueCell:
    """Ground truth of one simulated ganglion cell.

    Attributes:
        id, type, polarity: identity, type name, +1 ON / -1 OFF.
        center_px: (row, col) of the receptive-field centre in pixels (may be fractional).
        center_deg: (x, y) degrees from the stimulus centre, x right, y up.
        center_sigma_px, surround_sigma_px: Gaussian σ of centre and surround.
        subunits: [k] indices into `Retina.subunit_centers_px` of the pooled subunits.
        subunit_weights: [k] pooling weights w_ck (sum 1).
    """

    id: str
    type: str
    polarity: int
    center_px: tuple[float, float]
    center_deg: tuple[float, float]
    center_sigma_px: float
    surround_sigma_px: float
    subunits: NDArray[np.int64]
    subunit_weights: NDArray[np.float32]


@dataclass(frozen=True)
class Retina:
    """The ground-truth retina: cells, subunits, filters and the output nonlinearity.

    Attributes:
        height, width, frame_rate_hz, pixel_size_deg: the stimulus geometry it was built for.
        cells: [n_cells] true cells, types in CELL_TYPES order.
        subunit_centers_px: [K, 2] (row, col) of every bipolar-like subunit.
        subunit_sigma_px: σ of each subunit's Gaussian spatial filter.
        subunit_matrix: [H*W, K] float32 subunit spatial filters S (columns sum to 1).
        pooling: [K, n_cells] float32 centre pooling weights w.
        surround_pooling: [K, n_cells] float32 surround pooling weights v (sum 1 per cell).
        temporal: [n_types, L] temporal filters f (lag 0 first).
        surround_lowpass: [L] exponential lowpass h delaying the surround (sum 1).
        cell_type_index: [n_cells] index into CELL_TYPES.
        min_rate_hz, max_rate_hz, baseline_rate_hz: the output range and operating point.
        drive_mean, drive_std: [n_cells] μ_c and σ_c of the adapted nonlinearity (None until
            `adapted` has been called).
    """

    height: int
    width: int
    frame_rate_hz: float
    pixel_size_deg: float
    cells: tuple[TrueCell, ...]
    subunit_centers_px: NDArray[np.float64]
    subunit_sigma_px: float
    subunit_matrix: NDArray[np.float32]
    pooling: NDArray[np.float32]
    surround_pooling: NDArray[np.float32]
    temporal: NDArray[np.float64]
    surround_lowpass: NDArray[np.float64]
    cell_type_index: NDArray[np.int64]
    min_rate_hz: float
    max_rate_hz: float
    baseline_rate_hz: float
    drive_mean: NDArray[np.float64] | None = None
    drive_std: NDArray[np.float64] | None = None

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    def subunit_filters(self, cell: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Spatial filters of the subunits cell `cell` pools and their weights.

        Returns ([k, H, W] float32 subunit spatial filters, [k] float32 pooling weights);
        benchmarks compare a CNN's learned first-layer filters with these.
        """
        c = self.cells[cell]
        maps = self.subunit_matrix[:, c.subunits].T.reshape(-1, self.height, self.width)
        return maps.astype(np.float32), c.subunit_weights

    def drive(self, stimulus: NDArray[Any]) -> NDArray[np.float32]:
        """[N, H, W] uint8 or contrast movie → [N, n_cells] float32 generator signal g.

        The movie is assumed preceded by mean grey (filters start from zero).
        Vectorised: one matrix product projects every frame onto all subunits, then per cell
        type an FFT convolution along time, rectification and two more matrix products.
        """
        if stimulus.ndim != 3 or stimulus.shape[1:] != (self.height, self.width):
            raise ValueError(
                f"stimulus: expected shape [n, {self.height}, {self.width}], "
                f"got {list(stimulus.shape)}"
            )
        n = stimulus.shape[0]
        k = self.subunit_matrix.shape[1]
        units = np.empty((n, k), dtype=np.float32)
        for s in range(0, n, _CHUNK):
            x = stimulus_as_contrast(stimulus[s : s + _CHUNK]).reshape(-1, self.height * self.width)
            units[s : s + _CHUNK] = x @ self.subunit_matrix
        lowpass = self.surround_lowpass[:, None].astype(np.float32)
        out = np.zeros((n, self.n_cells), dtype=np.float32)
        if n == 0:
            return out
        for t, ctype in enumerate(CELL_TYPES):
            members = np.flatnonzero(self.cell_type_index == t)
            if members.size == 0:
                continue
            weights = np.concatenate(
                [self.pooling[:, members], self.surround_pooling[:, members]], axis=1
            )
            used = np.flatnonzero(weights.any(axis=1))
            f = self.temporal[t][:, None].astype(np.float32)
            b = signal.oaconvolve(units[:, used], f, mode="full", axes=0)[:n]
            rectified = np.maximum(ctype.polarity * b + SUBUNIT_THRESHOLD, 0.0, dtype=np.float32)
            pooled = rectified @ weights[used]  # [n, 2 * members]: centres, then surrounds
            centre, sur = pooled[:, : members.size], pooled[:, members.size :]
            sur = signal.oaconvolve(sur, lowpass, mode="full", axes=0)[:n]
            out[:, members] = centre - ctype.surround_weight * sur
        return out

    def adapted(self, drive: NDArray[np.floating]) -> Retina:
        """Copy whose output nonlinearity is centred on the ensemble of `drive` [N, n_cells]."""
        mean = drive.mean(axis=0, dtype=np.float64)
        std = np.maximum(drive.std(axis=0, dtype=np.float64), 1e-9)
        return replace(self, drive_mean=mean, drive_std=std)

    def rates(self, drive: NDArray[np.floating]) -> NDArray[np.float32]:
        """[N, n_cells] generator signal → [N, n_cells] float32 noise-free rates in Hz.

        rate = r_min + (r_max - r_min) · sigmoid(β z - θ), z the adapted (z-scored) drive and
        θ chosen so that z = 0 (the ensemble-mean drive) gives the baseline rate.
        """
        if self.drive_mean is None or self.drive_std is None:
            raise ValueError("retina not adapted: call adapted(drive) first")
        span = self.max_rate_hz - self.min_rate_hz
        theta = -float(logit((self.baseline_rate_hz - self.min_rate_hz) / span))
        z = (drive - self.drive_mean) / self.drive_std
        rates = self.min_rate_hz + span * expit(SIGMOID_GAIN * z - theta)
        return np.clip(rates, self.min_rate_hz, self.max_rate_hz).astype(np.float32)

    def respond(self, stimulus: NDArray[Any]) -> NDArray[np.float32]:
        """[N, H, W] movie → [N, n_cells] float32 noise-free rates (needs an adapted retina)."""
        return self.rates(self.drive(stimulus))


def build_retina(config: SimulationConfig) -> Retina:
    """The ground-truth retina for `config` (a pure function of its geometry and seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    h, w, scale = config.height, config.width, config.mosaic_scale
    sub_sigma = SUBUNIT_SIGMA_PX * scale
    spacing = SUBUNIT_SPACING_PX * scale
    rows = np.arange(spacing / 2 - 0.5, h, spacing)
    cols = np.arange(spacing / 2 - 0.5, w, spacing)
    sub_centres = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    sub_matrix = _gaussian_maps(sub_centres, sub_sigma, h, w)

    cells: list[TrueCell] = []
    type_index: list[int] = []
    pool_cols: list[NDArray[np.float64]] = []
    sur_cols: list[NDArray[np.float64]] = []
    for t, ctype in enumerate(CELL_TYPES):
        sigma = ctype.center_sigma_px * scale
        mosaic = _hex_mosaic(h, w, ctype.spacing_px * scale, margin=min(sigma, h / 4), rng=rng)
        for pos in mosaic:
            d2 = ((sub_centres - pos) ** 2).sum(axis=1)
            weights = np.exp(-d2 / (2 * sigma**2)) * (d2 <= (2.5 * sigma) ** 2)
            if weights.sum() == 0:
                weights[np.argmin(d2)] = 1.0
            weights /= weights.sum()
            idx = np.flatnonzero(weights)
            x_deg = (pos[1] - (w - 1) / 2) * config.pixel_size_deg
            y_deg = ((h - 1) / 2 - pos[0]) * config.pixel_size_deg
            cells.append(
                TrueCell(
                    id=f"c{len(cells):03d}",
                    type=ctype.name,
                    polarity=ctype.polarity,
                    center_px=(float(pos[0]), float(pos[1])),
                    center_deg=(float(x_deg), float(y_deg)),
                    center_sigma_px=float(sigma),
                    surround_sigma_px=float(sigma * ctype.surround_factor),
                    subunits=idx.astype(np.int64),
                    subunit_weights=weights[idx].astype(np.float32),
                )
            )
            type_index.append(t)
            pool_cols.append(weights)
            sur = np.exp(-d2 / (2 * (sigma * ctype.surround_factor) ** 2))
            sur_cols.append(sur / sur.sum())
    fr = config.frame_rate_hz
    temporal = np.stack([biphasic_filter(c.tau_ms, c.biphasic, fr) for c in CELL_TYPES])
    lags_ms = np.arange(temporal.shape[1]) * 1000.0 / fr
    lowpass = np.exp(-lags_ms / SURROUND_TAU_MS)
    return Retina(
        height=h,
        width=w,
        frame_rate_hz=fr,
        pixel_size_deg=config.pixel_size_deg,
        cells=tuple(cells),
        subunit_centers_px=sub_centres,
        subunit_sigma_px=float(sub_sigma),
        subunit_matrix=sub_matrix.astype(np.float32),
        pooling=np.stack(pool_cols, axis=1).astype(np.float32),
        surround_pooling=np.stack(sur_cols, axis=1).astype(np.float32),
        temporal=temporal,
        surround_lowpass=lowpass / lowpass.sum(),
        cell_type_index=np.array(type_index, dtype=np.int64),
        min_rate_hz=config.min_rate_hz,
        max_rate_hz=config.max_rate_hz,
        baseline_rate_hz=config.baseline_rate_hz,
    )
