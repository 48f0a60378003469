"""The hardware side of a live run: the stimulation chain plus the mapping pipeline.

An implant of several arrays (`build_implant_chain`, `npe run --implant`) opens one link and
one simulated stimulator per array and one audit log (`hardware.implant_chain`); its chain
object offers the loop the same pipeline/link/audit interfaces.

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
from hardware.delivery import LinkDelivery
from hardware.implant import Implant, ImplantPipeline, load_implant
from hardware.implant_calibration import load_implant_calibration
from hardware.implant_chain import ImplantBus, ImplantChain, start_implant_chain
from hardware.link import StimulatorLink
from hardware.pipeline import StimulationPipeline
from hardware.safety import SafetyLimits
from hardware.stimulator import StimulatorStatsSnapshot

__all__ = [
    "STIMULATOR_NICE",
    "HardwareChain",
    "ImplantHardwareChain",
    "build_chain",
    "build_implant_chain",
]


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
    def name(self) -> str:
        """What the run stimulates (the array's name)."""
        return self.chain.array.name

    @property
    def preview_target(self) -> tuple[ElectrodeArray, PatientCalibration | None]:
        """What `runtime.live_preview.PreviewThread` draws: the array and its calibration."""
        return self.chain.array, self.calibration

    def pipeline_events(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.pipeline.events.items()}

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

    def link_delivery(self) -> list[LinkDelivery]:
        """No per-link rows: one array, one link (`SessionOutcome.delivery` is its row)."""
        return []


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


@dataclass
class ImplantHardwareChain:
    """Everything downstream of the model for an implant run: N links, one log (issue 17).

    `pipeline`, `link` and `audit` are what the loop drives (`hardware.implant_chain.ImplantBus`:
    one implant frame per bin, split into one frame per array link); `log` is the audit log.
    """

    chain: ImplantChain
    bus: ImplantBus
    calibrations: dict[str, PatientCalibration]

    @property
    def name(self) -> str:
        return self.chain.implant.name

    @property
    def implant(self) -> Implant:
        return self.chain.implant

    @property
    def pipeline(self) -> Any:
        return self.bus.pipeline

    @property
    def link(self) -> Any:
        return self.bus.link

    @property
    def audit(self) -> Any:
        return self.bus.audit

    @property
    def limits(self) -> SafetyLimits:
        return self.chain.limits

    @property
    def link_spec(self) -> str:
        specs = self.chain.link_specs
        return f"{len(specs)} links ({specs[0]} … {specs[-1]})" if len(specs) > 1 else specs[0]

    @property
    def preview_target(self) -> tuple[Implant, dict[str, PatientCalibration]]:
        return self.chain.implant, self.calibrations

    def pipeline_events(self) -> dict[str, int]:
        return dict(self.bus.pipeline.events)

    def close(self) -> None:
        self.chain.close()

    def stimulator_stats(self) -> None:
        """None: an implant has one stimulator per array; see `link_delivery`."""
        return None

    def link_delivery(self) -> list[LinkDelivery]:
        """One row per array link: its `DeliverySummary` from the link's counters and that
        array's stimulator snapshot (for a stimulator process: after close())."""
        return self.chain.delivery()


def build_implant_chain(
    implant: str,
    calibration: Path | None = None,
    limits: Path | None = None,
    log_path: Path = Path("audit.log"),
    key_file: Path | None = None,
    stimulator: SimulatorMode | str = SimulatorMode.PROCESS,
    implant_links: bool = False,
) -> ImplantHardwareChain:
    """Load implant, limits and calibration (checked against the implant), open one link per
    array and the log, build the implant pipeline; on an error nothing is left open."""
    imp = load_implant(implant)
    lim = SafetyLimits.load(limits) if limits is not None else SafetyLimits()
    cals = (
        load_implant_calibration(calibration, imp, lim.max_amplitude_ua)
        if calibration is not None
        else {}
    )
    chain = start_implant_chain(
        imp, lim, log_path, note="npe run", use_implant_links=implant_links,
        key_file=key_file, simulator=SimulatorMode(stimulator),
    )  # fmt: skip
    try:
        pipe = ImplantPipeline(imp, lim, calibrations=cals, audit=chain.audit)
    except BaseException:
        chain.close()
        raise
    return ImplantHardwareChain(chain, ImplantBus(chain, pipe), cals)
