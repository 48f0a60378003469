"""Rates → stimulation → safety: the one call the runtime makes per bin.

`StimulationPipeline.process(rate_field)` maps a rate field onto the array (`hardware.mapping`)
and passes the result through the independent `SafetyEnforcer`, whose verdict is final. It
never raises on bad values: NaN/inf/negative rates zero the electrodes that sample them, and
anything unexpected becomes an all-zero frame with a logged reason.

The mapper already respects the limits it knows of (it keeps the strongest electrodes up to
the simultaneous-electrode cap and below the total-current cap, and clips each electrode to
its charge ceiling), so safety events in normal operation mean something went wrong upstream.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from hardware.arrays import ElectrodeArray
from hardware.calibration_file import PatientCalibration, check_calibration_for_array
from hardware.errors import HardwareError
from hardware.kernel import GeometryKernelCache, KernelArray, MappingKernel
from hardware.mapping import MappingConfig, RateSampler, electrode_model
from hardware.retinotopy import DEFAULT_MAP, WedgeDipoleMap
from hardware.safety import EnforcedBatch, SafetyEnforcer, SafetyEvent, SafetyLimits
from hardware.types import RateField, StimulationFrame

if TYPE_CHECKING:
    from hardware.audit import EventSink


class PipelineConfigError(HardwareError, ValueError):
    """Mapping parameters that the safety limits would clamp on every frame: refused at start."""


#: Frames in `StimulationPipeline.process`'s ring: a returned frame stays unchanged while the
#: next RING_FRAMES - 1 bins are processed (the loop sends and logs it at once).
RING_FRAMES = 8


class StimulationPipeline(GeometryKernelCache):
    """Mapping then safety for one array and (optionally) one patient's calibration.

    Attributes:
        events: Counter of safety-event kinds since construction (plus "zero" frames and
            "bad_rate" electrodes).
        last_events: the events of the most recent frame.
        model: the per-electrode mapping parameters in use.
    """

    def __init__(
        self,
        array: ElectrodeArray,
        calibration: PatientCalibration | None,
        limits: SafetyLimits,
        mapping: MappingConfig | None = None,
        *,
        retinotopy: WedgeDipoleMap = DEFAULT_MAP,
        audit: EventSink | None = None,
    ) -> None:
        self.array = array
        self.calibration = calibration
        self.limits = limits
        self.mapping = mapping or MappingConfig()
        self.audit = audit
        cfg = self.mapping
        problems = []
        if cfg.phase_width_us > limits.max_phase_width_us:
            problems.append(
                f"phase width {cfg.phase_width_us} µs > limit {limits.max_phase_width_us} µs"
            )
        if cfg.interphase_gap_us > limits.max_interphase_gap_us:
            problems.append(
                f"interphase gap {cfg.interphase_gap_us} µs > limit {limits.max_interphase_gap_us} µs"
            )
        if not limits.min_pulse_rate_hz <= cfg.pulse_rate_hz <= limits.max_pulse_rate_hz:
            problems.append(
                f"pulse rate {cfg.pulse_rate_hz} Hz outside [{limits.min_pulse_rate_hz}, "
                f"{limits.max_pulse_rate_hz}] Hz"
            )
        if 2 * cfg.phase_width_us + cfg.interphase_gap_us > 1e6 / cfg.pulse_rate_hz:
            problems.append("two phases and the gap do not fit in one pulse period")
        if cfg.n_pulses > limits.max_pulses_per_frame:
            problems.append(
                f"{cfg.n_pulses} pulses per frame > limit {limits.max_pulses_per_frame}"
            )
        if problems:
            raise PipelineConfigError(
                "mapping refused by the safety limits: " + "; ".join(problems)
            )
        if calibration is not None:
            check_calibration_for_array(
                calibration, array.name, list(array.electrode_ids), limits.max_amplitude_ua
            )
        self.model = electrode_model(array, calibration, cfg, retinotopy)
        self.sampler = RateSampler(self.model.phosphene_deg, cfg)
        disabled = [
            e for e, on in zip(array.electrode_ids, self.model.enabled, strict=True) if not on
        ]
        self.enforcer = SafetyEnforcer(limits, array, disabled=disabled)
        pw = np.full(array.n, cfg.phase_width_us)
        self.ceiling_ua: NDArray[np.float64] = limits.charge_ceiling_ua(pw, array.area_um2)
        self._ids_arr = np.array(array.electrode_ids, dtype=object)
        self.events: Counter[str] = Counter()
        self.last_events: list[SafetyEvent] = []
        self.sequence = 0
        self._init_kernel_cache()
        #: Bins the kernel served / bins that went the general path (events, faults).
        self.kernel_bins = 0
        self.general_bins = 0
        # The frames `process` returns: a ring of [1, n] slots the kernel writes into, each
        # with a frame made once whose arrays are views of its slot (no object per bin).
        self._slots = [_slot(1, array.n) for _ in range(RING_FRAMES)]
        self._ring = [
            StimulationFrame(0, 0, array.electrode_ids, *(f[0] for f in slot))
            for slot in self._slots
        ]
        self._ring_at = 0
        above = self.model.enabled & (self.model.max_comfortable_ua > self.ceiling_ua)
        if above.any():
            self._log(
                SafetyEvent(
                    "calibration_above_limit",
                    f"{int(above.sum())} electrodes have a max comfortable current above what "
                    "the safety limits allow; they are capped at the limit",
                )
            )

    def _log(self, ev: SafetyEvent) -> None:
        self.events[ev.kind] += ev.count
        self.last_events.append(ev)
        if self.audit is not None:
            try:
                self.audit.event(ev.kind, ev.describe())
            except OSError:
                self.events["audit_write_failed"] += 1

    def _next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def currents(self, rates_hz: NDArray[np.floating], field: RateField) -> NDArray[np.float64]:
        """[B, n_electrodes] mapped currents (µA; NaN = bad input) for rates [B, n_entries].

        Applies drive → brightness → current, disabled electrodes, the per-electrode charge
        ceiling, the simultaneous-electrode cap (strongest kept) and the total-current cap
        (weakest dropped).
        """
        drive = self.sampler.drive(rates_hz, field.positions_deg, field.polarity)
        nan = np.isnan(drive)
        cur = self.model.current_for(np.where(nan, 0.0, drive))
        on = (drive >= self.mapping.min_drive) & self.model.enabled[None, :]
        cur = np.where(on, np.minimum(cur, self.ceiling_ua[None, :]), 0.0)
        keep = self.limits.max_active_electrodes
        order = np.argsort(-np.where(on, drive, -np.inf), axis=1, kind="stable")
        rows = np.arange(cur.shape[0])[:, None]
        ranked = cur[rows, order]  # strongest drive first
        ranked[:, keep:] = 0.0
        ranked[np.cumsum(ranked, axis=1) > self.limits.max_total_current_ua] = 0.0
        cur[rows, order] = ranked
        return np.where(nan, np.nan, cur)

    def _build_kernel(self, pos: NDArray[np.float64], pol: NDArray[np.int8]) -> MappingKernel:
        weights = self.sampler.weights(pos, pol)
        part = KernelArray(weights, self.model, self.ceiling_ua, self.enforcer)
        kernel = MappingKernel([part], self.mapping, self.limits)
        kernel.bind_ring(self._slots)
        return kernel

    def process_batch(
        self, field: RateField, rates_hz: NDArray[np.floating]
    ) -> list[StimulationFrame]:
        """Process B bins that share `field`'s geometry; rates_hz [B, n_entries]. Never raises.

        Each bin goes through the kernel; the bins it declines (they carry a safety event) go
        through the general path together. Frames are new objects (not the ring's).
        """
        try:
            rates = np.asarray(rates_hz, dtype=np.float64).reshape(-1, field.n)
            kernel = self.kernel_for(field)
            served: list[tuple[NDArray[np.generic], ...] | None] = []
            general = []
            for b in range(rates.shape[0]):
                if kernel.run(rates[b]):
                    served.append(_copy_fields(kernel))
                else:
                    served.append(None)
                    general.append(b)
            reference = self._reference(self.currents(rates[general], field)) if general else None
        except Exception as exc:  # the stream must not stop: fall back to zero
            return [self.zero(f"internal error in mapping: {exc!r}") for _ in range(len(rates_hz))]
        self.last_events = []
        ts = field.timestamp_ns or time.monotonic_ns()
        frames = []
        g = 0
        for fields in served:
            if fields is None:
                assert reference is not None
                (a, pw, gap, rate, pulses), events = reference
                for ev in events[g]:
                    self._log(ev)
                fields = (a[g], pw[g], gap[g], rate[g], pulses[g])
                g += 1
                self.general_bins += 1
            else:
                self.kernel_bins += 1
            frames.append(
                StimulationFrame(
                    self._next_sequence(),
                    ts,
                    self.array.electrode_ids,
                    *fields,  # type: ignore[arg-type]
                )
            )
        return frames

    def _enforce(self, amp: NDArray[np.float64]) -> EnforcedBatch:
        """Mapped currents [B, n] (µA, finite) → the enforcer's safe fields and events, with
        the mapping's pulse parameters on every electrode that has a current."""
        cfg = self.mapping
        on = amp > 0
        return self.enforcer.enforce_arrays(
            amp,
            np.where(on, cfg.phase_width_us, 0.0),
            np.where(on, cfg.interphase_gap_us, 0.0),
            np.where(on, cfg.pulse_rate_hz, 0.0),
            np.where(on, cfg.n_pulses, 0).reshape(amp.shape),
        )

    def _reference(self, cur: NDArray[np.float64]) -> EnforcedBatch:
        """The general path after mapping: bad-rate events, then the enforcer (nothing logged)."""
        bad = np.isnan(cur)
        bad_events: list[list[SafetyEvent]] = [[] for _ in range(cur.shape[0])]
        for b in np.nonzero(bad.any(axis=1))[0].tolist():
            names = tuple(self._ids_arr[bad[b]].tolist())
            bad_events[b].append(
                SafetyEvent(
                    "bad_rate",
                    "NaN, infinite or negative rate sampled: electrode zeroed",
                    names[0],
                    count=len(names),
                    electrodes=names,
                )
            )
        amp = np.where(bad, 0.0, cur)
        fields, events = self._enforce(amp)
        return fields, [bad_events[b] + events[b] for b in range(cur.shape[0])]

    def warm_up(self, rate_field: RateField) -> None:
        """Run the mapping and safety arithmetic once on zero rates; no frame, no log record.

        Why: the first call of each numpy/scipy path allocates and faults in its buffers (the
        first bin's map stage measured 8 ms instead of 1); a live loop calls this before its
        clock starts so that the first real bin runs at the steady-state cost. Both the
        kernel and the general path are warmed. Pure: the sequence counter, events and audit
        log are untouched.
        """
        zeros = np.zeros((1, rate_field.n), dtype=np.float64)
        self._enforce(np.nan_to_num(self.currents(zeros, rate_field)))
        self.kernel_for(rate_field).run(zeros[0])

    def process(self, rate_field: RateField) -> StimulationFrame:
        """One bin: rates → safe stimulation frame. Never raises on bad values.

        The kernel's bins fill a frame of the ring in place (see RING_FRAMES); the others
        take the general path and return a new frame.
        """
        try:
            kernel = self.kernel_for(rate_field)
            kernel.use_slot(self._ring_at)
            if rate_field.rates_hz.shape == (kernel.n_entries,) and kernel.run(rate_field.rates_hz):
                return self._fill_ring(rate_field.timestamp_ns)
            return self.process_batch(rate_field, rate_field.rates_hz[None, :])[0]
        except Exception as exc:
            return self.zero(f"internal error: {exc!r}")

    def _fill_ring(self, timestamp_ns: int) -> StimulationFrame:
        frame = self._ring[self._ring_at]
        self._ring_at = (self._ring_at + 1) % RING_FRAMES
        frame._restamp(self._next_sequence(), timestamp_ns or time.monotonic_ns())
        self.last_events = []
        self.kernel_bins += 1
        return frame

    def zero(self, reason: str) -> StimulationFrame:
        """An all-zero frame (stimulation stops), with the reason logged as a safety event."""
        self.last_events = []
        self._log(SafetyEvent("zero", reason))
        return StimulationFrame.zeros(
            self.array.electrode_ids, self._next_sequence(), time.monotonic_ns()
        )


def _copy_fields(kernel: MappingKernel, row: int = 0) -> tuple[NDArray[np.generic], ...]:
    n = kernel.sizes[row]
    return (
        kernel.amplitude_ua[row, :n].copy(),
        kernel.phase_width_us[row, :n].copy(),
        kernel.interphase_gap_us[row, :n].copy(),
        kernel.pulse_rate_hz[row, :n].copy(),
        kernel.n_pulses[row, :n].copy(),
    )


Slot = tuple[
    NDArray[np.float32],
    NDArray[np.float32],
    NDArray[np.float32],
    NDArray[np.float32],
    NDArray[np.uint16],
]


def _slot(rows: int, width: int) -> Slot:
    """One ring slot: the five [rows, width] frame fields a kernel writes into.

    Phase width, gap and pulse rate are the rows of one [3, rows, width] block, so that the
    kernel fills all three with one multiply (`hardware.kernel._params_block`).
    """
    f = np.float32
    params = np.zeros((3, rows, width), f)
    return (
        np.zeros((rows, width), f),
        params[0],
        params[1],
        params[2],
        np.zeros((rows, width), np.uint16),
    )
