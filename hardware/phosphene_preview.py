"""Phosphene preview: what the patient would see from stimulation frames.

Each active electrode draws a Gaussian phosphene (a scoreboard-style model, as in
pulse2percept's ScoreboardModel and Dynaphos, REFERENCES.md):

* position: the patient's calibrated phosphene position, or the wedge-dipole map's;
* size: the cortical current spread D = 2·√(I/K) mm with K = 675 µA/mm² (Dynaphos), divided
  by the cortical magnification at the phosphene's eccentricity (mm/deg) → diameter in
  degrees; the Gaussian's σ is D/2 (so the visible disc has diameter ≈ D);
* brightness: the electrode's calibrated brightness curve at its current (0 below threshold);
* dynamics: each phosphene's brightness follows its target through a first-order low-pass
  with τ = 111 ms (Dynaphos' activation time constant), one step per frame of `frame_ms`.

Rendering is separable: the image is Gy · diag(b) · Gxᵀ ([H, n] × [n] × [n, W]), one small
float32 matrix product per frame instead of n full-size Gaussians. The product runs with
BLAS limited to one thread: the preview runs beside the live runtime, and multi-threaded
OpenBLAS on a busy 2-core machine was measured 20-50× slower than one thread for this size.

Implants (issue 17): given an `Implant`, the renderer draws every electrode of every array
(1,024 for `utah16x64`) from one concatenated electrode model — each array's phosphene
positions from its placement or the patient's calibration (one per array label) — and takes
the implant frames of `hardware.implant_chain` (or `implant_frame`'s concatenation of one
bin's per-array frames); the drawing stays the one separable product.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from hardware.arrays import ElectrodeArray
from hardware.calibration_file import PatientCalibration
from hardware.implant import Implant
from hardware.mapping import ElectrodeModel, MappingConfig, electrode_model
from hardware.retinotopy import DEFAULT_MAP, WedgeDipoleMap
from hardware.types import StimulationFrame

try:  # threadpoolctl comes with scikit-learn (a dependency); without it einsum avoids BLAS
    from threadpoolctl import ThreadpoolController

    _BLAS: ThreadpoolController | None = ThreadpoolController()
except ImportError:  # pragma: no cover
    _BLAS = None


def _product(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """a [H, n] @ b [n, W] on one thread."""
    if _BLAS is None:
        return np.einsum("ik,kj->ij", a, b, optimize=False)
    with _BLAS.limit(limits=1, user_api="blas"):
        return a @ b


#: Current spread constant (µA/mm²), Dynaphos / REFERENCES.md.
K_UA_PER_MM2 = 675.0
#: Phosphene activation time constant (ms), Dynaphos / REFERENCES.md.
TAU_MS = 111.0


def phosphene_diameter_deg(
    current_ua: NDArray[np.floating],
    eccentricity_deg: NDArray[np.floating],
    retinotopy: WedgeDipoleMap = DEFAULT_MAP,
) -> NDArray[np.float64]:
    """[n] phosphene diameter in degrees: D = 2√(I/K) mm over the magnification (mm/deg)."""
    i = np.maximum(np.asarray(current_ua, dtype=np.float64), 0.0)
    d_mm = 2.0 * np.sqrt(i / K_UA_PER_MM2)
    return d_mm / retinotopy.magnification(eccentricity_deg)


def implant_model(
    implant: Implant,
    calibrations: Mapping[str, PatientCalibration] | None,
    retinotopy: WedgeDipoleMap = DEFAULT_MAP,
) -> ElectrodeModel:
    """One electrode model over every electrode of the implant, in `Implant.electrode_ids`
    order (each array's part from its own placement and calibration)."""
    cals = calibrations or {}
    parts = [
        electrode_model(a.array, cals.get(a.label), MappingConfig(), retinotopy)
        for a in implant.arrays
    ]
    return ElectrodeModel(
        enabled=np.concatenate([m.enabled for m in parts]),
        threshold_ua=np.concatenate([m.threshold_ua for m in parts]),
        max_comfortable_ua=np.concatenate([m.max_comfortable_ua for m in parts]),
        scale_ua=np.concatenate([m.scale_ua for m in parts]),
        max_brightness=np.concatenate([m.max_brightness for m in parts]),
        phosphene_deg=np.concatenate([m.phosphene_deg for m in parts]),
        source="+".join(sorted({m.source for m in parts})),
    )


def implant_frame(implant: Implant, frames: tuple[StimulationFrame, ...]) -> StimulationFrame:
    """One bin's per-array frames as one frame of every electrode (qualified ids)."""
    if len(frames) != len(implant.arrays):
        raise ValueError(
            f"{len(frames)} frames for the {len(implant.arrays)} arrays of the implant"
        )
    return StimulationFrame(
        frames[0].sequence,
        frames[0].timestamp_ns,
        implant.electrode_ids,
        np.concatenate([f.amplitude_ua for f in frames]),
        np.concatenate([f.phase_width_us for f in frames]),
        np.concatenate([f.interphase_gap_us for f in frames]),
        np.concatenate([f.pulse_rate_hz for f in frames]),
        np.concatenate([f.n_pulses for f in frames]),
    )


class PhospheneRenderer:
    """Renders frames to [size_px, size_px] images of the visual field.

    Args:
        array: the array the frames address, or an implant (frames of all its electrodes).
        calibration: per-electrode positions and brightness curves (None: map + defaults);
            for an implant, one calibration per array label.
        size_px: output image side.
        field_deg: (x_min, x_max, y_min, y_max) degrees shown; None: a square around all
            phosphenes with a margin.
        frame_ms: time per frame for the temporal dynamics (10 ms = 100 Hz bins).
        tau_ms: activation time constant (0 disables the dynamics).
    """

    def __init__(
        self,
        array: ElectrodeArray | Implant,
        calibration: PatientCalibration | Mapping[str, PatientCalibration] | None = None,
        size_px: int = 256,
        field_deg: tuple[float, float, float, float] | None = None,
        *,
        frame_ms: float = 10.0,
        tau_ms: float = TAU_MS,
        retinotopy: WedgeDipoleMap = DEFAULT_MAP,
    ) -> None:
        if size_px < 2:
            raise ValueError(f"size_px must be ≥ 2, got {size_px}")
        if isinstance(array, Implant):
            if isinstance(calibration, PatientCalibration):
                raise ValueError("an implant takes one calibration per array label")
            self.model = implant_model(array, calibration, retinotopy)
        else:
            if calibration is not None and not isinstance(calibration, PatientCalibration):
                raise ValueError("an array takes one calibration, not one per label")
            self.model = electrode_model(array, calibration, MappingConfig(), retinotopy)
        self.name = array.name
        self.n = int(self.model.enabled.shape[0])
        self.positions_deg = self.model.phosphene_deg
        self.retinotopy = retinotopy
        self.size_px = size_px
        if field_deg is None:
            lo = self.positions_deg.min(axis=0)
            hi = self.positions_deg.max(axis=0)
            centre = (lo + hi) / 2.0
            half = max(float(np.max(hi - lo)) / 2.0 * 1.25, 0.5)
            field_deg = (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)
        x0, x1, y0, y1 = field_deg
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"field_deg {field_deg}: need x_min < x_max and y_min < y_max")
        self.field_deg = (float(x0), float(x1), float(y0), float(y1))
        # Pixel centres: x grows to the right, image row 0 is the top (largest y).
        self.xs_deg = x0 + (np.arange(size_px) + 0.5) * (x1 - x0) / size_px
        self.ys_deg = y1 - (np.arange(size_px) + 0.5) * (y1 - y0) / size_px
        self.ecc_deg = np.hypot(self.positions_deg[:, 0], self.positions_deg[:, 1])
        self.alpha = 1.0 if tau_ms <= 0 else 1.0 - np.exp(-frame_ms / tau_ms)
        self.state = np.zeros(self.n)
        self._sigma = np.full(self.n, 1e-3)

    def reset(self) -> None:
        self.state[:] = 0.0
        self._sigma[:] = 1e-3

    def pixel_of(self, positions_deg: NDArray[np.floating]) -> NDArray[np.float64]:
        """[n, 2] (row, col) fractional pixel coordinates of positions [n, 2] degrees."""
        p = np.asarray(positions_deg, dtype=np.float64).reshape(-1, 2)
        x0, x1, y0, y1 = self.field_deg
        col = (p[:, 0] - x0) / (x1 - x0) * self.size_px - 0.5
        row = (y1 - p[:, 1]) / (y1 - y0) * self.size_px - 0.5
        return np.stack([row, col], axis=1)

    def targets(self, frame: StimulationFrame) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """([n] target brightness, [n] Gaussian σ in degrees) of each electrode for a frame."""
        amp = np.nan_to_num(frame.amplitude_ua.astype(np.float64), nan=0.0, posinf=0.0)
        amp = np.where(frame.active, np.maximum(amp, 0.0), 0.0)
        bright = self.model.brightness(amp)
        sigma = np.maximum(phosphene_diameter_deg(amp, self.ecc_deg, self.retinotopy) / 2.0, 1e-3)
        return bright, sigma

    def render(self, frame: StimulationFrame) -> NDArray[np.float32]:
        """Advance the dynamics by one frame and return the image: [H, W] float32 in [0, 1]."""
        if frame.n_electrodes != self.n:
            raise ValueError(f"frame has {frame.n_electrodes} electrodes, {self.name} {self.n}")
        bright, sigma = self.targets(frame)
        self.state += self.alpha * (bright - self.state)
        # Size follows the current while stimulated; a decaying phosphene keeps its last size.
        self._sigma = np.where(bright > 0, sigma, self._sigma)
        return self.draw(self.state, self._sigma)

    def draw(
        self, brightness: NDArray[np.float64], sigma_deg: NDArray[np.float64]
    ) -> NDArray[np.float32]:
        """Static image of Gaussians: brightness [n], sigma_deg [n] → [H, W] float32 in [0, 1]."""
        on = brightness > 1e-4
        if not on.any():
            return np.zeros((self.size_px, self.size_px), dtype=np.float32)
        p = self.positions_deg[on]
        s = sigma_deg[on][None, :]
        gy = np.exp(-((self.ys_deg[:, None] - p[None, :, 1]) ** 2) / (2.0 * s**2))
        gx = np.exp(-((self.xs_deg[:, None] - p[None, :, 0]) ** 2) / (2.0 * s**2))
        a = (gy * brightness[on][None, :]).astype(np.float32)
        img = _product(a, np.ascontiguousarray(gx.T, dtype=np.float32))
        return np.clip(img, 0.0, 1.0, out=img)
