"""Phosphene preview: what the patient would see from stimulation frames.

(Skeleton: final signatures; implementation follows.)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hardware.arrays import ElectrodeArray
from hardware.calibration_file import PatientCalibration
from hardware.types import StimulationFrame


class PhospheneRenderer:
    def __init__(
        self,
        array: ElectrodeArray,
        calibration: PatientCalibration | None = None,
        size_px: int = 256,
        field_deg: tuple[float, float, float, float] | None = None,
    ) -> None:
        raise NotImplementedError

    def render(self, frame: StimulationFrame) -> NDArray[np.float32]:
        raise NotImplementedError
