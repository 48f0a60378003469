"""Sessions through the real hardware path: recovery within CIs, safety, pause and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibration.patient import SimulatedPatient, simulated_patient_for_array
from calibration.procedures import run_session
from calibration.responders import SessionPaused, SimulatedResponder
from calibration.runner import (
    INPROCESS_LINK,
    audit_path,
    calibrate,
    start_session,
    wait_until_received,
)
from calibration.session import SessionLog, TrialRecord
from calibration.trial_stimulator import TrialStimulator
from hardware.arrays import ElectrodeArray
from hardware.audit import AuditLog, inspect_log
from hardware.calibration_file import load_calibration
from hardware.safety import SafetyLimits, check_frame
from hardware.stimulator import SimulatedStimulator
from hardware.types import StimulationFrame


def _coverage(
    method: str, n: int, seed: int, utah: ElectrodeArray, loopback: tuple, tmp_path: Path
) -> tuple[float, list[StimulationFrame], SimulatedStimulator]:
    stim, link = loopback
    patient = simulated_patient_for_array(utah, seed)
    log = start_session(
        tmp_path / f"{method}.jsonl",
        procedure="threshold",
        patient_id="P1",
        array="utah96",
        electrodes=utah.electrode_ids[:n],
        calibration_path=str(tmp_path / "cal.json"),
        link=link.spec,
        method=method,
        simulated_patient=seed,
    )
    ts = TrialStimulator(utah, SafetyLimits(), link, wait=False)
    ts.keep_frames = True
    res = run_session(log, ts, SimulatedResponder(patient))
    log.close()
    t = patient.truth
    inside = [
        r.fit.threshold_ci_ua[0] <= t.threshold_ua[t.index(e)] <= r.fit.threshold_ci_ua[1]
        for e, r in res.thresholds.items()
    ]
    assert len(inside) == n
    return float(np.mean(inside)), ts.sent_frames, stim


def test_staircase_recovers_thresholds_within_cis_and_stays_safe(
    utah: ElectrodeArray, loopback: tuple, tmp_path: Path
) -> None:
    cov, frames, stim = _coverage("staircase", 20, 21, utah, loopback, tmp_path)
    assert cov >= 0.9
    limits = SafetyLimits()
    assert all(check_frame(f, limits, utah) == [] for f in frames)
    assert all(int(f.active.sum()) == 1 for f in frames)
    wait_until_received(stim, 2 * len(frames))
    # The stimulator received every trial frame and its stop frame, and had nothing to clamp.
    # UDP may drop a datagram on a loaded machine; every one that arrived was accepted.
    assert stim.stats.accepted >= 0.95 * 2 * len(frames), stim.stats.as_dict()
    assert stim.stats.accepted == stim.stats.received
    assert stim.stats.breaches_after_enforcement == 0
    assert dict(stim.stats.clamped) == {}
    assert stim.stats.max_amplitude_ua <= limits.max_amplitude_ua


def test_quest_recovers_thresholds_within_cis(
    utah: ElectrodeArray, loopback: tuple, tmp_path: Path
) -> None:
    cov, frames, _ = _coverage("quest", 10, 22, utah, loopback, tmp_path)
    assert cov >= 0.9
    assert all(check_frame(f, SafetyLimits(), utah) == [] for f in frames)


def test_trials_never_exceed_strict_limits(
    utah: ElectrodeArray, loopback: tuple, tmp_path: Path
) -> None:
    """With a 30 µA amplitude cap the procedure may ask for no more, and a rogue request for
    500 µA is clamped by the enforcer before it reaches the link."""
    _, link = loopback
    limits = SafetyLimits(max_amplitude_ua=30.0, max_charge_per_phase_nc=4.0)
    audit = AuditLog(tmp_path / "a.audit", utah, limits)
    ts = TrialStimulator(utah, limits, link, wait=False, audit=audit)
    ts.keep_frames = True
    rogue = ts.deliver(utah.electrode_ids[0], 500.0)
    assert rogue.delivered_ua <= 4.0 * 1000 / 170.0 <= 30.0
    assert "amplitude_cap" in rogue.events or "charge_cap" in rogue.events
    audit.close()
    assert inspect_log(tmp_path / "a.audit").n_events >= 1  # the clamp is on record
    patient = simulated_patient_for_array(utah, 3)
    log = start_session(
        tmp_path / "s.jsonl",
        procedure="threshold",
        patient_id="P1",
        array="utah96",
        electrodes=utah.electrode_ids[:3],
        calibration_path=str(tmp_path / "cal.json"),
        link=link.spec,
        method="staircase",
        budget=15,
        simulated_patient=3,
    )
    run_session(log, ts, SimulatedResponder(patient))
    assert all(check_frame(f, limits, utah) == [] for f in ts.sent_frames)
    assert max(t.delivered_ua for t in log.trials) <= ts.ceiling_ua(utah.electrode_ids[0])
    log.close()


class _PausingResponder(SimulatedResponder):
    """Answers like the simulated patient, then the operator types `p` at trial `stop_at`."""

    def __init__(self, patient: SimulatedPatient, stop_at: int) -> None:
        super().__init__(patient)
        self.stop_at = stop_at

    def _check(self, index: int) -> None:
        if index == self.stop_at:
            raise SessionPaused("paused by the operator")

    def detect(self, electrode_id: str, current_ua: float, index: int) -> bool:
        self._check(index)
        return super().detect(electrode_id, current_ua, index)

    def locate(
        self, electrode_id: str, current_ua: float, index: int
    ) -> tuple[float, float] | None:
        self._check(index)
        return super().locate(electrode_id, current_ua, index)


@pytest.mark.parametrize(("procedure", "stop_at"), [("threshold", 23), ("map", 7)])
def test_interrupted_session_resumes_without_losing_trials(
    utah: ElectrodeArray, tmp_path: Path, procedure: str, stop_at: int
) -> None:
    common = dict(
        procedure=procedure,
        patient_id="P1",
        array="utah96",
        electrodes=utah.electrode_ids[:6],
        link=INPROCESS_LINK,
        method="staircase",
        budget=8,
        reports=3,
        simulated_patient=8,
    )
    # Reference: the same session without interruption.
    start_session(tmp_path / "ref.jsonl", calibration_path=str(tmp_path / "ref.json"), **common)
    ref = calibrate(tmp_path / "ref.jsonl")
    ref_log = SessionLog.open(tmp_path / "ref.jsonl")

    cal = tmp_path / "cal.json"
    start_session(tmp_path / "s.jsonl", calibration_path=str(cal), **common)
    patient = simulated_patient_for_array(utah, 8)
    with pytest.raises(SessionPaused):
        calibrate(tmp_path / "s.jsonl", responder=_PausingResponder(patient, stop_at=stop_at))
    paused = SessionLog.open(tmp_path / "s.jsonl")
    assert len(paused.trials) == stop_at and not paused.complete
    assert paused.unanswered == 1  # the train delivered at the pause is on record
    assert not cal.exists()  # nothing written before completion or explicit save
    # A crash mid-write leaves a torn line: it is dropped, the 23 answered trials are kept.
    with open(tmp_path / "s.jsonl", "a") as fh:
        fh.write('{"kind": "trial", "index": 99, "elec')
    out = calibrate(tmp_path / "s.jsonl")
    assert out.complete and out.calibration_path == cal
    resumed = SessionLog.open(tmp_path / "s.jsonl")
    strip = lambda ts: [(t.electrode, t.delivered_ua, t.response, t.reported_deg) for t in ts]  # noqa: E731
    assert strip(resumed.trials) == strip(ref_log.trials)
    assert [t.index for t in resumed.trials] == list(range(len(resumed.trials)))
    seqs = [t.sequence for t in resumed.trials]
    assert seqs == sorted(set(seqs))  # frame sequence keeps increasing across the resume
    got = load_calibration(cal).by_id()
    want = load_calibration(tmp_path / "ref.json").by_id()
    for e in common["electrodes"]:  # type: ignore[union-attr]
        assert got[e].threshold_ua == want[e].threshold_ua
        assert got[e].phosphene_deg == pytest.approx(want[e].phosphene_deg)
        assert len(got[e].trials) == len(want[e].trials) > 0
    assert ref.n_trials == out.n_trials


def test_explicit_save_of_paused_session(utah: ElectrodeArray, tmp_path: Path) -> None:
    cal = tmp_path / "cal.json"
    start_session(
        tmp_path / "s.jsonl",
        procedure="threshold",
        patient_id="P1",
        array="utah96",
        electrodes=utah.electrode_ids[:2],
        calibration_path=str(cal),
        link=INPROCESS_LINK,
        method="staircase",
        budget=15,
        simulated_patient=9,
    )
    patient = simulated_patient_for_array(utah, 9)
    with pytest.raises(SessionPaused):
        calibrate(tmp_path / "s.jsonl", responder=_PausingResponder(patient, stop_at=17))
    out = calibrate(tmp_path / "s.jsonl", fit_only=True)
    assert out.n_trials == 17 and not out.complete
    c = load_calibration(cal).by_id()
    assert len(c[utah.electrode_ids[0]].trials) == 15
    assert len(c[utah.electrode_ids[1]].trials) == 2
    data = json.loads(Path(str(tmp_path / "s.jsonl") + ".results.json").read_text())
    assert data["complete"] is False


def test_full_calibration_chain_writes_a_valid_file(utah: ElectrodeArray, tmp_path: Path) -> None:
    """threshold → brightness → map on a few electrodes; the map covers the whole array."""
    cal = tmp_path / "cal.json"
    ids = utah.electrode_ids[:8]
    for proc, extra in (
        ("threshold", {"method": "staircase", "budget": 25}),
        ("brightness", {"levels": 4, "repeats": 2}),
        ("map", {"reports": 2}),
    ):
        start_session(
            tmp_path / f"{proc}.jsonl",
            procedure=proc,
            patient_id="P1",
            array="utah96",
            electrodes=ids,
            calibration_path=str(cal),
            link=INPROCESS_LINK,
            simulated_patient=5,
            **extra,
        )
        out = calibrate(tmp_path / f"{proc}.jsonl")
        assert out.stimulator_stats is not None
        assert out.stimulator_stats["breaches_after_enforcement"] == 0
        stats = out.stimulator_stats
        assert stats["accepted"] == stats["received"] >= 0.95 * 2 * out.n_trials, stats
        report = inspect_log(audit_path(tmp_path / f"{proc}.jsonl"))
        assert report.ok and report.limit_breaches == 0
        assert report.n_frames == 2 * out.n_trials and report.max_active_electrodes == 1
    c = load_calibration(cal)
    assert len(c.electrodes) == 96  # the map predicts every electrode
    assert [p.name for p in c.procedures] == ["threshold", "brightness", "map"]
    by = c.by_id()
    truth = simulated_patient_for_array(utah, 5).truth
    for e in ids:
        kinds = {t.procedure for t in by[e].trials}
        assert kinds == {"threshold", "brightness", "map"}
        assert by[e].enabled
        assert abs(by[e].threshold_ua - truth.threshold_ua[truth.index(e)]) < 15.0
    assert not by[utah.electrode_ids[50]].enabled  # never tested: no threshold
    err = np.hypot(
        *(np.array([by[e].phosphene_deg for e in utah.electrode_ids]) - truth.phosphene_deg).T
    )
    assert err.mean() < 1.5


def test_session_file_refuses_corruption(tmp_path: Path, utah: ElectrodeArray) -> None:
    from calibration.session import SessionError

    log = start_session(
        tmp_path / "s.jsonl",
        procedure="threshold",
        patient_id="P1",
        array="utah96",
        electrodes=utah.electrode_ids[:1],
        calibration_path=str(tmp_path / "c.json"),
        link=INPROCESS_LINK,
    )
    log.close()
    with open(tmp_path / "s.jsonl", "a") as fh:
        fh.write("not json\n")
    with pytest.raises(SessionError, match="line 2 is not JSON"):
        SessionLog.open(tmp_path / "s.jsonl")
    with pytest.raises(SessionError, match="exists"):
        start_session(
            tmp_path / "s.jsonl",
            procedure="threshold",
            patient_id="P1",
            array="utah96",
            electrodes=utah.electrode_ids[:1],
            calibration_path=str(tmp_path / "c.json"),
            link=INPROCESS_LINK,
        )
    assert TrialRecord  # the record type the log holds
