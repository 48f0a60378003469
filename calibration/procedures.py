"""The three calibration procedures as library calls: run (or resume) a logged session.

`run_session(log, stimulator, responder, existing)` replays the trials already in the log
into the procedure, then keeps asking: choose a current, deliver it through the safety layer
and link (`TrialStimulator`), get the answer (`Responder`), append the trial to the log. It
returns the fitted results; the caller decides when to write the calibration file (only on
completion or explicit save). Ctrl-C or a `p` answer raises `SessionPaused` after the last
answered trial is safely on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from calibration.adaptive import make_procedure
from calibration.brightness import BrightnessFit, brightness_levels, fit_brightness
from calibration.phosphene_map import MapFit, fit_phosphene_map
from calibration.psychometric import PsychometricFit, fit_psychometric
from calibration.responders import Responder, SessionPaused
from calibration.session import SessionLog, TrialRecord
from calibration.trial_stimulator import TrialStimulator
from calibration.visual_map import ArrayPlacement
from hardware.calibration_file import PatientCalibration


@dataclass(frozen=True)
class ThresholdResult:
    fit: PsychometricFit
    stop_reason: str
    max_current_ua: float


@dataclass(frozen=True)
class BrightnessResult:
    fit: BrightnessFit
    threshold_ua: float
    max_current_ua: float


@dataclass
class SessionResult:
    """Fitted values of one session (which of the dicts is filled depends on the procedure)."""

    procedure: str
    thresholds: dict[str, ThresholdResult] = field(default_factory=dict)
    brightness: dict[str, BrightnessResult] = field(default_factory=dict)
    map_fit: MapFit | None = None
    map_current_ua: dict[str, float] = field(default_factory=dict)
    n_trials: int = 0
    max_delivered_ua: float = 0.0


TrialCallback = Callable[[TrialRecord], None]


def max_current_for(
    electrode_id: str,
    log: SessionLog,
    stimulator: TrialStimulator,
    existing: PatientCalibration | None,
) -> float:
    """The highest current a session may ask of this electrode: the session setting, the
    safety ceiling for the train, and the patient's maximum comfortable current."""
    cap = min(log.header.max_current_ua, stimulator.ceiling_ua(electrode_id))
    if existing is not None:
        entry = existing.by_id().get(electrode_id)
        if entry is not None:
            cap = min(cap, entry.max_comfortable_ua)
    return float(np.floor(cap * 10.0) / 10.0)


def _trial(
    log: SessionLog,
    stimulator: TrialStimulator,
    electrode_id: str,
    current_ua: float,
    answer: Callable[[float, int], tuple[float | None, tuple[float, float] | None]],
    on_trial: TrialCallback | None,
) -> TrialRecord:
    """Deliver one trial, ask for the answer, log it (fsync) and return the record."""
    index = len(log.trials)
    delivered = stimulator.deliver(electrode_id, current_ua)
    try:
        response, reported = answer(delivered.delivered_ua, index)
    except (KeyboardInterrupt, SessionPaused) as exc:
        log.note_unanswered(electrode_id, delivered.sequence, delivered.delivered_ua)
        if isinstance(exc, SessionPaused):
            raise
        raise SessionPaused("interrupted (Ctrl-C)") from exc
    rec = TrialRecord(
        index=index,
        electrode=electrode_id,
        sequence=delivered.sequence,
        requested_ua=delivered.requested_ua,
        delivered_ua=delivered.delivered_ua,
        response=response,
        reported_deg=reported,
        safety_events=delivered.events,
        time=datetime.now(UTC),
    )
    log.append(rec)
    if on_trial is not None:
        on_trial(rec)
    return rec


def run_threshold(
    log: SessionLog,
    stimulator: TrialStimulator,
    responder: Responder,
    existing: PatientCalibration | None = None,
    on_trial: TrialCallback | None = None,
    fit_only: bool = False,
) -> SessionResult:
    """Adaptive detection thresholds (QUEST+ or staircase) and ML psychometric fits."""
    h = log.header
    result = SessionResult("threshold")
    for eid in h.electrodes:
        cap = max_current_for(eid, log, stimulator, existing)
        proc = make_procedure(h.method, cap, h.budget, h.ci_target_ua)
        xs: list[float] = []
        rs: list[int] = []
        for rec in log.trials_for(eid):
            proc.update(rec.delivered_ua, int(rec.response or 0))
            xs.append(rec.delivered_ua)
            rs.append(int(rec.response or 0))
        if fit_only and not xs:
            continue
        while not fit_only and not proc.finished:
            current = min(proc.next_current(), cap)

            def answer(delivered: float, index: int, e: str = eid) -> tuple[float, None]:
                return float(responder.detect(e, delivered, index)), None

            rec = _trial(log, stimulator, eid, current, answer, on_trial)
            proc.update(rec.delivered_ua, int(rec.response or 0))
            xs.append(rec.delivered_ua)
            rs.append(int(rec.response or 0))
        fit = fit_psychometric(xs, rs, cap)
        result.thresholds[eid] = ThresholdResult(fit, proc.stop_reason, cap)
    return _finish(result, log)


