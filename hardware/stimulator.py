"""A reference simulated stimulator: verifies, re-enforces limits, acks, dead-man stop.

(Skeleton: final signatures; implementation follows.)
"""

from __future__ import annotations

from hardware.arrays import ElectrodeArray
from hardware.safety import SafetyLimits


class SimulatedStimulator:
    def __init__(
        self,
        host: str,
        port: int,
        key: bytes,
        limits: SafetyLimits,
        array: ElectrodeArray,
        deadman_ms: float = 100.0,
    ) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError
