"""`prepare_session`, the library call behind every `npe calibrate` session command."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibration.runner import INPROCESS_LINK, SessionRequest, prepare_session
from calibration.session import SessionError, SessionLog


def _request(tmp_path: Path, **kw: object) -> SessionRequest:
    base: dict[str, object] = {
        "procedure": "threshold", "patient": "p1", "array": "utah96",
        "calibration": tmp_path / "p1.json", "electrodes": "first:2", "session": None,
        "resume": None, "simulated_patient": 3, "link": None, "operator": "test",
        "settings": {"method": "staircase", "budget": 10, "ci_target_ua": 12.0,
                     "max_current_ua": 80.0},
    }  # fmt: skip
    base.update(kw)
    return SessionRequest(**base)  # type: ignore[arg-type]


def test_new_session_writes_its_header_and_a_resume_finds_it(tmp_path: Path) -> None:
    plan = prepare_session(_request(tmp_path, session=tmp_path / "s.jsonl"))
    assert not plan.resumed and plan.path == tmp_path / "s.jsonl"
    header = SessionLog.open(plan.path).header
    assert header.link == INPROCESS_LINK
    assert len(header.electrodes) == 2 and header.patient_id == "p1"
    again = prepare_session(_request(tmp_path, resume=plan.path))
    assert again.resumed and again.n_logged == 0


def test_refusals_write_nothing(tmp_path: Path) -> None:
    plan = prepare_session(_request(tmp_path, session=tmp_path / "s.jsonl"))
    with pytest.raises(SessionError, match="is a threshold session, not map"):
        prepare_session(_request(tmp_path, procedure="map", resume=plan.path))
    with pytest.raises(SessionError, match="simulated patient 3, not 4"):
        prepare_session(_request(tmp_path, resume=plan.path, simulated_patient=4))
    with pytest.raises(SessionError, match="--patient and --calibration are required"):
        prepare_session(_request(tmp_path, patient=None, session=tmp_path / "t.jsonl"))
    assert not (tmp_path / "t.jsonl").exists()