def run_brightness(
    log: SessionLog,
    stimulator: TrialStimulator,
    responder: Responder,
    existing: PatientCalibration | None,
    on_trial: TrialCallback | None = None,
    fit_only: bool = False,
) -> SessionResult:
    """Magnitude estimation between threshold and maximum; saturating-curve fits."""
    h = log.header
    if existing is None:
        raise ValueError(
            "brightness needs measured thresholds: run `npe calibrate threshold` first"
        )
    known = existing.by_id()
    missing = [e for e in h.electrodes if e not in known]
    if missing:
        raise ValueError(f"no threshold in the calibration file for electrodes {missing[:8]}")
    result = SessionResult("brightness")
    for n_e, eid in enumerate(h.electrodes):
        thr = known[eid].threshold_ua
        cap = max_current_for(eid, log, stimulator, existing)
        if cap <= thr:
            continue  # nothing above threshold can be tested safely on this electrode
        plan = brightness_levels(thr, cap, h.levels, h.repeats, seed=n_e)
        done = log.trials_for(eid)
        for current in [] if fit_only else plan[len(done) :]:

            def answer(delivered: float, index: int, e: str = eid) -> tuple[float, None]:
                return float(responder.rate(e, delivered, index)), None

            _trial(log, stimulator, eid, current, answer, on_trial)
        trials = log.trials_for(eid)
        if len(trials) < 3:
            continue
        fit = fit_brightness(
            [t.delivered_ua for t in trials], [float(t.response or 0.0) for t in trials], thr
        )
        result.brightness[eid] = BrightnessResult(fit, thr, cap)
    return _finish(result, log)


def map_current(electrode_id: str, cap: float, existing: PatientCalibration | None) -> float:
    """Current for location reports: 1.5× threshold (clearly visible), within the cap."""
    if existing is not None and electrode_id in existing.by_id():
        return float(min(cap, 1.5 * existing.by_id()[electrode_id].threshold_ua))
    return float(cap)


def run_map(
    log: SessionLog,
    stimulator: TrialStimulator,
    responder: Responder,
    existing: PatientCalibration | None = None,
    on_trial: TrialCallback | None = None,
    fit_only: bool = False,
) -> SessionResult:
    """Location reports; one smooth retinotopic model fitted to all of them."""
    h = log.header
    result = SessionResult("map")
    for eid in h.electrodes:
        cap = max_current_for(eid, log, stimulator, existing)
        current = map_current(eid, cap, existing)
        result.map_current_ua[eid] = current
        for _ in range(0 if fit_only else h.reports - len(log.trials_for(eid))):

            def answer(
                delivered: float, index: int, e: str = eid
            ) -> tuple[None, tuple[float, float] | None]:
                return None, responder.locate(e, delivered, index)

            _trial(log, stimulator, eid, current, answer, on_trial)
    array = stimulator.array
    reports: dict[str, list[tuple[float, float]]] = {}
    for t in log.trials:
        if t.reported_deg is not None:
            reports.setdefault(t.electrode, []).append(t.reported_deg)
    result.map_fit = fit_phosphene_map(
        array.electrode_ids,
        array.positions_mm,
        reports,
        ArrayPlacement(array.placement_deg, array.rotation_deg),
    )
    return _finish(result, log)


def _finish(result: SessionResult, log: SessionLog) -> SessionResult:
    result.n_trials = len(log.trials)
    result.max_delivered_ua = max((t.delivered_ua for t in log.trials), default=0.0)
    return result


RUNNERS = {"threshold": run_threshold, "brightness": run_brightness, "map": run_map}


def run_session(
    log: SessionLog,
    stimulator: TrialStimulator,
    responder: Responder,
    existing: PatientCalibration | None = None,
    on_trial: TrialCallback | None = None,
    fit_only: bool = False,
) -> SessionResult:
    """Run (or resume) the session the log's header describes.

    fit_only: deliver nothing, only fit what the log holds (explicit save of a paused session).
    """
    runner = RUNNERS[log.header.procedure]
    return runner(log, stimulator, responder, existing, on_trial, fit_only)
