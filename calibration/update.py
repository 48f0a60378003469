"""Turning a session's results into a validated `PatientCalibration` (and a results JSON).

Only values the session measured change; everything else in an existing file is kept.
Electrodes that a session adds to a new file but whose threshold has not been measured get
`enabled = False` (the mapper must not drive an electrode with a guessed threshold). The
schema's validator runs on every entry, so an out-of-range value is refused here, before
anything is written. The results JSON beside the session file carries the full fits
(nuisance rates, stop reasons, the fitted map placement) for the clinic's records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from calibration.procedures import SessionResult
from calibration.session import SessionLog
from hardware.arrays import ElectrodeArray
from hardware.calibration_file import (
    CALIBRATION_VERSION,
    MAX_CALIBRATED_CURRENT_UA,
    BrightnessCurve,
    ElectrodeCalibration,
    PatientCalibration,
    Procedure,
    Trial,
)

MIN_THRESHOLD_UA = 0.5


def _blank(eid: str, array: ElectrodeArray, max_ua: float) -> ElectrodeCalibration:
    """An electrode nothing is known about yet: disabled, nominal map position."""
    nominal = array.phosphene_positions_deg()[array.electrode_ids.index(eid)]
    return ElectrodeCalibration(
        electrode_id=eid,
        enabled=False,
        threshold_ua=max_ua,
        threshold_source="default",
        max_comfortable_ua=max_ua,
        phosphene_deg=(float(nominal[0]), float(nominal[1])),
    )


def _trials(log: SessionLog, eid: str) -> tuple[Trial, ...]:
    proc = log.header.procedure
    return tuple(
        Trial(
            procedure=proc,
            amplitude_ua=t.delivered_ua,
            response=t.response,
            reported_deg=t.reported_deg,
            time=t.time,
        )
        for t in log.trials_for(eid)
    )


def apply_session(
    existing: PatientCalibration | None,
    log: SessionLog,
    result: SessionResult,
    array: ElectrodeArray,
    notes: str = "",
) -> PatientCalibration:
    """A new calibration: `existing` (or a fresh one) updated with this session's values."""
    h = log.header
    max_ua = min(h.max_current_ua, MAX_CALIBRATED_CURRENT_UA)
    entries: dict[str, ElectrodeCalibration] = dict(existing.by_id()) if existing else {}
    touched = set(h.electrodes)
    if result.map_fit is not None:
        touched |= set(array.electrode_ids)
    for eid in sorted(touched, key=array.electrode_ids.index):
        if eid not in entries:
            entries[eid] = _blank(eid, array, max_ua)
        e = entries[eid]
        upd: dict[str, Any] = {}
        if eid in result.thresholds:
            r = result.thresholds[eid]
            f = r.fit
            top = min(e.max_comfortable_ua, r.max_current_ua)
            upd.update(
                enabled=f.found,
                threshold_ua=float(
                    np.clip(f.threshold_ua if f.found else top, MIN_THRESHOLD_UA, top)
                ),
                threshold_ci_ua=(max(f.threshold_ci_ua[0], 0.0), f.threshold_ci_ua[1]),
                threshold_source="measured",
                slope=f.slope,
                slope_ci=(float(f.slope_ci[0]), float(f.slope_ci[1])),
                max_comfortable_ua=top,
            )
        if eid in result.brightness:
            b = result.brightness[eid].fit
            upd["brightness"] = BrightnessCurve(
                scale_ua=float(np.clip(b.scale_ua, 1e-3, MAX_CALIBRATED_CURRENT_UA)),
                scale_ci_ua=(float(b.scale_ci_ua[0]), float(b.scale_ci_ua[1])),
                max_brightness=float(np.clip(b.max_brightness, 1e-3, 10.0)),
            )
        if result.map_fit is not None:
            m = result.map_fit
            i = array.electrode_ids.index(eid)
            pos = m.predicted_deg[i]
            thr = float(upd.get("threshold_ua", e.threshold_ua))
            top = float(upd.get("max_comfortable_ua", e.max_comfortable_ua))
            size = m.placement.phosphene_size_deg(
                np.array([0.5 * (thr + top)]), m.predicted_deg[i : i + 1]
            )
            upd.update(
                phosphene_deg=(float(pos[0]), float(pos[1])),
                phosphene_ci_deg=float(m.ci_deg[i]),
                phosphene_outlier=bool(m.outlier[i]),
                phosphene_size_deg=float(np.clip(size[0], 0.01, 45.0)),
            )
        if eid in h.electrodes:
            kept = tuple(t for t in e.trials if t.procedure != h.procedure)
            upd["trials"] = kept + _trials(log, eid)
        # Re-validate the whole entry (model_copy would skip the validators).
        entries[eid] = ElectrodeCalibration.model_validate({**e.model_dump(), **upd})
    procedures = (existing.procedures if existing else ()) + (
        Procedure(
            name=h.procedure,
            operator=h.operator,
            date=datetime.now(UTC),
            notes=notes or f"{len(log.trials)} trials, session {log.path.name}",
        ),
    )
    arrays = existing.arrays if existing else (array.name,)
    if array.name not in arrays:
        arrays = (*arrays, array.name)
    ordered = sorted(
        entries.values(),
        key=lambda x: (
            array.electrode_ids.index(x.electrode_id)
            if x.electrode_id in array.electrode_ids
            else 10**6
        ),
    )
    return PatientCalibration(
        version=CALIBRATION_VERSION,
        patient_id=h.patient_id,
        arrays=arrays,
        procedures=procedures,
        electrodes=tuple(ordered),
    )


