"""Implants: several electrode arrays in one patient, mapped from one rate field (issue 17).

An implant file (JSON, schema ``npe.implant`` version 1, shipped ones in
``hardware/implant_data/``) lists arrays — each a shipped array name or an array file — with
a label, the hemisphere it sits in, where it was placed (the visual-field position under its
centre, and a rotation; the array file's own placement when omitted) and the link of the
stimulator that drives it (one link per array: a stimulator drives ≤ 16 channels). It also
holds the limits for the whole implant: simultaneous electrodes and total current over all
arrays together (per-array limits stay `SafetyLimits`). Validated on load like the arrays;
refused with the reason.

`ImplantPipeline` maps one rate field onto every array (each through its own
`StimulationPipeline`, i.e. the precomputed kernel) and then applies the implant-wide limits:
the strongest electrodes across the implant are kept up to the simultaneous cap, and the total
current is scaled down proportionally to its cap. It returns one frame per array. A single
array is an implant of one (`implant_of_one`); `StimulationPipeline` is unchanged.

Public API: `ImplantError`, `ImplantFile`, `ImplantLimits`, `Implant`, `ImplantArray`,
`load_implant`, `parse_implant`, `list_implants`, `implant_of_one`, `ImplantPipeline`,
`check_implant`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hardware.arrays import ArrayError, ElectrodeArray, Placement, load_array
from hardware.calibration_file import PatientCalibration
from hardware.kernel import GeometryKernelCache, KernelArray, MappingKernel
from hardware.mapping import MappingConfig
from hardware.pipeline import RING_FRAMES, StimulationPipeline, _slot
from hardware.retinotopy import DEFAULT_MAP, WedgeDipoleMap
from hardware.safety import _MARGIN, _MIN_DELIVERABLE_UA, SafetyEvent, SafetyLimits
from hardware.types import RateField, StimulationFrame
from hardware.untrusted_json import error_location

if TYPE_CHECKING:
    from hardware.audit import AuditLog

__all__ = [
    "IMPLANT_DATA_DIR",
    "Implant",
    "ImplantArray",
    "ImplantError",
    "ImplantFile",
    "ImplantLimits",
    "ImplantPipeline",
    "check_implant",
    "implant_of_one",
    "list_implants",
    "load_implant",
    "parse_implant",
]

IMPLANT_VERSION = 1
IMPLANT_DATA_DIR = Path(__file__).parent / "implant_data"
#: Most arrays one implant file may list (a size limit on an untrusted file).
MAX_ARRAYS = 64


class ImplantError(ArrayError):
    """An implant file that cannot be used: missing, unreadable or inconsistent."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImplantLimits(_Strict):
    """Limits over all arrays of the implant together (each array keeps its own limits).

    Defaults: 4 stimulators' worth of channels at once and 4 × 1,600 µA; a clinic sets them
    per patient (simultaneous stimulation across arrays lowers thresholds, REFERENCES.md).
    """

    max_active_electrodes: int = Field(default=64, ge=0, le=4096)
    max_total_current_ua: float = Field(default=6400.0, ge=0.0, le=1e6, allow_inf_nan=False)


class ImplantArraySpec(_Strict):
    """One array of an implant file."""

    label: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    array: str = Field(min_length=1, max_length=256)
    hemisphere: Literal["left", "right"]
    placement: Placement | None = None
    link: str | None = Field(default=None, max_length=256)

    @field_validator("link")
    @classmethod
    def _link(cls, v: str | None) -> str | None:
        if v is None or v.startswith("serial://"):
            return v
        parts = urlsplit(v)
        if parts.scheme == "udp" and parts.hostname and parts.port is not None:
            return v
        if parts.scheme == "file" and parts.path:
            return v
        raise ValueError(f"{v!r}: expected udp://HOST:PORT, serial://PORT or file:///PATH")


class ImplantFile(_Strict):
    """The on-disk schema of an implant file."""

    schema_name: Literal["npe.implant"] = "npe.implant"
    version: int
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=4000)
    arrays: tuple[ImplantArraySpec, ...] = Field(min_length=1, max_length=MAX_ARRAYS)
    limits: ImplantLimits = ImplantLimits()

    @model_validator(mode="after")
    def _check(self) -> ImplantFile:
        if self.version != IMPLANT_VERSION:
            raise ValueError(f"unknown implant version {self.version}; npe reads {IMPLANT_VERSION}")
        labels = [a.label for a in self.arrays]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"array labels listed twice: {', '.join(dupes[:5])}")
        links = [a.link for a in self.arrays if a.link is not None]
        twice = sorted({x for x in links if links.count(x) > 1})
        if twice:
            raise ValueError(f"one link given to several arrays: {twice[0]}")
        return self


