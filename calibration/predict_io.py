"""Threshold prediction against a calibration file (the library call behind
`npe calibrate predict`).

Measured thresholds are those of enabled electrodes with threshold trials; every electrode
without threshold trials gets a predicted threshold (and its interval) written into the
calibration file, with a `prediction` procedure entry naming the model and the electrodes.
Electrodes that were tested and not found stay as they are: we know their threshold lies
above what could be delivered. Depth and impedance come from a features JSON
(`{id: {"depth_mm": ..., "impedance_kohm": ...}}`) or from a simulated patient, since the
calibration schema has no field for them yet.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from calibration.prediction import ElectrodeFeatures, ThresholdPrediction, predict_thresholds
from hardware.arrays import ElectrodeArray, load_array
from hardware.calibration_file import (
    ElectrodeCalibration,
    PatientCalibration,
    Procedure,
    load_calibration,
    save_calibration,
)
from hardware.untrusted_json import load_untrusted_json


def load_features(
    array: ElectrodeArray, features: Path | None, simulated_patient: int | None
) -> ElectrodeFeatures:
    """Depth and impedance per electrode from a JSON file or a simulated patient."""
    n = array.n
    depth = np.full(n, np.nan)
    imp = np.full(n, np.nan)
    if simulated_patient is not None:
        from calibration.patient import simulated_patient_for_array

        t = simulated_patient_for_array(array, simulated_patient).truth
        depth, imp = t.depth_mm.copy(), t.impedance_kohm.copy()
    elif features is not None:
        raw = load_untrusted_json(features, "features file")
        if not isinstance(raw, dict):
            raise ValueError(f"{features}: expected an object {{electrode id: {{...}}}}")
        unknown = sorted(set(raw) - set(array.electrode_ids))
        if unknown:
            raise ValueError(f"{features}: electrodes not on {array.name}: {unknown[:5]}")
        for eid, v in raw.items():
            i = array.electrode_ids.index(eid)
            depth[i] = float(v.get("depth_mm", np.nan))
            imp[i] = float(v.get("impedance_kohm", np.nan))
            if np.isfinite(imp[i]) and imp[i] <= 0:
                raise ValueError(f"{features}: {eid}: impedance must be > 0")
    return ElectrodeFeatures(array.electrode_ids, array.positions_mm, depth, imp)


def measured_thresholds(cal: PatientCalibration) -> dict[str, float]:
    return {
        e.electrode_id: e.threshold_ua
        for e in cal.electrodes
        if e.enabled and any(t.procedure == "threshold" for t in e.trials)
    }


def apply_prediction(
    cal: PatientCalibration, array: ElectrodeArray, pred: ThresholdPrediction
) -> PatientCalibration:
    """Write predicted thresholds for electrodes without threshold trials."""
    from calibration.update import _blank

    entries = dict(cal.by_id())
    tested = {
        e.electrode_id for e in cal.electrodes if any(t.procedure == "threshold" for t in e.trials)
    }
    written: list[str] = []
    for eid, p, (lo, hi) in zip(
        pred.predicted_ids, pred.predicted_ua, pred.interval_ua, strict=True
    ):
        if eid in tested:
            continue
        e = entries.get(eid) or _blank(eid, array, 100.0)
        thr = float(np.clip(p, 0.5, e.max_comfortable_ua))
        entries[eid] = ElectrodeCalibration.model_validate(
            {
                **e.model_dump(),
                "enabled": True,
                "threshold_ua": thr,
                "threshold_ci_ua": (float(min(lo, thr)), float(max(hi, thr))),
                "threshold_source": "predicted",
            }
        )
        written.append(eid)
    order = {e: i for i, e in enumerate(array.electrode_ids)}
    return PatientCalibration(
        version=cal.version,
        patient_id=cal.patient_id,
        arrays=cal.arrays,
        procedures=(
            *cal.procedures,
            Procedure(
                name="prediction",
                operator="npe calibrate predict",
                date=datetime.now(UTC),
                notes=f"model {pred.chosen}; predicted: {', '.join(written)}",
            ),
        ),
        electrodes=tuple(sorted(entries.values(), key=lambda x: order.get(x.electrode_id, 10**6))),
    )


def predict_into_calibration(
    calibration: Path,
    array_name: str,
    features: Path | None,
    simulated_patient: int | None,
    repeats: int,
    folds: int,
    save: bool,
) -> tuple[ThresholdPrediction, dict[str, Any]]:
    cal = load_calibration(calibration)
    array = load_array(array_name)
    feats = load_features(array, features, simulated_patient)
    measured = {k: v for k, v in measured_thresholds(cal).items() if k in array.electrode_ids}
    pred = predict_thresholds(feats, measured, n_repeats=repeats, n_splits=folds)
    if save:
        save_calibration(apply_prediction(cal, array, pred), calibration)
    data: dict[str, Any] = {
        "chosen": pred.chosen,
        "n_measured": len(measured),
        "scores": [s.__dict__ for s in pred.scores],
        "predicted": {
            e: {"threshold_ua": float(p), "interval_ua": [float(v) for v in iv]}
            for e, p, iv in zip(
                pred.predicted_ids, pred.predicted_ua, pred.interval_ua, strict=True
            )
        },
        "calibration_file": str(calibration) if save else None,
    }
    return pred, data
