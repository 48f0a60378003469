"""Safety limits and the enforcer every stimulation frame passes last.

This module is the last word on what reaches a patient's cortex. It trusts nothing upstream
(model, mapper, calibration, caller): it recomputes every quantity from the frame itself and
the array geometry, clamps what exceeds a limit, zeroes what is malformed (NaN, inf,
negative), never raises on frame values, and reports every intervention as a `SafetyEvent`.

Limits (per electrode, then per frame):
  * amplitude ≤ max_amplitude_ua;
  * 0 < phase width ≤ max_phase_width_us; 0 ≤ interphase gap ≤ max_interphase_gap_us;
  * charge per phase Q = I·t ≤ max_charge_per_phase_nc;
  * charge density D = Q / area ≤ max_charge_density_uc_cm2 (geometric area from the array);
  * Shannon criterion log10(D) + log10(Q) ≤ shannon_k (D in µC/cm², Q in µC), default
    k = 1.85, the boundary where tissue damage becomes possible (REFERENCES.md, Shannon 1992);
    microelectrodes deviate from it, hence Q and D are also capped directly (McCreery 2010);
  * pulse rate within [min_pulse_rate_hz, max_pulse_rate_hz]; pulses per frame ≤ max;
  * charge balance: only symmetric cathodic-first biphasic pulses exist in `StimulationFrame`
    (one amplitude and width for both phases), so an unbalanced pulse is unrepresentable;
    what remains is that both phases and the gap must fit inside one pulse period
    (2·t + gap ≤ 1/rate), otherwise the anodic phase would be cut short — the enforcer lowers
    the rate until it fits, or zeroes the electrode;
  * disabled electrodes never stimulate;
  * per frame: at most max_active_electrodes active at once (CereStim-like stimulators drive
    16 channels, REFERENCES.md), the strongest kept; total current ≤ max_total_current_ua
    (scaled down proportionally).

The enforcer applies these as `RULES`, an ordered table of small named rules (each a function
of the enforcer and the batch being made safe, each reporting its own `EventKind`s), then
`_finish` rounds to the wire's float32. A new limit is one rule and one row.

`SafetyLimits` refuses, at construction, any configuration beyond the absolute limits of the
stimulator hardware (`HARDWARE_LIMITS`, CereStim-like: 100 µA, 300 µs, 30 nC/phase,
16 channels) or with k above 1.85, naming the reason.

Float care: caps are computed in float64 and applied with a relative margin of 1e-6, then
rounded toward zero into float32, so a frame that leaves the enforcer satisfies every limit
when re-checked exactly (`check_frame`, an independent re-implementation of the checks).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hardware.arrays import ElectrodeArray
from hardware.errors import HardwareError
from hardware.types import StimulationFrame
from hardware.untrusted_json import UntrustedFileError, error_location, load_untrusted_json


@dataclass(frozen=True)
class HardwareLimits:
    """What the stimulator hardware itself can never exceed (firmware limits)."""

    max_amplitude_ua: float = 100.0
    max_phase_width_us: float = 300.0
    max_charge_per_phase_nc: float = 30.0
    max_active_electrodes: int = 16
    max_pulse_rate_hz: float = 1000.0
    max_interphase_gap_us: float = 1000.0
    max_pulses_per_frame: int = 1000
    max_shannon_k: float = 1.85


#: CereStim-like firmware limits (REFERENCES.md: Blackrock CereStim family).
HARDWARE_LIMITS = HardwareLimits()

#: Relative margin applied to every cap so float32 rounding never lands above a limit.
_MARGIN = 1.0 - 1e-6
#: Currents below this (µA) are not deliverable by any stimulator and become zero. Without a
#: floor, a tiny configured cap scales currents into float32 denormals, whose rounding error is
#: absolute rather than relative, so _MARGIN no longer keeps their sum under the cap.
_MIN_DELIVERABLE_UA = 1e-3


class SafetyConfigError(HardwareError, ValueError):
    """A safety configuration that is refused at start (beyond hardware limits, inconsistent)."""


class SafetyLimits(BaseModel):
    """The configured limits (stricter than or equal to the hardware's absolute limits).

    Defaults follow the human Utah-array work (REFERENCES.md: 170 µs phases at 300 Hz,
    thresholds ~67 µA, brightness saturating near 90 µA): 100 µA × 170 µs = 17 nC passes,
    and on a 2,000 µm² iridium-oxide tip that is 850 µC/cm² at k ≈ 1.16. The charge-density
    default (1,000 µC/cm²) is an npe choice that admits that clinical operating range; a
    clinic may set McCreery's stricter figures (e.g. 200 µC/cm²) instead. The total-current
    default (1,600 µA = 16 channels × 100 µA) only says what the other defaults imply; set it
    stricter per patient (simultaneous stimulation lowers thresholds, REFERENCES.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_amplitude_ua: float = Field(default=100.0, gt=0.0, allow_inf_nan=False)
    max_phase_width_us: float = Field(default=300.0, gt=0.0, allow_inf_nan=False)
    max_interphase_gap_us: float = Field(default=100.0, ge=0.0, allow_inf_nan=False)
    max_charge_per_phase_nc: float = Field(default=20.0, gt=0.0, allow_inf_nan=False)
    max_charge_density_uc_cm2: float = Field(default=1000.0, gt=0.0, allow_inf_nan=False)
    shannon_k: float = Field(default=1.85, allow_inf_nan=False)
    min_pulse_rate_hz: float = Field(default=20.0, gt=0.0, allow_inf_nan=False)
    max_pulse_rate_hz: float = Field(default=500.0, gt=0.0, allow_inf_nan=False)
    max_pulses_per_frame: int = Field(default=50, ge=1)
    max_active_electrodes: int = Field(default=16, ge=0)
    max_total_current_ua: float = Field(default=1600.0, ge=0.0, allow_inf_nan=False)
    disabled_electrodes: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _within_hardware(self) -> SafetyLimits:
        hw = HARDWARE_LIMITS
        checks = [
            ("max_amplitude_ua", self.max_amplitude_ua, hw.max_amplitude_ua, "µA"),
            ("max_phase_width_us", self.max_phase_width_us, hw.max_phase_width_us, "µs"),
            (
                "max_charge_per_phase_nc",
                self.max_charge_per_phase_nc,
                hw.max_charge_per_phase_nc,
                "nC",
            ),
            ("max_active_electrodes", self.max_active_electrodes, hw.max_active_electrodes, ""),
            ("max_pulse_rate_hz", self.max_pulse_rate_hz, hw.max_pulse_rate_hz, "Hz"),
            (
                "max_interphase_gap_us",
                self.max_interphase_gap_us,
                hw.max_interphase_gap_us,
                "µs",
            ),
            ("max_pulses_per_frame", self.max_pulses_per_frame, hw.max_pulses_per_frame, ""),
            ("shannon_k", self.shannon_k, hw.max_shannon_k, ""),
        ]
        for name, value, limit, unit in checks:
            if value > limit:
                raise ValueError(
                    f"{name} = {value} {unit} is beyond the hardware's absolute limit "
                    f"{limit} {unit}".replace("  ", " ")
                )
        if self.min_pulse_rate_hz > self.max_pulse_rate_hz:
            raise ValueError(
                f"min_pulse_rate_hz {self.min_pulse_rate_hz} is above max_pulse_rate_hz "
                f"{self.max_pulse_rate_hz}"
            )
        return self

    @classmethod
    def create(cls, **values: object) -> SafetyLimits:
        """Build limits, raising SafetyConfigError with a one-line reason on refusal."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SafetyConfigError(_reasons(exc)) from exc

    @classmethod
    def load(cls, path: str | Path) -> SafetyLimits:
        """Read limits from a JSON file; SafetyConfigError names what is wrong."""
        p = Path(path)
        try:
            raw = load_untrusted_json(p, "limits file")
        except UntrustedFileError as exc:
            raise SafetyConfigError(str(exc)) from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise SafetyConfigError(f"{p}: refused: {_reasons(exc)}") from exc

    def charge_ceiling_ua(
        self, phase_width_us: NDArray[np.floating], area_um2: NDArray[np.floating]
    ) -> NDArray[np.float64]:
        """[n] highest amplitude (µA) each electrode may carry at this phase width.

        The minimum of the amplitude cap, the charge cap, the charge-density cap and the
        Shannon cap, with the float margin applied. Args: phase_width_us [n] > 0, area_um2 [n].
        """
        pw = np.asarray(phase_width_us, dtype=np.float64)
        area_cm2 = np.asarray(area_um2, dtype=np.float64) * 1e-8
        with np.errstate(divide="ignore", invalid="ignore"):
            q_cap_nc = np.minimum(
                self.max_charge_per_phase_nc,
                np.minimum(
                    self.max_charge_density_uc_cm2 * area_cm2 * 1e3,
                    np.sqrt(10.0**self.shannon_k * area_cm2) * 1e3,
                ),
            )
            amp = np.minimum(self.max_amplitude_ua, q_cap_nc * 1e3 / pw)
        return np.where(pw > 0, amp * _MARGIN, 0.0)


def _reasons(exc: ValidationError) -> str:
    return "; ".join(
        f"{error_location(err['loc'], 'limits')}: {str(err['msg']).removeprefix('Value error, ')}"
        for err in exc.errors()
    )


@dataclass(frozen=True)
class SafetyEvent:
    """One intervention of the safety layer (a clamp, a zeroing, a refusal).

    `electrode_id` is None for frame-level events. `value` is what was asked, `limit` what
    was allowed (NaN where not meaningful).
    """

    kind: str
    detail: str
    electrode_id: str | None = None
    value: float = float("nan")
    limit: float = float("nan")
    count: int = 1
    electrodes: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the audit log."""
        where = ", ".join(self.electrodes[:8]) + (" …" if len(self.electrodes) > 8 else "")
        parts = [self.detail]
        if where:
            parts.append(f"electrodes ({self.count}): {where}")
        if np.isfinite(self.value):
            parts.append(f"asked {self.value:.6g}")
        if np.isfinite(self.limit):
            parts.append(f"limit {self.limit:.6g}")
        return "; ".join(parts)


class EventKind(StrEnum):
    """What the safety layer did (stable strings: counted, logged, summarised by `npe log
    inspect`)."""

    NONFINITE = "nonfinite"
    NEGATIVE = "negative"
    DISABLED = "disabled"
    PHASE_WIDTH_INVALID = "phase_width_invalid"
    PHASE_WIDTH_CAP = "phase_width_cap"
    GAP_CAP = "gap_cap"
    PULSE_RATE_INVALID = "pulse_rate_invalid"
    PULSE_RATE_LOW = "pulse_rate_low"
    PULSE_RATE_HIGH = "pulse_rate_high"
    CHARGE_BALANCE_PERIOD = "charge_balance_period"
    PULSES_CAP = "pulses_cap"
    AMPLITUDE_CAP = "amplitude_cap"
    CHARGE_CAP = "charge_cap"
    DENSITY_CAP = "density_cap"
    SHANNON_CAP = "shannon_cap"
    ACTIVE_CAP = "active_cap"
    TOTAL_CURRENT_CAP = "total_current_cap"
    ARRAY_MISMATCH = "array_mismatch"


#: The kinds as plain strings, in their order (kept for readers of older code and logs).
EVENT_KINDS = tuple(k.value for k in EventKind)


def _f32_le(x: NDArray[np.float64], cap: NDArray[np.float64] | float) -> NDArray[np.float32]:
    """Round x to float32 without exceeding cap (x ≤ cap assumed in float64)."""
    y = x.astype(np.float32)
    over = y.astype(np.float64) > cap
    if np.any(over):
        y[over] = np.nextafter(y[over], np.float32(-np.inf))
    return y


def _f32_ge(x: NDArray[np.float64], floor: float) -> NDArray[np.float32]:
    y = x.astype(np.float32)
    under = y.astype(np.float64) < floor
    if np.any(under):
        y[under] = np.nextafter(y[under], np.float32(np.inf))
    return y


@dataclass
class _Fields:
    """[B, n] float64 working copies of the frame parameters."""

    amp: NDArray[np.float64]
    pw: NDArray[np.float64]
    gap: NDArray[np.float64]
    rate: NDArray[np.float64]
    pulses: NDArray[np.float64]


#: `SafetyEnforcer.enforce_arrays`'s result: ((amplitude_ua, phase_width_us, interphase_gap_us,
#: pulse_rate_hz) [B, n] float32, n_pulses [B, n] uint16) and each batch row's events.
EnforcedBatch = tuple[
    tuple[
        NDArray[np.float32],
        NDArray[np.float32],
        NDArray[np.float32],
        NDArray[np.float32],
        NDArray[np.uint16],
    ],
    list[list[SafetyEvent]],
]


class SafetyEnforcer:
    """Clamps stimulation to `SafetyLimits` for one array; counts what it did.

    `enforce` handles one frame; `enforce_arrays` is the same code on a batch ([B, n]
    arrays), which the pipeline and the property tests use. Frame values never raise.
    """

    def __init__(
        self, limits: SafetyLimits, array: ElectrodeArray, disabled: Iterable[str] = ()
    ) -> None:
        self.limits = limits
        self.array = array
        off = set(limits.disabled_electrodes) | set(disabled)
        self.disabled_mask: NDArray[np.bool_] = np.array(
            [i in off for i in array.electrode_ids], dtype=bool
        )
        self.counts: Counter[str] = Counter()
        self._ids_arr = np.array(array.electrode_ids, dtype=object)
        # The charge, charge-density and Shannon caps are all (per-electrode charge) / pw:
        # the charges [1, n] in µA·µs, computed once. min_k(q_k / pw) · margin equals the
        # minimum of the individual caps with the margin applied, bit for bit (division by a
        # positive number and multiplication by the margin are monotonic in floating point).
        lim = limits
        area_cm2 = array.area_cm2[None, :]
        self._charge_caps: dict[str, NDArray[np.float64]] = {
            "charge_cap": np.full((1, array.n), lim.max_charge_per_phase_nc * 1e3),
            "density_cap": lim.max_charge_density_uc_cm2 * area_cm2 * 1e6,
            "shannon_cap": np.sqrt(10.0**lim.shannon_k * area_cm2) * 1e6,
        }
        self._charge_min = np.minimum.reduce(list(self._charge_caps.values()))

    def _ceiling(self, pw: NDArray[np.float64]) -> NDArray[np.float64]:
        """[B, n] highest amplitude (µA, margin applied) at phase widths pw [B, n].

        Entries with pw ≤ 0 or NaN get the ceiling of 1 µs; they are never live there.
        """
        pw_safe = np.where(pw > 0, pw, 1.0)
        return np.minimum(self.limits.max_amplitude_ua, self._charge_min / pw_safe) * _MARGIN

    def enforce(self, frame: StimulationFrame) -> tuple[StimulationFrame, list[SafetyEvent]]:
        """Return the frame made safe, and every intervention (empty list: untouched)."""
        ids = self.array.electrode_ids
        if frame.electrode_ids != ids:
            ev = SafetyEvent(
                "array_mismatch",
                f"frame addresses {frame.n_electrodes} electrodes that are not array "
                f"{self.array.name}'s {len(ids)} in order; whole frame zeroed",
            )
            self.counts[ev.kind] += 1
            return StimulationFrame.zeros(ids, frame.sequence, frame.timestamp_ns), [ev]
        (amp, pw, gap, rate, pulses), events = self.enforce_arrays(
            frame.amplitude_ua[None],
            frame.phase_width_us[None],
            frame.interphase_gap_us[None],
            frame.pulse_rate_hz[None],
            frame.n_pulses[None],
        )
        out = StimulationFrame(
            sequence=frame.sequence,
            timestamp_ns=frame.timestamp_ns,
            electrode_ids=ids,
            amplitude_ua=amp[0],
            phase_width_us=pw[0],
            interphase_gap_us=gap[0],
            pulse_rate_hz=rate[0],
            n_pulses=pulses[0],
        )
        return out, events[0]

    def enforce_arrays(
        self,
        amplitude_ua: NDArray[np.generic],
        phase_width_us: NDArray[np.generic],
        interphase_gap_us: NDArray[np.generic],
        pulse_rate_hz: NDArray[np.generic],
        n_pulses: NDArray[np.generic],
    ) -> EnforcedBatch:
        """Enforce every limit on a batch: the rules of `RULES`, in order.

        Args: each [B, n] (n = array electrodes), any numeric dtype, any values.
        Returns: ((amplitude_ua, phase_width_us, interphase_gap_us, pulse_rate_hz) [B, n]
        float32, n_pulses [B, n] uint16) and, per batch row, the list of events.
        """
        f = _Fields(
            *(
                np.array(a, dtype=np.float64, copy=True).reshape(-1, self.array.n)
                for a in (amplitude_ua, phase_width_us, interphase_gap_us, pulse_rate_hz, n_pulses)
            )
        )
        work = _Work(f, np.zeros(f.amp.shape, dtype=bool), [[] for _ in range(f.amp.shape[0])])
        for _name, rule in RULES:
            rule(self, work)
        return _finish(self, work)

    def _report(
        self,
        work: _Work,
        kind: EventKind,
        mask: NDArray[np.bool_],
        detail: str,
        value: NDArray[np.float64] | None = None,
        limit: float | NDArray[np.float64] = float("nan"),
    ) -> None:
        """One event per frame and kind, naming every electrode it touched; the counter
        counts electrodes (every single clamp), the log stays one line per cause."""
        if not mask.any():
            return
        rows = np.nonzero(mask.any(axis=1))[0]
        sub = mask[rows]
        counts = sub.sum(axis=1)
        self.counts[kind] += int(counts.sum())
        if value is not None:
            vmax = np.where(sub, value[rows], -np.inf).max(axis=1)
        else:
            vmax = np.full(len(rows), np.nan)
        lim_arr = np.broadcast_to(np.asarray(limit, dtype=np.float64), mask.shape)
        lmin = np.where(sub, lim_arr[rows], np.inf).min(axis=1)
        for k, b in enumerate(rows.tolist()):
            names = tuple(self._ids_arr[sub[k]].tolist())
            work.events[b].append(
                SafetyEvent(
                    kind,
                    detail,
                    names[0],
                    float(vmax[k]),
                    float(lmin[k]) if np.isfinite(lmin[k]) else float("nan"),
                    count=int(counts[k]),
                    electrodes=names,
                )
            )


@dataclass
class _Work:
    """The batch being made safe: working fields, which electrodes are still live, events."""

    f: _Fields
    live: NDArray[np.bool_]
    events: list[list[SafetyEvent]]
    #: [B, n] highest amplitude at the final phase widths (set by the amplitude rule).
    ceiling: NDArray[np.float64] | None = None


def _rule_valid_values(e: SafetyEnforcer, w: _Work) -> None:
    """Only finite, non-negative parameters stimulate; anything else zeroes the electrode.

    "Asked" counts NaN as asking: a NaN is never silently treated as zero without a report.
    """
    f = w.f
    asked = (f.amp != 0) & (f.pulses != 0)
    stack = np.stack([f.amp, f.pw, f.gap, f.rate, f.pulses])
    nonfinite = asked & ~np.all(np.isfinite(stack), axis=0)
    e._report(w, EventKind.NONFINITE, nonfinite, "NaN or infinite parameter: electrode zeroed")
    negative = asked & ~nonfinite & np.any(stack < 0, axis=0)
    e._report(w, EventKind.NEGATIVE, negative, "negative parameter: electrode zeroed")
    w.live = asked & ~nonfinite & ~negative


def _rule_disabled(e: SafetyEnforcer, w: _Work) -> None:
    """Disabled electrodes (limits or calibration) never stimulate."""
    dis = w.live & e.disabled_mask[None, :]
    e._report(w, EventKind.DISABLED, dis, "disabled electrode asked to stimulate: zeroed", w.f.amp)
    w.live &= ~dis


def _rule_phase_and_gap(e: SafetyEnforcer, w: _Work) -> None:
    """Phase width > 0 and within its maximum; interphase gap within its maximum."""
    f, lim = w.f, e.limits
    bad_pw = w.live & (f.pw <= 0)
    e._report(w, EventKind.PHASE_WIDTH_INVALID, bad_pw, "phase width 0: electrode zeroed", f.pw)
    w.live &= ~bad_pw
    m = w.live & (f.pw > lim.max_phase_width_us)
    e._report(w, EventKind.PHASE_WIDTH_CAP, m, "phase width clamped", f.pw, lim.max_phase_width_us)
    f.pw = np.where(m, lim.max_phase_width_us * _MARGIN, f.pw)
    m = w.live & (f.gap > lim.max_interphase_gap_us)
    e._report(w, EventKind.GAP_CAP, m, "interphase gap clamped", f.gap, lim.max_interphase_gap_us)
    f.gap = np.where(m, lim.max_interphase_gap_us * _MARGIN, f.gap)


def _rule_pulse_rate(e: SafetyEnforcer, w: _Work) -> None:
    """Pulse rate > 0, raised to the minimum and clamped to the maximum."""
    f, lim = w.f, e.limits
    bad_rate = w.live & (f.rate <= 0)
    e._report(w, EventKind.PULSE_RATE_INVALID, bad_rate, "pulse rate 0: electrode zeroed", f.rate)
    w.live &= ~bad_rate
    m = w.live & (f.rate < lim.min_pulse_rate_hz)
    e._report(
        w,
        EventKind.PULSE_RATE_LOW,
        m,
        "pulse rate raised to minimum",
        f.rate,
        lim.min_pulse_rate_hz,
    )
    f.rate = np.where(m, lim.min_pulse_rate_hz, f.rate)
    m = w.live & (f.rate > lim.max_pulse_rate_hz)
    e._report(w, EventKind.PULSE_RATE_HIGH, m, "pulse rate clamped", f.rate, lim.max_pulse_rate_hz)
    f.rate = np.where(m, lim.max_pulse_rate_hz * _MARGIN, f.rate)


def _rule_charge_balance(e: SafetyEnforcer, w: _Work) -> None:
    """Cathodic phase, gap and anodic phase must fit in one pulse period."""
    f, lim = w.f, e.limits
    with np.errstate(divide="ignore", invalid="ignore"):
        fit_rate = np.where(w.live, 1e6 / (2.0 * f.pw + f.gap), np.inf) * _MARGIN
    m = w.live & (f.rate > fit_rate)
    unfit = m & (fit_rate < lim.min_pulse_rate_hz)
    e._report(
        w,
        EventKind.CHARGE_BALANCE_PERIOD,
        m,
        "both phases and gap exceed the pulse period: rate lowered (or electrode zeroed)",
        f.rate,
        fit_rate,
    )
    f.rate = np.where(m, fit_rate, f.rate)
    w.live &= ~unfit


def _rule_pulses(e: SafetyEnforcer, w: _Work) -> None:
    """Whole pulses only, at most the maximum per frame."""
    f, lim = w.f, e.limits
    m = w.live & (f.pulses > lim.max_pulses_per_frame)
    e._report(
        w, EventKind.PULSES_CAP, m, "pulses per frame clamped", f.pulses, lim.max_pulses_per_frame
    )
    f.pulses = np.where(m, lim.max_pulses_per_frame, np.floor(f.pulses))


def _rule_amplitude(e: SafetyEnforcer, w: _Work) -> None:
    """Amplitude ≤ the strictest of: its maximum, charge per phase, charge density, Shannon.

    Each cap is reported under its own name (the strictest one binds).
    """
    f, lim = w.f, e.limits
    ceiling = e._ceiling(f.pw)
    if (w.live & (f.amp > ceiling)).any():  # usually not: skip the per-kind reports
        pw_safe = np.where(f.pw > 0, f.pw, 1.0)  # live electrodes all have pw > 0
        caps = {
            EventKind.AMPLITUDE_CAP: np.full_like(f.amp, lim.max_amplitude_ua),
            **{EventKind(kind): q / pw_safe for kind, q in e._charge_caps.items()},
        }
        for kind, cap in caps.items():
            m = w.live & (f.amp > cap * _MARGIN)
            e._report(
                w, kind, m, f"amplitude clamped ({kind.removesuffix('_cap')} limit)", f.amp, cap
            )
    f.amp = np.where(w.live, np.minimum(f.amp, ceiling), 0.0)
    w.live &= f.amp > 0
    w.ceiling = ceiling


def _rule_simultaneous(e: SafetyEnforcer, w: _Work) -> None:
    """At most the maximum of electrodes active in one frame: the strongest are kept."""
    f, lim = w.f, e.limits
    n_active = w.live.sum(axis=1)
    for b in np.nonzero(n_active > lim.max_active_electrodes)[0].tolist():
        order = np.argsort(-f.amp[b], kind="stable")
        w.live[b, order[lim.max_active_electrodes :]] = False
        e.counts[EventKind.ACTIVE_CAP] += 1
        w.events[b].append(
            SafetyEvent(
                EventKind.ACTIVE_CAP,
                f"{int(n_active[b])} electrodes active, the {lim.max_active_electrodes} "
                "strongest kept",
                None,
                float(n_active[b]),
                float(lim.max_active_electrodes),
            )
        )
    f.amp = np.where(w.live, f.amp, 0.0)


def _rule_total_current(e: SafetyEnforcer, w: _Work) -> None:
    """The frame's total current within its maximum: all amplitudes scaled down together."""
    f, lim = w.f, e.limits
    total = f.amp.sum(axis=1)
    over = total > lim.max_total_current_ua * _MARGIN
    for b in np.nonzero(over)[0].tolist():
        e.counts[EventKind.TOTAL_CURRENT_CAP] += 1
        w.events[b].append(
            SafetyEvent(
                EventKind.TOTAL_CURRENT_CAP,
                "total current scaled down proportionally",
                None,
                float(total[b]),
                lim.max_total_current_ua,
            )
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(over, lim.max_total_current_ua * _MARGIN**2 / total, 1.0)
    f.amp = f.amp * scale[:, None]
    w.live &= f.amp >= _MIN_DELIVERABLE_UA


#: The safety rules, in the order they apply (each sees what the ones before it left).
RULES: tuple[tuple[str, Callable[[SafetyEnforcer, _Work], None]], ...] = (
    ("valid values", _rule_valid_values),
    ("disabled electrodes", _rule_disabled),
    ("phase width and gap", _rule_phase_and_gap),
    ("pulse rate", _rule_pulse_rate),
    ("charge balance", _rule_charge_balance),
    ("pulses per frame", _rule_pulses),
    ("amplitude, charge, charge density (Shannon)", _rule_amplitude),
    ("simultaneous electrodes", _rule_simultaneous),
    ("total current", _rule_total_current),
)


def _finish(e: SafetyEnforcer, w: _Work) -> EnforcedBatch:
    """Round to the wire's float32 without crossing any bound; re-check the balance there."""
    f, lim, live = w.f, e.limits, w.live
    assert w.ceiling is not None, "the amplitude rule sets the ceiling"
    z = np.float64(0.0)
    pw = _f32_le(np.where(live, f.pw, z), lim.max_phase_width_us)
    gap = _f32_le(np.where(live, f.gap, z), lim.max_interphase_gap_us)
    # Pulse rate from the float32 phase and gap that actually leave (exact bounds).
    with np.errstate(divide="ignore"):
        upper = np.minimum(
            lim.max_pulse_rate_hz,
            1e6 / (2.0 * pw.astype(np.float64) + gap.astype(np.float64)),
        )
    lower = lim.min_pulse_rate_hz
    rate = _f32_le(np.clip(f.rate, lower, np.maximum(upper, lower)), upper)
    rate = np.where(rate.astype(np.float64) < lower, np.nextafter(rate, np.float32(np.inf)), rate)
    fits = (rate.astype(np.float64) >= lower) & (rate.astype(np.float64) <= upper)
    lost = live & ~fits
    e._report(
        w,
        EventKind.CHARGE_BALANCE_PERIOD,
        lost,
        "no pulse rate fits phases and gap: zeroed",
        f.rate,
    )
    live &= fits
    amp = _f32_le(np.where(live, f.amp, z), np.where(live, w.ceiling, 0.0))
    pw = np.where(live, pw, np.float32(0.0)).astype(np.float32)
    gap = np.where(live, gap, np.float32(0.0)).astype(np.float32)
    rate = np.where(live, rate, np.float32(0.0)).astype(np.float32)
    pulses = np.where(live, f.pulses, 0.0).astype(np.uint16)
    return (amp, pw, gap, rate, pulses), w.events


def check_frame(
    frame: StimulationFrame,
    limits: SafetyLimits,
    array: ElectrodeArray,
    disabled: Iterable[str] = (),
) -> list[str]:
    """Independent re-check of a frame against every limit; [] when the frame is safe.

    Deliberately written apart from the enforcer (plain per-electrode loop, exact float64
    arithmetic on the float32 values) so that a bug in one is caught by the other. Used by the
    property tests, by the simulated stimulator and by `npe log inspect`.
    """
    v: list[str] = []
    if frame.electrode_ids != array.electrode_ids:
        return [f"frame electrodes do not match array {array.name}"]
    off = set(limits.disabled_electrodes) | set(disabled)
    active = 0
    total = 0.0
    for i, eid in enumerate(frame.electrode_ids):
        a = float(frame.amplitude_ua[i])
        t = float(frame.phase_width_us[i])
        g = float(frame.interphase_gap_us[i])
        r = float(frame.pulse_rate_hz[i])
        n = int(frame.n_pulses[i])
        vals = (a, t, g, r)
        if not all(math.isfinite(x) for x in vals):
            v.append(f"{eid}: non-finite parameter")
            continue
        if min(vals) < 0:
            v.append(f"{eid}: negative parameter")
            continue
        if a == 0 or n == 0:
            continue
        active += 1
        total += a
        if eid in off:
            v.append(f"{eid}: disabled electrode stimulates")
        if a > limits.max_amplitude_ua:
            v.append(f"{eid}: amplitude {a} > {limits.max_amplitude_ua} µA")
        if not 0 < t <= limits.max_phase_width_us:
            v.append(f"{eid}: phase width {t} µs outside (0, {limits.max_phase_width_us}]")
            continue
        if g > limits.max_interphase_gap_us:
            v.append(f"{eid}: interphase gap {g} > {limits.max_interphase_gap_us} µs")
        if not limits.min_pulse_rate_hz <= r <= limits.max_pulse_rate_hz:
            v.append(f"{eid}: pulse rate {r} Hz outside the allowed range")
        if r > 0 and 2 * t + g > 1e6 / r:
            v.append(f"{eid}: phases + gap {2 * t + g} µs exceed the pulse period (charge balance)")
        if n > limits.max_pulses_per_frame:
            v.append(f"{eid}: {n} pulses > {limits.max_pulses_per_frame}")
        q_uc = a * t * 1e-6
        area_cm2 = float(array.area_um2[i]) * 1e-8
        if q_uc * 1e3 > limits.max_charge_per_phase_nc:
            v.append(f"{eid}: charge {q_uc * 1e3:.4f} nC > {limits.max_charge_per_phase_nc} nC")
        d = q_uc / area_cm2
        if d > limits.max_charge_density_uc_cm2:
            v.append(f"{eid}: charge density {d:.2f} > {limits.max_charge_density_uc_cm2} µC/cm²")
        if math.log10(d) + math.log10(q_uc) > limits.shannon_k:
            v.append(
                f"{eid}: Shannon k {math.log10(d) + math.log10(q_uc):.4f} > {limits.shannon_k}"
            )
    if active > limits.max_active_electrodes:
        v.append(f"{active} electrodes active > {limits.max_active_electrodes}")
    if total > limits.max_total_current_ua:
        v.append(f"total current {total:.3f} > {limits.max_total_current_ua} µA")
    return v


@dataclass
class SafetyCounters:
    """Running counts of safety events by kind (what `.events` of the pipeline exposes)."""

    by_kind: Counter[str] = field(default_factory=Counter)
    frames: int = 0
    zero_frames: int = 0