@dataclass(frozen=True)
class ImplantArray:
    """One placed array: `array` carries the implant's placement for it."""

    label: str
    array: ElectrodeArray
    hemisphere: str
    link: str | None = None


@dataclass(frozen=True)
class Implant:
    """The arrays of one patient, in file order, and the implant-wide limits."""

    name: str
    arrays: tuple[ImplantArray, ...]
    limits: ImplantLimits
    description: str = ""

    @property
    def n_electrodes(self) -> int:
        return sum(a.array.n for a in self.arrays)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(a.label for a in self.arrays)

    @property
    def electrode_ids(self) -> tuple[str, ...]:
        """Every electrode of the implant, qualified by its array's label ("left-01:e3"),
        in array order: what the live loop, the preview and implant calibrations address."""
        return tuple(qualify(a.label, e) for a in self.arrays for e in a.array.electrode_ids)

    def index_of(self, label: str) -> int:
        """Position of array `label` in the implant (ImplantError if it has none)."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise ImplantError(f"implant {self.name!r} has no array {label!r}") from None

    def to_record(self) -> ImplantRecord:
        """Self-contained description (arrays embedded as array documents, placement applied):
        what an audit log or a deployment package stores, so it can be read back without the
        array files it was loaded from."""
        return ImplantRecord(
            name=self.name,
            description=self.description,
            limits=self.limits,
            arrays=tuple(
                ImplantRecordArray(
                    label=a.label,
                    hemisphere="left" if a.hemisphere == "left" else "right",
                    link=a.link,
                    array=json.loads(a.array.to_json()),
                )
                for a in self.arrays
            ),
        )


#: Separator of a qualified electrode id: "<array label>:<electrode id>". Labels are
#: restricted to [A-Za-z0-9_.-], so the first ":" always ends the label.
QUALIFIER = ":"


def qualify(label: str, electrode_id: str) -> str:
    """The implant-wide id of an electrode of array `label`."""
    return f"{label}{QUALIFIER}{electrode_id}"


class ImplantRecordArray(_Strict):
    """One array of an `ImplantRecord`: the array document itself, already placed."""

    label: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    hemisphere: Literal["left", "right"]
    link: str | None = Field(default=None, max_length=256)
    array: dict[str, object]


class ImplantRecord(_Strict):
    """A self-contained implant (see `Implant.to_record`); `implant_from_record` reads it."""

    schema_name: Literal["npe.implant-record"] = "npe.implant-record"
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=4000)
    limits: ImplantLimits
    arrays: tuple[ImplantRecordArray, ...] = Field(min_length=1, max_length=MAX_ARRAYS)


def implant_from_record(raw: object, source: str = "<implant record>") -> Implant:
    """An Implant from an `ImplantRecord` document (audit session, deployment package)."""
    from hardware.arrays import parse_array

    try:
        rec = ImplantRecord.model_validate(raw)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise ImplantError(f"{source}: refused: {reasons}") from exc
    labels = [a.label for a in rec.arrays]
    if len(set(labels)) != len(labels):
        raise ImplantError(f"{source}: array labels listed twice")
    arrays = tuple(
        ImplantArray(
            a.label, parse_array(a.array, source=f"{source}: array {a.label}"), a.hemisphere, a.link
        )
        for a in rec.arrays
    )
    return Implant(rec.name, arrays, rec.limits, rec.description)


def _hemisphere_of(array: ElectrodeArray) -> str:
    """Left V1 sees the right visual field (x ≥ 0), as `ElectrodeArray` assumes."""
    return "right" if array.placement_deg[0] < 0 else "left"


def _placed(spec: ImplantArraySpec, base_dir: Path | None, source: str) -> ImplantArray:
    ref = spec.array
    path = Path(ref)
    if base_dir is not None and path.suffix and not path.is_absolute():
        path = base_dir / path
    try:
        arr = load_array(path if path.suffix else ref)
    except ArrayError as exc:
        raise ImplantError(f"{source}: array {spec.label!r}: {exc}") from exc
    if spec.placement is not None:
        arr = dataclasses.replace(
            arr,
            placement_deg=spec.placement.center_deg,
            rotation_deg=spec.placement.rotation_deg,
        )
    if _hemisphere_of(arr) != spec.hemisphere:
        raise ImplantError(
            f"{source}: array {spec.label!r}: placed at x = {arr.placement_deg[0]}° "
            f"(the {'left' if arr.placement_deg[0] < 0 else 'right'} visual field), which the "
            f"{_hemisphere_of(arr)} hemisphere represents, not the {spec.hemisphere}"
        )
    return ImplantArray(spec.label, arr, spec.hemisphere, spec.link)


def parse_implant(raw: object, source: str = "<implant>", base_dir: Path | None = None) -> Implant:
    """Validate an already-parsed implant document; ImplantError with the reasons.

    Array files named by a relative path are looked up beside the implant file (base_dir).
    """
    try:
        f = ImplantFile.model_validate(raw)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{error_location(err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ImplantError(f"{source}: refused: {reasons}") from exc
    arrays = tuple(_placed(s, base_dir, source) for s in f.arrays)
    return Implant(f.name, arrays, f.limits, f.description)


def list_implants() -> list[str]:
    """Names of the implants shipped in hardware/implant_data/."""
    return sorted(p.stem for p in IMPLANT_DATA_DIR.glob("*.json"))


#: Largest implant file read (a size limit on an untrusted file).
MAX_IMPLANT_BYTES = 1_000_000


def load_implant(name_or_path: str | Path) -> Implant:
    """Load a shipped implant by name ("utah16x") or any implant file by path."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = IMPLANT_DATA_DIR / f"{name_or_path}.json"
        if not p.exists():
            raise ImplantError(
                f"unknown implant {name_or_path!r}; shipped implants: {', '.join(list_implants())}"
            )
    from hardware.untrusted_json import UntrustedFileError, load_untrusted_json

    try:
        raw = load_untrusted_json(p, "implant file", max_bytes=MAX_IMPLANT_BYTES)
    except UntrustedFileError as exc:
        raise ImplantError(str(exc)) from exc
    if isinstance(raw, dict) and raw.get("schema_name") == "npe.implant-record":
        return implant_from_record(raw, source=str(p))  # self-contained (packages, logs)
    return parse_implant(raw, source=str(p), base_dir=p.parent)


