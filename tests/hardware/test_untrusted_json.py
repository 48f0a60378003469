"""Broken JSON files against the one untrusted-JSON loader and the CLIs that use it (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hardware.arrays import ArrayError, load_array
from hardware.calibration_file import CalibrationError, load_calibration
from hardware.safety import SafetyConfigError, SafetyLimits
from hardware.untrusted_json import UntrustedFileError, load_untrusted_json
from npe_cli import app


def _good_calibration(array: str = "utah96", n: int = 3) -> dict[str, object]:
    ids = load_array(array).electrode_ids[:n]
    return {
        "version": 1,
        "patient_id": "p1",
        "arrays": [array],
        "electrodes": [
            {
                "electrode_id": eid,
                "threshold_ua": 20.0,
                "max_comfortable_ua": 60.0,
                "phosphene_deg": [1.0, -1.0],
            }
            for eid in ids
        ],
    }


def _bad_bytes() -> st.SearchStrategy[tuple[str, bytes]]:
    """(class, file bytes) for each kind of broken JSON."""
    deep = st.integers(65, 200_000).map(lambda n: ("deep", b"[" * n + b"]" * n))
    deep_obj = st.integers(65, 50_000).map(lambda n: ("deep", b'{"a":' * n + b"1" + b"}" * n))
    bad_utf8 = st.binary(min_size=1, max_size=40).map(
        lambda b: ("utf8", b'{"patient_id": "' + b"\xff\xfe" + b + b'"}')
    )
    nan = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]).map(
        lambda c: ("nan", f'{{"x": [{c}, 1.0]}}'.encode())
    )
    dup = st.just(("dup", b'{"version": 1, "version": 1}'))
    garbage = (
        st.binary(max_size=200).filter(lambda b: not _is_json(b)).map(lambda b: ("garbage", b))
    )
    return st.one_of(deep, deep_obj, bad_utf8, nan, dup, garbage)


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b)
    except (ValueError, RecursionError):
        return False
    return True


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_bad_bytes())
def test_broken_json_is_one_line_untrusted_file_error(
    tmp_path: Path, case: tuple[str, bytes]
) -> None:
    _, data = case
    p = tmp_path / "f.json"
    p.write_bytes(data)
    with pytest.raises(UntrustedFileError) as exc:
        load_untrusted_json(p, "calibration file")
    msg = str(exc.value)
    assert "\n" not in msg and str(p) in msg
    # Every loader built on it refuses with its own error class, in one line.
    for load, err in (
        (load_calibration, CalibrationError),
        (SafetyLimits.load, SafetyConfigError),
        (load_array, ArrayError),
    ):
        with pytest.raises(err) as e2:
            load(p)
        assert "\n" not in str(e2.value)


def test_directory_size_and_missing_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UntrustedFileError, match="is a directory"):
        load_untrusted_json(tmp_path, "calibration file")
    big = tmp_path / "big.json"
    big.write_bytes(b"[" + b"0," * 600 + b"0]")
    with pytest.raises(UntrustedFileError, match="byte limit"):
        load_untrusted_json(big, max_bytes=1000)
    with pytest.raises(UntrustedFileError, match="no such"):
        load_untrusted_json(tmp_path / "absent.json")


def test_valid_json_still_parses(tmp_path: Path) -> None:
    p = tmp_path / "ok.json"
    p.write_text(json.dumps({"a": [1, 2.5, {"b": "[[{"}]}))
    assert load_untrusted_json(p) == {"a": [1, 2.5, {"b": "[[{"}]}


def _wrong_calibrations() -> list[tuple[str, dict[str, object]]]:
    cases = []
    c = _good_calibration()
    c["electrodes"][0]["phosphene_deg"] = [float("nan"), float("nan")]  # type: ignore[index]
    cases.append(("NaN", c))
    c = _good_calibration()
    c["electrodes"][0]["enabled"] = "no"  # type: ignore[index]
    cases.append(("enabled", c))
    c = _good_calibration()
    for e in c["electrodes"]:  # type: ignore[attr-defined]
        e["electrode_id"] = "nope-" + e["electrode_id"]
    cases.append(("unknown to array", c))
    c = _good_calibration()
    c["electrodes"][1]["electrode_id"] = "utah96-999"  # type: ignore[index]
    cases.append(("unknown to array", c))
    c = _good_calibration()
    c["electrodes"] = []
    cases.append(("lists no electrodes", c))
    cases.append(("made for orion60", _good_calibration("orion60")))
    c = _good_calibration()
    c["electrodes"][0]["max_comfortable_ua"] = 150.0  # type: ignore[index]
    cases.append(("above the safety maximum", c))
    c = _good_calibration()
    c["electrodes"][0]["threshold_ua"] = 120.0  # type: ignore[index]
    c["electrodes"][0]["max_comfortable_ua"] = 130.0  # type: ignore[index]
    cases.append(("above the safety maximum", c))
    return cases


@pytest.mark.parametrize(("expect", "doc"), _wrong_calibrations())
def test_npe_run_refuses_wrong_calibrations_in_one_line(
    tmp_path: Path, expect: str, doc: dict[str, object]
) -> None:
    from hardware.pipeline import StimulationPipeline

    p = tmp_path / "cal.json"
    text = json.dumps(doc).replace("NaN", "NaN")
    p.write_text(text)
    with pytest.raises(CalibrationError) as exc:
        cal = load_calibration(p)
        StimulationPipeline(load_array("utah96"), cal, SafetyLimits())
    msg = str(exc.value)
    assert "\n" not in msg
    if expect in ("NaN", "enabled"):
        assert str(p) in msg
    else:
        assert expect in msg


@pytest.mark.parametrize(
    "data",
    [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe\x00bad", b'{"phosphene_deg": [NaN, NaN]}', None],
    ids=["deep", "utf8", "nan", "directory"],
)
def test_calibrate_show_cli_one_line_exit_2(tmp_path: Path, data: bytes | None) -> None:
    if data is None:
        target = tmp_path / "dir.json"
        target.mkdir()
    else:
        target = tmp_path / "cal.json"
        target.write_bytes(data)
    before = sorted(tmp_path.rglob("*"))
    r = CliRunner().invoke(app, ["calibrate", "show", str(target)])
    out = " ".join(r.output.split())
    assert r.exit_code == 2, out
    assert "Traceback" not in out and str(target.name) in out
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_log_inspect_on_damaged_data_is_linear_and_one_line(tmp_path: Path) -> None:
    """Issue 16: 1 MB of damage took 18 s (quadratic resync); now time grows with size."""
    import os
    import time

    from hardware.audit import FILE_HEADER, FILE_MAGIC, LOG_VERSION

    times = []
    for kb in (128, 512):
        p = tmp_path / f"damaged{kb}.log"
        p.write_bytes(FILE_HEADER.pack(FILE_MAGIC, LOG_VERSION) + os.urandom(kb * 1024))
        t0 = time.perf_counter()
        r = CliRunner().invoke(app, ["log", "inspect", str(p)])
        times.append(time.perf_counter() - t0)
        out = " ".join(r.output.split())
        assert r.exit_code != 0 and "Traceback" not in out, out
    assert times[1] < 12 * times[0] + 0.5  # 4× the data: linear ≈ 4×, quadratic ≈ 16×
