"""A patient's calibration for an implant of several arrays: one file, qualified electrode ids.

Choice: one calibration file per patient and implant (schema `npe.calibration` v1, unchanged),
whose `arrays` names the implant and whose electrode ids are qualified by the array's label,
"left-01:e3" (`hardware.implant.qualify`), rather than one file per array listed in the
implant file. Why:
- arrays of one type share their electrode ids (16 × utah64 all have e0..e63), so a bare id
  is ambiguous across an implant; the label makes every id unique, and labels are unique in
  an implant file;
- one patient, one file: written atomically once, signed once in a deployment package, shown
  by one `npe calibrate show`; the implant file stays a description of hardware (it is the
  same for every patient with that implant), not of a patient;
- the file format and its checks (ranges, consistency) are those of an array's calibration.

At load it is split into one `PatientCalibration` per array (bare ids, the array's name), which
`ImplantPipeline` and each array's `StimulationPipeline` use as before. Refused, in one line:
a file not made for this implant, an id without a label, a label or an id the implant does not
have, and an array of the implant the file lists no electrode for (a whole array would
otherwise be disabled without a word, as an empty calibration is refused for one array).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hardware.calibration_file import (
    CALIBRATION_VERSION,
    CalibrationError,
    ElectrodeCalibration,
    PatientCalibration,
    check_calibration_for_array,
    load_calibration,
)
from hardware.implant import QUALIFIER, Implant, qualify

__all__ = [
    "ImplantCalibrationError",
    "join_implant_calibration",
    "load_implant_calibration",
    "split_implant_calibration",
]


class ImplantCalibrationError(CalibrationError):
    """A calibration that does not fit the implant it is about to drive."""


def _shown(items: list[str]) -> str:
    return ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")


def split_implant_calibration(
    calibration: PatientCalibration,
    implant: Implant,
    max_ua: float,
    *,
    every_array: bool = True,
) -> dict[str, PatientCalibration]:
    """label → that array's calibration (bare ids); ImplantCalibrationError on any mismatch.

    every_array=False (a calibration still being made, array by array) leaves out the arrays
    it lists nothing for instead of refusing it; a run always requires every array.
    """
    src = f"calibration for patient {calibration.patient_id!r}"
    if implant.name not in calibration.arrays:
        raise ImplantCalibrationError(
            f"{src} was made for {', '.join(calibration.arrays)}, not implant {implant.name!r}"
        )
    known = {a.label: set(a.array.electrode_ids) for a in implant.arrays}
    parts: dict[str, list[ElectrodeCalibration]] = {label: [] for label in known}
    bare: list[str] = []
    unknown: list[str] = []
    for e in calibration.electrodes:
        label, sep, eid = e.electrode_id.partition(QUALIFIER)
        if not sep:
            bare.append(e.electrode_id)
        elif label not in known or eid not in known[label]:
            unknown.append(e.electrode_id)
        else:
            parts[label].append(e.model_copy(update={"electrode_id": eid}))
    if bare:
        raise ImplantCalibrationError(
            f"{src}: {len(bare)} electrode ids lack their array label "
            f"(expected LABEL{QUALIFIER}ID, e.g. {qualify(implant.labels[0], implant.arrays[0].array.electrode_ids[0])}): "
            f"{_shown(bare)}"
        )
    if unknown:
        raise ImplantCalibrationError(
            f"{src}: {len(unknown)} electrode ids unknown to implant {implant.name!r}: "
            f"{_shown(unknown)}"
        )
    missing = [label for label, es in parts.items() if not es]
    if missing and every_array:
        raise ImplantCalibrationError(
            f"{src} lists no electrode of {len(missing)} array(s) of implant "
            f"{implant.name!r}: {_shown(missing)}"
        )
    out: dict[str, PatientCalibration] = {}
    for a in implant.arrays:
        if not parts[a.label]:
            continue
        cal = PatientCalibration(
            version=CALIBRATION_VERSION,
            patient_id=calibration.patient_id,
            arrays=(a.array.name,),
            procedures=calibration.procedures,
            electrodes=tuple(parts[a.label]),
        )
        try:
            check_calibration_for_array(cal, a.array.name, list(a.array.electrode_ids), max_ua)
        except CalibrationError as exc:
            raise ImplantCalibrationError(f"array {a.label!r}: {exc}") from exc
        out[a.label] = cal
    return out


def load_implant_calibration(
    path: str | Path, implant: Implant, max_ua: float
) -> dict[str, PatientCalibration]:
    """Read, validate and split an implant calibration file (see the module docstring)."""
    cal = load_calibration(path)
    try:
        return split_implant_calibration(cal, implant, max_ua)
    except ImplantCalibrationError as exc:
        raise ImplantCalibrationError(f"{path}: {exc}") from exc


def join_implant_calibration(
    per_array: Mapping[str, PatientCalibration], implant: Implant, patient_id: str
) -> PatientCalibration:
    """One implant calibration from per-array ones (ids qualified): how a clinic that
    calibrated arrays one at a time makes the implant's file."""
    unknown = sorted(set(per_array) - set(implant.labels))
    if unknown:
        raise ImplantCalibrationError(
            f"calibrations given for arrays not in implant {implant.name!r}: {_shown(unknown)}"
        )
    electrodes = tuple(
        e.model_copy(update={"electrode_id": qualify(label, e.electrode_id)})
        for label in implant.labels
        if label in per_array
        for e in per_array[label].electrodes
    )
    procedures = tuple(
        p for label in implant.labels if label in per_array for p in per_array[label].procedures
    )
    return PatientCalibration(
        version=CALIBRATION_VERSION,
        patient_id=patient_id,
        arrays=(implant.name,),
        procedures=procedures,
        electrodes=electrodes,
    )