def implant_of_one(array: ElectrodeArray, link: str | None = None) -> Implant:
    """A single array as an implant (implant limits = the array's, which bind first)."""
    return Implant(
        array.name,
        (ImplantArray(array.name, array, _hemisphere_of(array), link),),
        ImplantLimits(max_active_electrodes=4096, max_total_current_ua=1e6),
    )


class ImplantPipeline(GeometryKernelCache):
    """One rate field → one safe frame per array, within the per-array and implant limits.

    Attributes:
        pipelines: label → the array's `StimulationPipeline` (its own events and counters).
        events: Counter of implant-level event kinds ("implant_active_cap",
            "implant_total_current_cap").
        last_events: the implant-level events of the most recent call.
    """

    def __init__(
        self,
        implant: Implant,
        limits: SafetyLimits,
        mapping: MappingConfig | None = None,
        calibrations: Mapping[str, PatientCalibration] | None = None,
        *,
        retinotopy: WedgeDipoleMap = DEFAULT_MAP,
        audit: AuditLog | None = None,
    ) -> None:
        self.implant = implant
        self.audit = audit
        cals = dict(calibrations or {})
        unknown = sorted(set(cals) - set(implant.labels))
        if unknown:
            raise ImplantError(f"calibration given for arrays not in the implant: {unknown}")
        self.pipelines = {
            a.label: StimulationPipeline(
                a.array,
                cals.get(a.label),
                limits,
                mapping,
                retinotopy=retinotopy,
                audit=audit.for_array(a.label) if audit is not None else None,
            )
            for a in implant.arrays
        }
        self._order = list(self.pipelines.values())
        self.mapping = self._order[0].mapping
        self.limits = limits
        self.events: Counter[str] = Counter()
        self.last_events: list[SafetyEvent] = []
        # One kernel for every array (built per rate-field geometry), writing into a ring of
        # [arrays, width] slots; each slot's frames are made once, as views of its rows.
        n_arrays = len(self._order)
        width = max(p.array.n for p in self._order)
        self._slots = [_slot(n_arrays, width) for _ in range(RING_FRAMES)]
        self._ring = [
            tuple(
                StimulationFrame(
                    0,
                    0,
                    p.array.electrode_ids,
                    *(f[a, : p.array.n] for f in slot),  # type: ignore[arg-type]
                )
                for a, p in enumerate(self._order)
            )
            for slot in self._slots
        ]
        # Each ring frame's attribute dict, so that a served bin stamps 2 × arrays values
        # without a method call per frame (StimulationFrame._restamp's job, done in bulk).
        self._ring_dicts = [[f.__dict__ for f in frames] for frames in self._ring]
        self._ring_at = 0
        self._init_kernel_cache()
        # Implant-wide check (`MappingKernel.live_count_and_total_above`, allocation-free): the
        # caps may bind above these. The kernel's float64 currents may round up by one float32
        # step (2**-24 relative) on the way into the frames, so their sum is compared with a
        # bound lowered by more than that below the cap `_limit_slot` applies.
        self._amp_flat = [slot[0].reshape(-1) for slot in self._slots]
        self._max_active_f32 = np.array(implant.limits.max_active_electrodes, dtype=np.float32)
        self._total_near_f64 = np.array(
            implant.limits.max_total_current_ua * _MARGIN * (1.0 - 1e-9) / (1.0 + 1e-6)
        )
        self._scratch = _slot(n_arrays, width)
        #: Bins the implant kernel served / bins that went array by array.
        self.kernel_bins = 0
        self.general_bins = 0

    def _build_kernel(self, pos: NDArray[np.float64], pol: NDArray[np.int8]) -> MappingKernel:
        parts = [
            KernelArray(p.sampler.weights(pos, pol), p.model, p.ceiling_ua, p.enforcer)
            for p in self._order
        ]
        kernel = MappingKernel(parts, self.mapping, self.limits)
        kernel.bind_ring(self._slots)
        return kernel

    def warm_up(self, rate_field: RateField) -> None:
        """Warm the implant kernel and every array's general path (no frame, no event)."""
        for p in self._order:
            p.warm_up(rate_field)
        self.kernel_for(rate_field).run(np.zeros(rate_field.n))

    def process(self, rate_field: RateField) -> tuple[StimulationFrame, ...]:
        """One bin: one frame per array, in the implant's order. Never raises on bad values.

        Bins without a safety event go through the implant kernel into a ring slot (the
        frames stay unchanged for RING_FRAMES - 1 further bins); the others array by array.
        """
        self.last_events = []
        at = self._ring_at
        try:
            kernel = self.kernel_for(rate_field)
            kernel.use_slot(at)
            ok = rate_field.rates_hz.shape == (kernel.n_entries,) and kernel.run(
                rate_field.rates_hz
            )
        except Exception:  # the arrays' own pipelines report it on the general path
            ok = False
        if not ok:
            self.general_bins += 1
            frames = tuple(p.process(rate_field) for p in self._order)
            self._limit_implant(frames)
            return frames
        frames = self._ring[at]
        self._ring_at = (at + 1) % RING_FRAMES
        ts = rate_field.timestamp_ns or time.monotonic_ns()
        for d, p in zip(self._ring_dicts[at], self._order, strict=True):
            p.sequence = seq = p.sequence + 1
            d["sequence"] = seq
            d["timestamp_ns"] = ts
            if p.last_events:
                p.last_events = []
        self.kernel_bins += 1
        if kernel.live_count_and_total_above(self._max_active_f32, self._total_near_f64):
            self._limit_served(at, kernel)
        return frames

    def _limit_implant(self, frames: tuple[StimulationFrame, ...], at: int | None = None) -> None:
        """Implant-wide caps, in place on the frames (they are this call's own frames).

        Works on one [arrays, width] slot: the ring slot `at` the frames are views of, or a
        scratch slot the frames are copied into and back from (general-path bins).
        """
        slot: tuple[np.ndarray, ...]
        if at is None:
            slot = self._scratch
            for a, f in enumerate(frames):
                n = f.n_electrodes
                src = _fields(f)
                for j in range(5):
                    slot[j][a, :n] = src[j]
                    slot[j][a, n:] = 0
        else:
            slot = self._slots[at]
        if self._limit_slot(slot) and at is None:
            for a, f in enumerate(frames):
                n = f.n_electrodes
                dst = _fields(f)
                for j in range(5):
                    dst[j][:] = slot[j][a, :n]

    def _limit_slot(self, slot: tuple[np.ndarray, ...]) -> bool:
        """The implant caps on one slot; True if anything changed."""
        lim = self.implant.limits
        amp, pulses = slot[0].reshape(-1), slot[4].reshape(-1)
        live = (amp > 0) & (pulses > 0)
        active = int(np.count_nonzero(live))
        a64 = np.where(live, amp, 0).astype(np.float64)
        changed = False
        if active > lim.max_active_electrodes:
            # Only the live electrodes compete (all others are 0 and rank last anyway); their
            # flat indices ascend, so a stable sort of their amplitudes breaks ties as a stable
            # sort of all of them would.
            at_live = np.flatnonzero(live)
            order = np.argsort(-a64[at_live], kind="stable")
            drop = np.zeros(a64.shape[0], dtype=bool)
            drop[at_live[order[lim.max_active_electrodes :]]] = True
            _zero_fields(slot, drop)
            a64[drop] = 0.0
            changed = True
            self._event(
                "implant_active_cap",
                f"{active} electrodes active over the implant, the "
                f"{lim.max_active_electrodes} strongest kept",
                active,
                lim.max_active_electrodes,
            )
        return self._cap_total(slot, a64) or changed

    def _cap_total(self, slot: tuple[np.ndarray, ...], a64: NDArray[np.float64]) -> bool:
        """The implant's total-current cap on a slot whose live amplitudes (float64, 0
        elsewhere) are a64; True if it scaled."""
        lim = self.implant.limits
        amp = slot[0].reshape(-1)
        total = float(a64.sum())
        if total <= lim.max_total_current_ua * _MARGIN:
            return False
        scale = lim.max_total_current_ua * _MARGIN**2 / total
        np.copyto(amp, amp.astype(np.float64) * scale, casting="same_kind")
        _zero_fields(slot, amp < _MIN_DELIVERABLE_UA)
        self._event(
            "implant_total_current_cap",
            "total current over the implant scaled down proportionally",
            total,
            lim.max_total_current_ua,
        )
        return True

    def _limit_served(self, at: int, kernel: MappingKernel) -> None:
        """`_limit_slot` on the ring slot the kernel has just filled, with the same result in
        fewer operations: there an electrode is live exactly where its amplitude is > 0, and
        its other fields follow from the amplitude (`MappingKernel.refill_from_amplitudes`)."""
        lim = self.implant.limits
        amp = self._amp_flat[at]
        at_live = np.flatnonzero(amp)
        active = int(at_live.size)
        if active > lim.max_active_electrodes:
            # Stable on the live ones in index order = stable on all (the rest are 0, last).
            order = np.argsort(-amp[at_live], kind="stable")
            amp[at_live[order[lim.max_active_electrodes :]]] = 0.0
            kernel.refill_from_amplitudes()
            self._event(
                "implant_active_cap",
                f"{active} electrodes active over the implant, the "
                f"{lim.max_active_electrodes} strongest kept",
                active,
                lim.max_active_electrodes,
            )
        self._cap_total(self._slots[at], amp.astype(np.float64))

    def _event(self, kind: str, detail: str, value: float, limit: float) -> None:
        ev = SafetyEvent(kind, detail, None, float(value), float(limit))
        self.events[kind] += 1
        self.last_events.append(ev)
        if self.audit is not None:
            try:
                self.audit.event(kind, ev.describe())
            except OSError:
                self.events["audit_write_failed"] += 1

    def zero(self, reason: str) -> tuple[StimulationFrame, ...]:
        """All-zero frames on every array, the reason logged on each."""
        return tuple(p.zero(reason) for p in self._order)


