"""Wedge-dipole retinotopic map of V1: visual field (degrees) ↔ flattened cortex (mm).

Before a patient is calibrated, each electrode's phosphene position comes from a standard
map of V1 instead of psychophysics. We use the wedge-dipole model (Polimeni, Balasubramanian
& Schwartz 2006), as Dynaphos and pulse2percept do, with the parameters listed in
REFERENCES.md (k = 17.3 mm, a = 0.75°, b = 120°, α = 0.95):

    z  = r · exp(i α θ)                (r eccentricity in degrees, θ polar angle in [-π/2, π/2])
    w  = k · log((z + a) / (z + b)) − k · log(a / b)

Cortex coordinates (mm): x = Re(w) is the distance along the horizontal meridian from the
foveal representation (≥ 0), y = Im(w) is positive for the upper visual field. Each
hemisphere represents the contralateral hemifield, so a visual point with x_deg < 0 lies in
the right hemisphere; we mirror it into the right hemifield before the map and keep the
hemifield as a separate label (`hemifield` = -1 left field / right hemisphere, +1 right field).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class WedgeDipoleMap:
    """The wedge-dipole map with its four parameters (defaults from REFERENCES.md)."""

    k: float = 17.3
    a: float = 0.75
    b: float = 120.0
    alpha: float = 0.95

    def __post_init__(self) -> None:
        if not (self.k > 0 and 0 < self.a < self.b and 0 < self.alpha <= 1):
            raise ValueError(
                f"wedge-dipole parameters out of range: k={self.k} (> 0), a={self.a}, "
                f"b={self.b} (0 < a < b), alpha={self.alpha} (0 < α ≤ 1)"
            )

    @property
    def _offset(self) -> float:
        return float(self.k * np.log(self.a / self.b))

    def to_cortex(
        self, xy_deg: NDArray[np.floating]
    ) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
        """Visual field → cortex.

        Args:
            xy_deg: [n, 2] (x right, y up) degrees from fixation.
        Returns:
            ([n, 2] float64 cortex mm (x along the meridian from the fovea, y up-field positive),
             [n] int8 hemifield: +1 right visual field, -1 left visual field).
        """
        xy = np.asarray(xy_deg, dtype=np.float64).reshape(-1, 2)
        hemi = np.where(xy[:, 0] < 0, -1, 1).astype(np.int8)
        r = np.hypot(xy[:, 0], xy[:, 1])
        theta = np.arctan2(xy[:, 1], np.abs(xy[:, 0]))
        z = r * np.exp(1j * self.alpha * theta)
        w = self.k * np.log((z + self.a) / (z + self.b)) - self._offset
        return np.stack([w.real, w.imag], axis=1), hemi

    def to_visual(
        self, xy_mm: NDArray[np.floating], hemifield: NDArray[np.integer] | int = 1
    ) -> NDArray[np.float64]:
        """Cortex → visual field: the exact inverse of `to_cortex`.

        Args:
            xy_mm: [n, 2] cortex mm (see module docstring).
            hemifield: [n] or scalar, +1 right visual field (left hemisphere), -1 left.
        Returns:
            [n, 2] float64 degrees (x right, y up).
        """
        xy = np.asarray(xy_mm, dtype=np.float64).reshape(-1, 2)
        w = xy[:, 0] + 1j * xy[:, 1] + self._offset
        q = np.exp(w / self.k)
        z = (q * self.b - self.a) / (1.0 - q)
        r = np.abs(z)
        theta = np.angle(z) / self.alpha
        x = r * np.cos(theta) * np.broadcast_to(np.asarray(hemifield), r.shape)
        return np.stack([x, r * np.sin(theta)], axis=1)

    def magnification(self, eccentricity_deg: NDArray[np.floating] | float) -> NDArray[np.float64]:
        """Cortical magnification (mm of cortex per degree) along the horizontal meridian.

        |dw/dz| = k (b − a) / ((r + a)(r + b)); used to turn a cortical spread (mm) into a
        phosphene size (degrees).
        """
        r = np.abs(np.asarray(eccentricity_deg, dtype=np.float64))
        return self.k * (self.b - self.a) / ((r + self.a) * (r + self.b))


DEFAULT_MAP = WedgeDipoleMap()
