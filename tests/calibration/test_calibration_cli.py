"""The `npe calibrate` commands as a user runs them: a pseudo-terminal session, simulated
sessions, prediction and INT8 frames."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from pathlib import Path

import h5py
import numpy as np
import pexpect
from typer.testing import CliRunner

from calibration.runner import wait_until_received
from hardware.arrays import ElectrodeArray
from hardware.audit import inspect_log
from hardware.calibration_file import load_calibration
from hardware.safety import SafetyLimits
from hardware.stimulator import SimulatedStimulator
from npe_cli import app

NPE = [sys.executable, "-c", "from npe_cli import app; app()"]


def _spawn(args: list[str], env: dict[str, str]) -> pexpect.spawn:
    return pexpect.spawn(
        NPE[0], [*NPE[1:], *args], env=env, encoding="utf-8", timeout=60, dimensions=(40, 200)
    )


def test_terminal_session_through_a_pty_pauses_resumes_and_writes(
    utah: ElectrodeArray, tmp_path: Path
) -> None:
    key_file = tmp_path / "device.key"
    key = secrets.token_bytes(32)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, key)
    os.close(fd)
    env = {**os.environ, "NPE_DEVICE_KEY_FILE": str(key_file), "COLUMNS": "200", "TERM": "dumb"}
    cal = tmp_path / "cal.json"
    session = tmp_path / "s.jsonl"
    prompt = re.compile(r"at ([0-9.]+) µA — phosphene seen\? \[y/n\]")
    with SimulatedStimulator("127.0.0.1", 0, key, SafetyLimits(), utah, deadman_ms=500) as stim:
        args = ["calibrate", "threshold", "--patient", "P9", "--calibration", str(cal),
                "--electrodes", "utah96-05", "--method", "staircase", "--budget", "10",
                "--session", str(session), "--link", f"udp://127.0.0.1:{stim.port}"]  # fmt: skip
        child = _spawn(args, env)
        answered = 0
        for _ in range(4):
            child.expect(prompt)
            child.sendline(
                "maybe" if answered == 0 else ("y" if float(child.match.group(1)) > 45 else "n")
            )
            if answered == 0:
                child.expect("please answer y or n")
                child.expect(prompt)
                child.sendline("y" if float(child.match.group(1)) > 45 else "n")
            answered += 1
        child.expect(prompt)
        child.sendline("p")
        child.expect("paused")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 130
        assert not cal.exists()
        lines = [json.loads(x) for x in session.read_text().splitlines()]
        # header, the four answered trials, and the train delivered before the pause
        assert [x["kind"] for x in lines] == ["header"] + ["trial"] * 4 + ["unanswered"]

        # Resume, answer two, then Ctrl-C at the prompt: paused again, nothing lost.
        child = _spawn(["calibrate", "threshold", "--resume", str(session)], env)
        child.expect("4 trials already logged")
        for _ in range(2):
            child.expect(prompt)
            child.sendline("y" if float(child.match.group(1)) > 45 else "n")
        child.expect(prompt)
        child.sendintr()
        child.expect("Ctrl-C")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 130
        assert not cal.exists()

        child = _spawn(["calibrate", "threshold", "--resume", str(session)], env)
        child.expect("6 trials already logged")
        for _ in range(4):
            child.expect(prompt)
            child.sendline("y" if float(child.match.group(1)) > 45 else "n")
        child.expect("calibration file:")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        wait_until_received(stim, 2 * (10 + 2))
        # every trial (and the two unanswered ones): its train and a stop frame, nothing clamped
        assert stim.stats.accepted == stim.stats.received >= 2 * (10 + 2) - 1
        assert dict(stim.stats.clamped) == {}
        assert stim.stats.breaches_after_enforcement == 0
    report = inspect_log(str(session) + ".audit")  # one audit log across the three runs
    assert report.ok and report.n_frames == 2 * (10 + 2) and report.limit_breaches == 0
    c = load_calibration(cal).by_id()["utah96-05"]
    assert len(c.trials) == 10
    assert c.threshold_ci_ua is not None and c.threshold_ci_ua[0] <= 47 <= c.threshold_ci_ua[1] + 4


def test_simulated_cli_chain_and_prediction(tmp_path: Path) -> None:
    runner = CliRunner()
    cal = tmp_path / "cal.json"
    base = ["--patient", "P2", "--calibration", str(cal), "--simulated-patient", "4"]
    r = runner.invoke(app, ["calibrate", "threshold", *base, "--electrodes", "first:12",
                            "--method", "staircase", "--budget", "25"])  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads(next(tmp_path.glob("threshold-*.results.json")).read_text())
    assert len(res["thresholds"]) == 12 and res["stimulator"]["breaches_after_enforcement"] == 0
    r = runner.invoke(app, ["calibrate", "map", *base, "--electrodes", "first:12"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["calibrate", "predict", "--calibration", str(cal),
                            "--simulated-patient", "4", "--repeats", "2", "--folds", "5"])  # fmt: skip
    assert r.exit_code == 0, r.output
    pred = json.loads((tmp_path / "cal.prediction.json").read_text())
    assert pred["n_measured"] == sum(v["found"] for v in res["thresholds"].values())
    c = load_calibration(cal)
    assert sum(e.enabled for e in c.electrodes) >= 90  # predicted electrodes are usable
    assert c.procedures[-1].name == "prediction"
    # provenance and uncertainty of every value survive into the file
    measured_ids = {e for e, v in res["thresholds"].items() if v["found"]}
    for e in c.electrodes:
        if e.electrode_id in measured_ids:
            assert e.threshold_source == "measured"
            assert e.slope_ci is not None and e.slope_ci[0] <= e.slope <= e.slope_ci[1]  # type: ignore[operator]
        elif e.enabled:
            assert e.threshold_source == "predicted"
    assert any(e.phosphene_ci_deg is not None for e in c.electrodes)
    r = runner.invoke(app, ["calibrate", "threshold", "--resume", str(tmp_path / "nope.jsonl")])
    assert r.exit_code == 2 and "no such session file" in r.output


def test_frames_from_a_recording(tmp_path: Path) -> None:
    from encoder.recording import CellInfo, Recording, write_recording

    rng = np.random.default_rng(0)
    n = 600
    stim = rng.integers(0, 256, size=(n, 8, 10), dtype=np.uint8)
    stim[:200] = 127  # a flat stretch: low contrast, no temporal variance
    rec = Recording(
        stimulus=stim,
        responses=np.zeros((n, 2), dtype=np.uint16),
        cells=CellInfo(("a", "b"), ("ON", "OFF"), np.zeros((2, 2), dtype=np.float32)),
        splits={
            "train": np.array([[0, 400]]),
            "val": np.array([[400, 500]]),
            "test": np.array([[500, 600]]),
        },
        frame_rate_hz=100.0,
        pixel_size_deg=0.1,
    )
    h5 = write_recording(rec, tmp_path / "rec.h5")
    out = tmp_path / "frames.npz"
    r = CliRunner().invoke(
        app, ["calibrate", "frames", "--data", str(h5), "--out", str(out), "--n", "32"]
    )
    assert r.exit_code == 0, r.output
    z = np.load(out)
    w = z["windows"]
    assert w.shape == (32, 25, 8, 10) and w.dtype == np.float32
    assert float(z["frame_rate_hz"]) == 100.0 and "rec.h5" in str(z["source"])
    assert w.min() >= -1.0 and w.max() <= 1.0
    stats = json.loads(out.with_suffix(".json").read_text())
    # Stratified: both flat and noisy windows are represented.
    tv = w.var(axis=1).mean(axis=(1, 2))
    assert (tv < 1e-6).any() and (tv > 0.1).any()
    assert sum(stats["contrast_histogram"]) == w.size
    # Windows come from the train split only (frames < 400): each equals a stretch of it.
    contrast = (stim[:400].astype(np.float32) - 127.5) / 127.5
    first = w[np.argmax(tv)]
    hits = [s for s in range(400 - 24) if np.array_equal(contrast[s : s + 25], first)]
    assert hits
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.attrs["format"] = "something"
    r = CliRunner().invoke(
        app, ["calibrate", "frames", "--data", str(bad), "--out", str(tmp_path / "x.npz")]
    )
    assert r.exit_code == 2 and "not an npe recording" in r.output
    assert not (tmp_path / "x.npz").exists()
