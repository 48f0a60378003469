"""The hardware side of a live run: the stimulation chain plus the mapping pipeline.

The chain itself (audit log, link, simulated stimulator, their open/close order) is
`hardware.chain`, shared with calibration; a live run adds the patient's calibration and the
`hardware.pipeline.StimulationPipeline` that turns each bin's rates into a frame. The loop writes
every frame sent into the audit log; the pipeline logs its safety events into the same log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardware.arrays import DEFAULT_ARRAY, ElectrodeArray, load_array
from hardware.audit import AuditLog
from hardware.calibration_file import PatientCalibration, load_calibration
from hardware.chain import STIMULATOR_NICE, SimulatorMode, StimulationChain, start_chain
from hardware.link import StimulatorLink
from hardware.pipeline import StimulationPipeline
from hardware.safety import SafetyLimits
from hardware.stimulator import StimulatorStatsSnapshot

__all__ = ["STIMULATOR_NICE", "HardwareChain", "build_chain"]


@dataclass
class HardwareChain:
    """Everything downstream of the model for one run (close() releases it in order)."""

    chain: StimulationChain
    calibration: PatientCalibration | None
    pipeline: StimulationPipeline

    @property
    def array(self) -> ElectrodeArray:
        return self.chain.array

    @property
    def limits(self) -> SafetyLimits:
        return self.chain.limits

    @property
    def link(self) -> StimulatorLink:
        return self.chain.link

    @property
    def audit(self) -> AuditLog:
        return self.chain.audit

    @property
    def link_spec(self) -> str:
        return self.chain.link_spec

    @property
    def stimulator(self) -> Any:
        return self.chain.stimulator

    def close(self) -> None:
        """Close link, then stop the simulator, then close the log (hardware.chain's order)."""
        self.chain.close()

    def stimulator_stats(self) -> StimulatorStatsSnapshot | None:
        """Stats of the simulated stimulator (for a separate process: after close())."""
        return self.chain.stimulator_stats()


def build_chain(
    array: str = DEFAULT_ARRAY,
    calibration: Path | None = None,
    limits: Path | None = None,
    link: str | None = None,
    log_path: Path = Path("audit.log"),
    key_file: Path | None = None,
    stimulator: SimulatorMode | str = SimulatorMode.PROCESS,
) -> HardwareChain:
    """Load array, limits and calibration, open the chain, build the pipeline.

    Every file is loaded before anything is opened; on an error nothing is left open and the
    error names the part.
    """
    arr = load_array(array)
    lim = SafetyLimits.load(limits) if limits is not None else SafetyLimits()
    cal = load_calibration(calibration) if calibration is not None else None
    # The pipeline (which checks the calibration against this array and these limits) and
    # the device key come before the chain: a refused calibration or key file must not leave
    # an audit log behind (a refusal changes nothing on disk).
    pipeline = StimulationPipeline(arr, cal, lim)
    key = None
    if link is not None:
        from hardware.keys import load_or_create_device_key

        key = load_or_create_device_key(key_file)
    chain = start_chain(
        arr, lim, log_path, note="npe run", link=link, key=key,
        simulator=SimulatorMode(stimulator), array_spec=array,
    )  # fmt: skip
    pipeline.audit = chain.audit
    return HardwareChain(chain, cal, pipeline)