def _fields(f: StimulationFrame) -> tuple[np.ndarray, ...]:
    return (f.amplitude_ua, f.phase_width_us, f.interphase_gap_us, f.pulse_rate_hz, f.n_pulses)


def _zero_fields(slot: tuple[np.ndarray, ...], mask_flat: np.ndarray) -> None:
    """Turn off the electrodes of a slot where mask_flat [arrays·width] is True."""
    mask = mask_flat.reshape(slot[0].shape)
    for x in slot:
        np.copyto(x, 0, where=mask)


def check_implant(
    frames: tuple[StimulationFrame, ...], implant: Implant, limits: SafetyLimits
) -> list[str]:
    """Independent re-check of one bin's frames: every array's limits (`check_frame`) and the
    implant's; [] when safe."""
    from hardware.safety import check_frame

    if len(frames) != len(implant.arrays):
        return [f"{len(frames)} frames for {len(implant.arrays)} arrays"]
    v: list[str] = []
    active = 0
    total = 0.0
    for f, a in zip(frames, implant.arrays, strict=True):
        v += [f"{a.label}: {x}" for x in check_frame(f, limits, a.array)]
        for amp, n in zip(f.amplitude_ua.tolist(), f.n_pulses.tolist(), strict=True):
            if amp > 0 and n > 0:
                active += 1
                total += amp
    if active > implant.limits.max_active_electrodes:
        v.append(
            f"{active} electrodes active over the implant > {implant.limits.max_active_electrodes}"
        )
    if total > implant.limits.max_total_current_ua:
        v.append(f"implant total current {total:.3f} > {implant.limits.max_total_current_ua} µA")
    return v
