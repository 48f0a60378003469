"""The calibration file refuses what it must (through the hardware schema calibration writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hardware.calibration_file import CalibrationError, load_calibration
from npe_cli import app


def _valid() -> dict[str, Any]:
    return {
        "schema_name": "npe.calibration",
        "version": 1,
        "patient_id": "P1",
        "arrays": ["utah96"],
        "electrodes": [
            {
                "electrode_id": "utah96-01",
                "threshold_ua": 40.0,
                "max_comfortable_ua": 90.0,
                "phosphene_deg": [-3.0, -2.0],
            }
        ],
    }


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(doc))
    return p


def test_valid_file_loads(tmp_path: Path) -> None:
    cal = load_calibration(_write(tmp_path, _valid()))
    assert cal.by_id()["utah96-01"].threshold_ua == 40.0


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("threshold_ua", 500.0, "threshold_ua"),
        ("threshold_ua", -3.0, "threshold_ua"),
        ("threshold_ua", 95.0, "above the maximum comfortable"),
        ("phosphene_deg", [120.0, 0.0], "outside the visual field"),
    ],
)
def test_refuses_bad_electrode(tmp_path: Path, field: str, value: object, reason: str) -> None:
    doc = _valid()
    doc["electrodes"][0][field] = value
    with pytest.raises(CalibrationError, match=reason):
        load_calibration(_write(tmp_path, doc))


def test_refuses_unknown_version(tmp_path: Path) -> None:
    doc = _valid()
    doc["version"] = 7
    with pytest.raises(CalibrationError, match="unknown calibration version 7"):
        load_calibration(_write(tmp_path, doc))


def test_show_refuses_bad_file_with_one_red_line(tmp_path: Path) -> None:
    doc = _valid()
    doc["electrodes"][0]["threshold_ua"] = 95.0
    p = _write(tmp_path, doc)
    res = CliRunner().invoke(app, ["calibrate", "show", str(p)])
    assert res.exit_code == 2
    assert "above the maximum comfortable" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "cal.map.png").exists()


def test_show_writes_table_png_and_json(tmp_path: Path) -> None:
    p = _write(tmp_path, _valid())
    res = CliRunner().invoke(app, ["calibrate", "show", str(p)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "utah96-01" in res.output
    png = (tmp_path / "cal.map.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "cal.summary.json").read_text())
    assert summary["electrodes"][0]["threshold_ua"] == 40.0
