"""The per-patient calibration file: schema, validation and loading.

The schema lives in `hardware` because `hardware` is its reader of record (the mapper turns
rates into currents through it) and `hardware` imports nothing upstream; `calibration`
imports this module to write files. Every file is validated on load, and anything
out of range or inconsistent is refused with the reason: a wrong threshold is a
wrong current in a patient's cortex.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from hardware.errors import HardwareError
from hardware.untrusted_json import UntrustedFileError, error_location, load_untrusted_json

CALIBRATION_SCHEMA = "npe.calibration"
CALIBRATION_VERSION = 1

#: Half-width of the visual field a phosphene position may claim (degrees).
VISUAL_FIELD_LIMIT_DEG = 90.0
#: No calibrated current may exceed this, whatever the stimulator could do (µA); the
#: Utah-array work in human V1 stayed at or below ~100 µA (REFERENCES.md).
MAX_CALIBRATED_CURRENT_UA = 200.0


class CalibrationError(HardwareError, ValueError):
    """A calibration file that cannot be trusted: unreadable, out of range or inconsistent."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Trial(_Strict):
    """One psychophysical trial a value was fitted from."""

    procedure: Literal["threshold", "brightness", "map"]
    amplitude_ua: float = Field(ge=0.0, le=MAX_CALIBRATED_CURRENT_UA)
    response: float | None = None
    """Detection (1/0), brightness rating, or None for map trials (see reported_deg)."""
    reported_deg: tuple[float, float] | None = None
    time: datetime | None = None


class BrightnessCurve(_Strict):
    """Saturating brightness as a function of current above threshold.

    brightness(I) = max_brightness * (1 - exp(-(I - threshold) / scale_ua)) for I ≥ threshold,
    else 0. Human Utah-array data rise from ~0.04 at 10 µA to ~1.0 near 90 µA (REFERENCES.md).
    """

    scale_ua: float = Field(gt=0.0, le=MAX_CALIBRATED_CURRENT_UA)
    scale_ci_ua: tuple[float, float] | None = None
    """95 % interval of `scale_ua` from the magnitude-estimation fit."""
    max_brightness: float = Field(default=1.0, gt=0.0, le=10.0)