def results_json(result: SessionResult, log: SessionLog, array: ElectrodeArray) -> dict[str, Any]:
    """Machine-readable summary of a session, including values the schema has no field for."""
    out: dict[str, Any] = {
        "procedure": result.procedure,
        "patient_id": log.header.patient_id,
        "session_file": str(log.path),
        "n_trials": result.n_trials,
        "max_delivered_ua": result.max_delivered_ua,
        "complete": log.complete,
    }
    if result.thresholds:
        out["thresholds"] = {
            e: {
                "threshold_ua": r.fit.threshold_ua,
                "threshold_ci_ua": list(r.fit.threshold_ci_ua),
                "slope_per_ua": r.fit.slope,
                "slope_ci": list(r.fit.slope_ci),
                "guess": r.fit.guess,
                "lapse": r.fit.lapse,
                "found": r.fit.found,
                "n_trials": r.fit.n_trials,
                "stop_reason": r.stop_reason,
                "max_current_ua": r.max_current_ua,
            }
            for e, r in result.thresholds.items()
        }
    if result.brightness:
        out["brightness"] = {
            e: {
                "scale_ua": r.fit.scale_ua,
                "scale_ci_ua": list(r.fit.scale_ci_ua),
                "max_brightness": r.fit.max_brightness,
                "max_ci": list(r.fit.max_ci),
                "rmse": r.fit.rmse,
                "n_trials": r.fit.n_trials,
            }
            for e, r in result.brightness.items()
        }
    if result.map_fit is not None:
        m = result.map_fit
        out["map"] = {
            "placement": {
                "center_deg": list(m.placement.center_deg),
                "rotation_deg": m.placement.rotation_deg,
                "k_mm": m.placement.k_mm,
            },
            "report_sd_deg": m.report_sd_deg,
            "outliers": [array.electrode_ids[i] for i in np.flatnonzero(m.outlier)],
            "electrodes": {
                eid: {
                    "predicted_deg": [float(v) for v in m.predicted_deg[i]],
                    "ci_deg": float(m.ci_deg[i]),
                    "n_reports": int(m.n_reports[i]),
                    "report_mean_deg": (
                        [float(v) for v in m.report_mean_deg[i]] if m.n_reports[i] else None
                    ),
                    "outlier": bool(m.outlier[i]),
                }
                for i, eid in enumerate(array.electrode_ids)
            },
        }
    return out
