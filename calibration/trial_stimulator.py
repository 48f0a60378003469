"""Delivering one calibration trial through the real hardware path.

Every trial builds a `StimulationFrame` that drives one electrode, passes it through
`hardware.safety.SafetyEnforcer` (the last word on what reaches cortex), sends it over a
`hardware.link` StimulatorLink, and then sends an all-zero frame so that nothing keeps
flowing after the train. What the patient answers to is the *delivered* (post-enforcer)
current, and that is what the trial log records beside what the procedure asked for.

Pulse-train defaults are those of the human Utah-array study (REFERENCES.md, Fernández et
al. 2021): cathodic-first biphasic pulses, 170 µs per phase, 300 Hz, ~166 ms trains (50
pulses).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from hardware.arrays import ElectrodeArray
from hardware.audit import AuditLog
from hardware.link import StimulatorLink
from hardware.safety import SafetyEnforcer, SafetyLimits
from hardware.types import StimulationFrame


@dataclass(frozen=True)
class PulseTrain:
    """The train every calibration trial uses (REFERENCES.md: 170 µs, 300 Hz, ~166 ms)."""

    phase_width_us: float = 170.0
    interphase_gap_us: float = 60.0
    pulse_rate_hz: float = 300.0
    n_pulses: int = 50

    @property
    def duration_s(self) -> float:
        return self.n_pulses / self.pulse_rate_hz


@dataclass(frozen=True)
class DeliveredTrial:
    """What was asked and what the stimulator was sent (after the safety layer).

    Attributes:
        sequence: frame sequence number of the stimulation frame.
        requested_ua: current the procedure asked for.
        delivered_ua: current in the frame actually sent (≤ every safety limit).
        events: kinds of the safety interventions on this frame (empty: untouched).
    """

    sequence: int
    requested_ua: float
    delivered_ua: float
    events: tuple[str, ...]


class TrialStimulator:
    """Builds, makes safe, sends and (optionally) times one single-electrode trial.

    Args:
        array: the implanted array (frames address all of its electrodes, in order).
        limits: safety limits; the enforcer applies them to every frame.
        link: an open StimulatorLink (udp/serial/file).
        train: pulse-train parameters.
        wait: sleep for the train's duration before the stop frame (True with a patient;
            False for simulated patients, where nobody needs to perceive anything).
        first_sequence: frame sequence to start from (a resumed session continues above
            the trials it logged).
        audit: if given, every safety intervention is written to it (the link, opened with
            the same log, records every frame it sends).
    """

    def __init__(
        self,
        array: ElectrodeArray,
        limits: SafetyLimits,
        link: StimulatorLink,
        train: PulseTrain = PulseTrain(),
        wait: bool = True,
        first_sequence: int = 0,
        audit: AuditLog | None = None,
    ) -> None:
        self.array = array
        self.limits = limits
        self.link = link
        self.train = train
        self.wait = wait
        self.enforcer = SafetyEnforcer(limits, array)
        self.audit = audit
        self.sequence = first_sequence
        self.sent_frames: list[StimulationFrame] = []
        self.keep_frames = False

    def ceiling_ua(self, electrode_id: str) -> float:
        """Highest current this electrode may carry with this train under the limits."""
        i = self._index(electrode_id)
        cap = self.limits.charge_ceiling_ua(
            np.array([self.train.phase_width_us]), self.array.area_um2[i : i + 1]
        )
        return float(cap[0])

    def _index(self, electrode_id: str) -> int:
        try:
            return self.array.electrode_ids.index(electrode_id)
        except ValueError as exc:
            raise ValueError(
                f"electrode {electrode_id!r} is not on array {self.array.name}"
            ) from exc

    def frame_for(self, electrode_id: str, amplitude_ua: float) -> StimulationFrame:
        """The (unchecked) frame that asks for `amplitude_ua` on one electrode."""
        i = self._index(electrode_id)
        n = self.array.n
        amp = np.zeros(n, dtype=np.float32)
        amp[i] = amplitude_ua
        on = np.zeros(n, dtype=np.float32)
        on[i] = 1.0
        self.sequence += 1
        return StimulationFrame(
            sequence=self.sequence,
            timestamp_ns=time.monotonic_ns(),
            electrode_ids=self.array.electrode_ids,
            amplitude_ua=amp,
            phase_width_us=on * self.train.phase_width_us,
            interphase_gap_us=on * self.train.interphase_gap_us,
            pulse_rate_hz=on * self.train.pulse_rate_hz,
            n_pulses=(on * self.train.n_pulses).astype(np.uint16),
        )

    def deliver(self, electrode_id: str, amplitude_ua: float) -> DeliveredTrial:
        """Send one train on one electrode (made safe first), then a stop frame."""
        asked = self.frame_for(electrode_id, amplitude_ua)
        safe, events = self.enforcer.enforce(asked)
        if self.audit is not None:
            for ev in events:
                self.audit.event(ev.kind, f"calibration trial {asked.sequence}: {ev.detail}")
        self.link.send(safe)
        if self.keep_frames:
            self.sent_frames.append(safe)
        if self.wait:
            time.sleep(self.train.duration_s)
        self.sequence += 1
        stop = StimulationFrame.zeros(self.array.electrode_ids, self.sequence, time.monotonic_ns())
        self.link.send(stop)
        i = self._index(electrode_id)
        return DeliveredTrial(
            sequence=safe.sequence,
            requested_ua=float(amplitude_ua),
            delivered_ua=float(safe.amplitude_ua[i]) if safe.n_pulses[i] > 0 else 0.0,
            events=tuple(e.kind for e in events),
        )