class ElectrodeCalibration(_Strict):
    """Everything the mapper needs to know about one electrode of one patient."""

    electrode_id: str
    enabled: StrictBool = True
    threshold_ua: float = Field(gt=0.0, le=MAX_CALIBRATED_CURRENT_UA)
    threshold_ci_ua: tuple[float, float] | None = None
    threshold_source: Literal["measured", "predicted", "default"] = "measured"
    """Measured by a threshold session, predicted from other electrodes, or a placeholder."""
    slope: float | None = Field(default=None, gt=0.0)
    """1/sd of the cumulative-normal psychometric function, µA⁻¹."""
    slope_ci: tuple[float, float] | None = None
    max_comfortable_ua: float = Field(gt=0.0, le=MAX_CALIBRATED_CURRENT_UA)
    brightness: BrightnessCurve = BrightnessCurve(scale_ua=30.0)
    phosphene_deg: tuple[float, float]
    phosphene_ci_deg: float | None = Field(default=None, ge=0.0)
    phosphene_size_deg: float = Field(default=1.0, gt=0.0, le=45.0)
    phosphene_outlier: StrictBool = False
    """The patient's location reports disagree with the fitted retinotopic model."""
    trials: tuple[Trial, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> ElectrodeCalibration:
        if self.threshold_ua > self.max_comfortable_ua:
            raise ValueError(
                f"electrode {self.electrode_id}: threshold {self.threshold_ua} µA is above "
                f"the maximum comfortable current {self.max_comfortable_ua} µA"
            )
        x, y = self.phosphene_deg
        if abs(x) > VISUAL_FIELD_LIMIT_DEG or abs(y) > VISUAL_FIELD_LIMIT_DEG:
            raise ValueError(
                f"electrode {self.electrode_id}: phosphene position ({x}, {y})° lies outside "
                f"the visual field (±{VISUAL_FIELD_LIMIT_DEG}°)"
            )
        for name in ("threshold_ci_ua", "slope_ci"):
            ci = getattr(self, name)
            if ci is not None and ci[0] > ci[1]:
                raise ValueError(f"electrode {self.electrode_id}: {name} is reversed")
        return self


class Procedure(_Strict):
    """Who ran which procedure when (an audit trail for the clinic)."""

    name: Literal["threshold", "brightness", "map", "prediction", "manual"]
    operator: str
    date: datetime
    notes: str = ""


class PatientCalibration(_Strict):
    """One patient's calibration for one or more arrays."""

    schema_name: Literal["npe.calibration"] = "npe.calibration"
    version: int
    patient_id: str = Field(min_length=1)
    arrays: tuple[str, ...] = Field(min_length=1)
    procedures: tuple[Procedure, ...] = ()
    electrodes: tuple[ElectrodeCalibration, ...]
    """At least one: a calibration of no electrode would disable every electrode silently."""

    @model_validator(mode="after")
    def _check(self) -> PatientCalibration:
        if self.version != CALIBRATION_VERSION:
            raise ValueError(
                f"unknown calibration version {self.version}; this npe reads version "
                f"{CALIBRATION_VERSION}"
            )
        if not self.electrodes:
            raise ValueError("the calibration lists no electrodes")
        ids = [e.electrode_id for e in self.electrodes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"electrodes listed twice: {', '.join(dupes)}")
        return self

    def by_id(self) -> dict[str, ElectrodeCalibration]:
        return {e.electrode_id: e for e in self.electrodes}


def load_calibration(path: str | Path) -> PatientCalibration:
    """Read and validate a calibration file (JSON); raise CalibrationError with the reason."""
    path = Path(path)
    try:
        raw = load_untrusted_json(path, "calibration file")
    except UntrustedFileError as exc:
        raise CalibrationError(str(exc)) from exc
    return parse_calibration(raw, source=str(path))


def parse_calibration(raw: object, source: str = "<calibration>") -> PatientCalibration:
    """Validate an already-parsed calibration document, strictly: each value must already
    have its field's JSON type (a number, not the string "20"; true/false, not "no"), since
    pydantic's lax mode would turn a wrong file into a value nobody wrote. Validated in
    pydantic's strict JSON mode, where arrays stand for tuples and ISO strings for dates."""
    if isinstance(raw, dict) and raw.get("version") not in (None, CALIBRATION_VERSION):
        raise CalibrationError(
            f"{source}: unknown calibration version {raw.get('version')!r}; "
            f"this npe reads version {CALIBRATION_VERSION}"
        )
    try:
        text = json.dumps(raw, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{source}: refused: not a JSON document ({exc})") from exc
    try:
        return PatientCalibration.model_validate_json(text, strict=True)
    except ValidationError as exc:
        reasons = "; ".join(f"{error_location(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise CalibrationError(f"{source}: refused: {reasons}") from exc


def save_calibration(calibration: PatientCalibration, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves half a calibration."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(calibration.model_dump_json(indent=2))
    tmp.replace(path)
    return path


def check_calibration_for_array(
    calibration: PatientCalibration, array_name: str, electrode_ids: list[str], max_ua: float
) -> None:
    """Refuse a calibration that does not fit the array (and limits) it is about to drive.

    Without this a calibration made for another array, or with ids the array lacks, loads
    fine and then disables every electrode: zero stimulation on every bin, with no word.
    Currents above the safety maximum `max_ua` are refused here rather than capped at run
    time, since such a file records a fit nobody could have measured safely.
    """
    src = f"calibration for patient {calibration.patient_id!r}"
    if array_name not in calibration.arrays:
        raise CalibrationError(
            f"{src} was made for {', '.join(calibration.arrays)}, not array {array_name!r}"
        )
    if not calibration.electrodes:
        raise CalibrationError(f"{src} lists no electrodes")
    known = set(electrode_ids)
    unknown = [e.electrode_id for e in calibration.electrodes if e.electrode_id not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise CalibrationError(
            f"{src}: {len(unknown)} electrode ids unknown to array {array_name!r}: {shown}"
        )
    for e in calibration.electrodes:
        for name in ("threshold_ua", "max_comfortable_ua"):
            value = getattr(e, name)
            if value > max_ua:
                raise CalibrationError(
                    f"{src}: electrode {e.electrode_id} {name} {value} µA is above the "
                    f"safety maximum {max_ua} µA"
                )
