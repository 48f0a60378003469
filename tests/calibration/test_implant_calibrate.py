"""`npe calibrate threshold --implant I --implant-array LABEL`: one array of an implant per
session (as the implant places it, through its own simulated stimulator), results merged into
one implant calibration with qualified ids, which `npe run --implant` then accepts."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hardware.audit import inspect_log
from hardware.calibration_file import load_calibration
from hardware.implant import ImplantPipeline, load_implant
from hardware.implant_calibration import load_implant_calibration
from hardware.safety import SafetyLimits
from npe_cli import app


def _implant(path: Path) -> Path:
    doc = {
        "schema_name": "npe.implant",
        "version": 1,
        "name": "pair",
        "arrays": [
            {"label": "a", "array": "utah64", "hemisphere": "left",
             "placement": {"center_deg": [2.0, 1.5]}},
            {"label": "b", "array": "utah64", "hemisphere": "left",
             "placement": {"center_deg": [2.0, -1.5]}},
        ],
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def _threshold(implant: Path, label: str, cal: Path, *extra: str) -> tuple[int, str]:
    # Each array's session file named explicitly: the default name is stamped to the second,
    # and two short simulated sessions can start within one second on a fast host.
    session = cal.with_name(f"threshold-{label}.jsonl")
    args = ["calibrate", "threshold", "--implant", str(implant), "--implant-array", label,
            "--patient", "P3", "--calibration", str(cal), "--simulated-patient", "4",
            "--electrodes", "first:2", "--budget", "15", "--session", str(session),
            *extra]  # fmt: skip
    res = CliRunner().invoke(app, args)
    return res.exit_code, res.output


def test_threshold_per_implant_array_merges_into_one_implant_calibration(tmp_path: Path) -> None:
    implant = _implant(tmp_path / "pair.json")
    cal = tmp_path / "p3.json"
    code, out = _threshold(implant, "a", cal)
    assert code == 0, out
    # after one array, the file holds only that array; a run refuses it (array b missing)
    first = load_calibration(cal)
    assert first.arrays == ("pair",)
    assert [e.electrode_id for e in first.electrodes] == ["a:utah64-01", "a:utah64-02"]
    code, out = _threshold(implant, "b", cal)
    assert code == 0, out
    both = load_calibration(cal)
    assert [e.electrode_id for e in both.electrodes] == [
        "a:utah64-01", "a:utah64-02", "b:utah64-01", "b:utah64-02"
    ]  # fmt: skip
    assert all(e.threshold_source == "measured" for e in both.electrodes)
    imp = load_implant(implant)
    parts = load_implant_calibration(cal, imp, SafetyLimits().max_amplitude_ua)
    pipe = ImplantPipeline(imp, SafetyLimits(), calibrations=parts)
    assert [int(p.model.enabled.sum()) for p in pipe.pipelines.values()] == [2, 2]
    # every trial went through the real chain and its audit log verifies
    audits = sorted(tmp_path.glob("threshold-*.jsonl.audit"))
    assert len(audits) == 2 and all(inspect_log(a).ok for a in audits)


def test_implant_session_flags_are_checked(tmp_path: Path) -> None:
    implant = _implant(tmp_path / "pair.json")
    cal = tmp_path / "p3.json"
    code, out = _threshold(implant, "nowhere", cal)
    assert code == 2 and "has no array 'nowhere'" in out
    res = CliRunner().invoke(
        app, ["calibrate", "threshold", "--implant", str(implant), "--patient", "P3",
              "--calibration", str(cal)],
    )  # fmt: skip
    assert res.exit_code == 2 and "--implant-array" in res.output
    code, out = _threshold(implant, "a", cal, "--array", "utah96")
    assert code == 2 and "exclude each other" in out
    assert not cal.exists()
