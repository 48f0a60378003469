"""The hardware commands end to end: arrays, stimulator serve (a real subprocess on loopback),
log inspect and preview; and the full chain pipeline → link → stimulator with an audit log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
from typer.testing import CliRunner

from hardware.audit import AuditLog
from hardware.cli import app
from hardware.keys import load_or_create_device_key
from hardware.link import open_link
from hardware.pipeline import StimulationPipeline
from hardware.safety import SafetyLimits
from hardware.stimulator import SimulatedStimulator
from hardware.types import RateField

runner = CliRunner()


def make_log(path, utah, n=20, limits=None):
    lim = limits or SafetyLimits()
    with AuditLog(path, utah, lim) as log:
        pipe = StimulationPipeline(utah, None, lim, audit=log)
        ph = pipe.model.phosphene_deg.astype(np.float32)
        for k in range(n):
            rates = (40.0 + 60.0 * np.sin(np.arange(96) + k / 3.0) ** 2).astype(np.float32)
            log.frame(pipe.process(RateField(rates, ph, np.ones(96, np.int8))))


def test_arrays_command():
    res = runner.invoke(app, ["hardware", "arrays", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["utah96"]["electrodes"] == 96 and abs(rows["utah96"]["pitch_mm"] - 0.4) < 1e-9
    assert rows["orion60"]["electrodes"] == 60 and abs(rows["orion60"]["pitch_mm"] - 4.2) < 1e-3


def test_log_inspect_command(utah, tmp_path):
    path = tmp_path / "s.npelog"
    make_log(path, utah)
    res = runner.invoke(app, ["log", "inspect", str(path), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["ok"] and rep["n_frames"] == 20
    assert json.loads((tmp_path / "s.npelog.report.json").read_text())["n_frames"] == 20
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    res = runner.invoke(app, ["log", "inspect", str(path)])
    assert res.exit_code == 1 and "FAILED" in res.output
    res = runner.invoke(app, ["log", "inspect", str(tmp_path / "missing.npelog")])
    assert res.exit_code == 2 and "no such audit log" in res.output


def test_preview_command_writes_a_video(utah, tmp_path):
    import cv2

    log = tmp_path / "s.npelog"
    make_log(log, utah, n=30)
    out = tmp_path / "preview.avi"
    res = runner.invoke(app, ["preview", str(log), "--out", str(out), "--size", "64"])
    assert res.exit_code == 0, res.output
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    assert len(frames) == 30 and frames[0].shape[:2] == (64, 64)
    assert max(f.max() for f in frames) > 50  # phosphenes are visible
    summary = json.loads((tmp_path / "preview.avi.json").read_text())
    assert summary["frames"] == 30 and summary["array"] == "utah96"


def test_device_key_file(tmp_path):
    p = tmp_path / "k" / "device.key"
    k1 = load_or_create_device_key(p)
    assert len(k1) == 32 and (p.stat().st_mode & 0o777) == 0o600
    assert load_or_create_device_key(p) == k1
    os.chmod(p, 0o644)
    import pytest

    with pytest.raises(ValueError, match="chmod 600"):
        load_or_create_device_key(p)


def test_full_chain_pipeline_link_stimulator_audit(utah, tmp_path, key):
    limits = SafetyLimits()
    stim = SimulatedStimulator("127.0.0.1", 0, key, limits, utah, deadman_ms=100)
    stim.start()
    path = tmp_path / "chain.npelog"
    try:
        with AuditLog(path, utah, limits) as log:
            pipe = StimulationPipeline(utah, None, limits, audit=log)
            link = open_link(f"udp://127.0.0.1:{stim.port}", key, audit=log)
            ph = pipe.model.phosphene_deg.astype(np.float32)
            for k in range(10):
                rates = np.full(96, 90.0, np.float32)
                rates[k] = np.nan
                link.send(pipe.process(RateField(rates, ph, np.ones(96, np.int8))))
            end = time.monotonic() + 5
            while stim.stats.accepted < 10 and time.monotonic() < end:
                time.sleep(0.005)
            link.close()
    finally:
        stim.stop()
    assert stim.stats.accepted == 10 and not stim.stats.rejected
    assert stim.stats.breaches_after_enforcement == 0 and not stim.stats.clamped
    from hardware.audit import inspect_log

    rep = inspect_log(path)
    assert rep.ok and rep.n_frames == 10 and rep.events_by_kind == {"bad_rate": 10}


def test_stimulator_serve_subprocess(utah, tmp_path):
    key_file = tmp_path / "device.key"
    key = load_or_create_device_key(key_file)
    stats = tmp_path / "stats.json"
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "npe_cli",
            "stimulator",
            "serve",
            "--port",
            str(port),
            "--key-file",
            str(key_file),
            "--state-dir",
            str(tmp_path / "state"),
            "--duration",
            "1.5",
            "--stats-out",
            str(stats),
            "--audit-log",
            str(tmp_path / "stim.npelog"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on udp://127.0.0.1:" in line, line
    link = open_link(f"udp://127.0.0.1:{port}", key)
    bad = open_link(f"udp://127.0.0.1:{port}", b"z" * 32)
    pipe = StimulationPipeline(utah, None, SafetyLimits())
    ph = pipe.model.phosphene_deg.astype(np.float32)
    for _ in range(5):
        frame = pipe.process(RateField(np.full(96, 80.0, np.float32), ph, np.ones(96, np.int8)))
        link.send(frame)
        bad.send(frame)
    out, _ = proc.communicate(timeout=30)
    link.close()
    bad.close()
    assert proc.returncode == 0, out
    result = json.loads(stats.read_text())
    assert result["accepted"] == 5 and result["rejected"] == {"bad_mac": 5}, result
    assert result["deadman_stops"] >= 1 and result["stimulating"] is False
    assert len(list((tmp_path / "state").glob("replay-*.json"))) == 1  # the durable mark
    from hardware.audit import inspect_log

    rep = inspect_log(tmp_path / "stim.npelog")  # what the stimulator delivered, verified
    assert rep.ok and rep.n_frames == 5 and rep.limit_breaches == 0
    assert rep.events_by_kind["frame_rejected"] == 5 and rep.events_by_kind["deadman_stop"] >= 1
