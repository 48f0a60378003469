"""An array's placement on the wedge-dipole map, with the parameters a map fit adjusts.

The map itself is `hardware.retinotopy.WedgeDipoleMap` (REFERENCES.md: k = 17.3 mm,
a = 0.75°, b = 120°, α = 0.95). Calibration must *fit* where a patient's array really sits
(the visual-field point under its centre, its rotation, the local scale k), so this module
wraps the map in a small frozen placement object that can be varied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hardware.retinotopy import WedgeDipoleMap


@dataclass(frozen=True)
class ArrayPlacement:
    """Where an array sits on V1, in the terms of `hardware.arrays.ElectrodeArray`.

    Attributes:
        center_deg: visual-field point (x, y)° represented under the array centre.
        rotation_deg: rotation of the array's x axis against the cortical meridian axis.
        k_mm: wedge-dipole scale (sets the cortical magnification).
    """

    center_deg: tuple[float, float]
    rotation_deg: float = 0.0
    k_mm: float = 17.3

    @property
    def retinotopy(self) -> WedgeDipoleMap:
        return WedgeDipoleMap(k=self.k_mm)

    @property
    def hemifield(self) -> int:
        return -1 if self.center_deg[0] < 0 else 1

    def visual_deg(self, positions_mm: NDArray[np.float64]) -> NDArray[np.float64]:
        """positions_mm: [n, 2] array-local (mm) → [n, 2] phosphene positions (x, y)°."""
        rmap = self.retinotopy
        center_mm, _ = rmap.to_cortex(np.array([self.center_deg], dtype=np.float64))
        rot = np.deg2rad(self.rotation_deg)
        r = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
        cortex = center_mm[0] + np.asarray(positions_mm, dtype=np.float64) @ r.T
        return rmap.to_visual(cortex, self.hemifield)

    def phosphene_size_deg(
        self, current_ua: NDArray[np.float64], positions_deg: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """[n] phosphene diameter (°) at current_ua [n] for phosphenes at positions_deg [n, 2].

        Cortical spread D = 2·sqrt(I / K) mm with K = 675 µA/mm² (Dynaphos, REFERENCES.md),
        divided by the local cortical magnification (mm/°).
        """
        spread_mm = 2.0 * np.sqrt(np.maximum(np.asarray(current_ua, dtype=np.float64), 0.0) / 675.0)
        ecc = np.hypot(positions_deg[:, 0], positions_deg[:, 1])
        return spread_mm / self.retinotopy.magnification(ecc)
