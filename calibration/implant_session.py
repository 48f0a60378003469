"""Calibrating an implant of several arrays: one array per session, merged into one file.

Why one array at a time: every procedure (threshold, brightness, map) is a session over the
electrodes of one array, driven through that array's stimulator (one stimulator per array in
an implant), and the map procedure fits one retinotopic placement per array. So
`npe calibrate threshold|brightness|map --implant I --implant-array LABEL` runs the usual
session on array LABEL as the implant places it, and when the session completes its results
are merged into the implant's calibration file (ids qualified "LABEL:ID",
`hardware.implant_calibration`), next to what earlier sessions measured on the other arrays.

The placed array is written beside the calibration (`<calibration>.<label>.array.json`) so the
session, its resume and its simulated patient all see the implant's placement; the array's own
working calibration is `<calibration>.<label>.json` (seeded from the implant file's part, so a
brightness session finds the thresholds an earlier threshold session measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calibration.errors import CalibrationPackageError
from hardware.calibration_file import load_calibration, save_calibration
from hardware.implant import ImplantError, load_implant
from hardware.implant_calibration import join_implant_calibration, split_implant_calibration
from hardware.safety import SafetyLimits

__all__ = ["ImplantArraySession", "merge_into_implant", "prepare_implant_array"]


@dataclass(frozen=True)
class ImplantArraySession:
    """Where one implant array's session works: its placed array file and calibration."""

    array_file: Path
    array_calibration: Path
    settings: dict[str, str]


def _paths(implant_calibration: Path, label: str) -> tuple[Path, Path]:
    stem = implant_calibration.with_suffix("")
    return (
        stem.with_name(f"{stem.name}.{label}.array.json"),
        stem.with_name(f"{stem.name}.{label}.json"),
    )


def prepare_implant_array(
    implant: str, label: str, implant_calibration: Path, patient: str | None
) -> ImplantArraySession:
    """Check the implant, label and any existing implant calibration; write the placed array
    and seed the array's working calibration from the implant's (nothing else is written)."""
    imp = load_implant(implant)
    index = imp.index_of(label)
    placed = imp.arrays[index].array
    parts = {}
    if implant_calibration.exists():
        existing = load_calibration(implant_calibration)
        if patient is not None and existing.patient_id != patient:
            raise CalibrationPackageError(
                f"{implant_calibration} belongs to patient {existing.patient_id!r}, not {patient!r}"
            )
        parts = split_implant_calibration(
            existing, imp, SafetyLimits().max_amplitude_ua, every_array=False
        )
    array_file, array_cal = _paths(implant_calibration, label)
    array_file.parent.mkdir(parents=True, exist_ok=True)
    array_file.write_text(placed.to_json(), encoding="utf-8")
    if label in parts:
        save_calibration(parts[label], array_cal)
    else:
        array_cal.unlink(missing_ok=True)  # nothing measured on this array yet
    return ImplantArraySession(
        array_file,
        array_cal,
        {
            "implant": implant,
            "implant_array": label,
            "implant_calibration": str(implant_calibration),
        },
    )


def merge_into_implant(
    implant: str, label: str, implant_calibration: Path, array_calibration: Path
) -> Path:
    """Put array `label`'s finished calibration into the implant's file (atomically)."""
    try:
        imp = load_implant(implant)
    except ImplantError as exc:
        raise CalibrationPackageError(f"cannot merge into the implant calibration: {exc}") from exc
    new = load_calibration(array_calibration)
    parts = {}
    if implant_calibration.exists():
        existing = load_calibration(implant_calibration)
        parts = split_implant_calibration(
            existing, imp, SafetyLimits().max_amplitude_ua, every_array=False
        )
    parts[label] = new
    return save_calibration(
        join_implant_calibration(parts, imp, new.patient_id), implant_calibration
    )
