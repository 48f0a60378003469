"""Implants through the live loop and `npe run --implant` (issue 17).

The loop test runs the real ORT model, loop, ImplantPipeline and one simulated stimulator per
array on real UDP loopback sockets, paced by the real clock for 300 bins; the command-line
tests run `npe` in subprocesses (the shipped 1,024-electrode implant, bad calibrations, a
signed package holding an implant).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.toymodel import write_toy_bundle

from hardware.audit import inspect_log, read_implant_frames
from hardware.calibration_file import (
    CALIBRATION_VERSION,
    ElectrodeCalibration,
    PatientCalibration,
    save_calibration,
)
from hardware.delivery import DeliverySummary
from hardware.implant import check_implant, load_implant, qualify
from hardware.safety import SafetyLimits
from hardware.simulator_mode import SimulatorMode
from runtime.clock import RealClock
from runtime.hardware_chain import build_implant_chain
from runtime.inference import OrtEngine
from runtime.loop import BinView, StreamingRuntime
from runtime.preprocess import Preprocessor
from runtime.sources import open_source
from runtime.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
BINS = 300


def _implant_file(path: Path) -> Path:
    """Two Utah-64 arrays under the toy model's field (±6°), implant caps that bind."""
    doc = {
        "schema_name": "npe.implant",
        "version": 1,
        "name": "pair",
        "arrays": [
            {
                "label": "upper",
                "array": "utah64",
                "hemisphere": "left",
                "placement": {"center_deg": [2.0, 1.5]},
            },
            {
                "label": "lower",
                "array": "utah64",
                "hemisphere": "left",
                "placement": {"center_deg": [2.0, -1.5]},
            },
        ],
        "limits": {"max_active_electrodes": 12, "max_total_current_ua": 200.0},
    }
    path.write_text(json.dumps(doc))
    return path


def test_two_array_implant_run_one_frame_per_link_per_bin(
    toy_spec: ModelSpec, tmp_path: Path
) -> None:
    implant_path = _implant_file(tmp_path / "pair.json")
    log = tmp_path / "run" / "audit.log"
    chain = build_implant_chain(str(implant_path), log_path=log, stimulator="thread")
    form = toy_spec.find_form("step")
    assert form is not None
    seen: list[tuple[np.ndarray, ...]] = []

    def observe(view: BinView) -> None:  # every bin's per-array frames, as sent
        seen.append(tuple(f.amplitude_ua.copy() for f in chain.bus.newest.parts))
        assert view.stim.n_electrodes == 128  # the loop sees every electrode of the implant

    rt = StreamingRuntime(
        toy_spec,
        OrtEngine(form),
        open_source("synthetic:bar", fps=60),
        Preprocessor(toy_spec, camera_fov_deg=40.0),
        chain.pipeline,
        chain.link,
        chain.audit,
        clock=RealClock(),
        observer=observe,
    )
    try:
        summary = rt.run(max_bins=BINS)
    finally:
        chain.close()
    assert summary.bins_total == BINS
    frames_per_link = BINS - summary.counters.bins_dropped + 1  # + the final zero frame
    stats = chain.chain.stimulator_stats()
    for lnk, st in zip(chain.chain.links, stats, strict=True):
        assert lnk.stats.sent == frames_per_link and lnk.stats.send_errors == 0
        assert st is not None and st.received == frames_per_link, st
        # Every frame authenticated on its own link; on a host loaded far beyond its cores the
        # stimulator may get to a frame after the 250 ms freshness window (refused as stale).
        assert set(st.rejected) <= {"stale"}, st
        assert st.accepted + st.rejected.get("stale", 0) == frames_per_link, st
        assert st.breaches_after_enforcement == 0
    report = inspect_log(log)
    assert report.ok, report.problems
    assert report.implant == "pair" and [r.label for r in report.arrays] == ["upper", "lower"]
    for row in report.arrays:
        assert row.n_frames == frames_per_link and row.frame_sequence_gaps == 0
        assert row.limit_breaches == 0
    assert report.implant_breaches == 0 and report.incomplete_bins == 0
    active = [sum(int((a > 0).sum()) for a in amps) for amps in seen]
    assert max(active) > 0  # the scene did stimulate
    assert max(active) <= 12  # the implant-wide simultaneous cap, across both arrays
    _, bins = read_implant_frames(log)
    limits = SafetyLimits()
    imp = load_implant(implant_path)
    assert all(check_implant(b, imp, limits) == [] for b in bins)
    rows = chain.link_delivery()
    assert [r.label for r in rows] == ["upper", "lower"]
    total = DeliverySummary.total([r.delivery for r in rows])
    assert total.received == 2 * frames_per_link and total.sent == 2 * frames_per_link
    assert total.accounted and all(r.delivery.lost == 0 for r in rows)


# -- the command line ---------------------------------------------------------------------

#: Marks this module's tests `cli` (tests/conftest.py): some drive `npe` in subprocesses.
DRIVES_CLI = True


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DISPLAY", None)
    env.pop("NPE_PROSTHESIS_MODE", None)
    return env


def _npe(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "npe_cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def toy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_bundle(
        tmp_path_factory.mktemp("bundle") / "toy", window_frames=10, height=24, width=24
    )


def test_an_implant_runs_through_the_live_session(tmp_path: Path, toy_bundle: Path) -> None:
    """`SessionPlan(implant=...)`: LiveSession opens the implant chain, and its outcome has
    one typed `LinkDelivery` row per array, their total, and no single-array snapshot."""
    from runtime.inference import SessionSettings
    from runtime.session import LiveSession, Pacing, SessionPlan
    from runtime.spec import load_model_spec

    spec = load_model_spec(toy_bundle)
    plan = SessionPlan(
        source="synthetic:bar",
        log_path=tmp_path / "run" / "audit.log",
        pacing=Pacing.AS_FAST_AS_POSSIBLE,
        stimulator=SimulatorMode.THREAD,
        implant=str(_implant_file(tmp_path / "pair.json")),
        handle_signals=False,
    )
    with LiveSession(spec, spec.pick_form(), SessionSettings(), plan) as s:
        assert s.chain.name == "pair"
        summary = s.run(max_bins=40)
    out = s.outcome
    assert summary.bins_total == 40
    sent = 40 - summary.counters.bins_dropped + 1  # + the final zero frame
    assert [r.label for r in out.links] == ["upper", "lower"]
    assert all(r.delivery.sent == sent and r.delivery.received == sent for r in out.links)
    assert out.stimulator is None
    assert out.delivery == DeliverySummary.total([r.delivery for r in out.links])
    assert out.delivery.sent == 2 * sent and out.delivery.lost == 0 and out.delivery.accounted
    assert out.link_stats.sent == 2 * sent  # the bus's link counters: every array's sends
    report = inspect_log(plan.log_path)
    assert report.ok and [r.n_frames for r in report.arrays] == [sent, sent]


def test_shipped_1024_electrode_implant_runs_end_to_end(tmp_path: Path, toy_bundle: Path) -> None:
    log = tmp_path / "run" / "audit.log"
    proc = _npe(
        "run", "--bundle", str(toy_bundle), "--implant", "utah16x64",
        "--source", "synthetic:bar", "--duration", "0.5", "--as-fast-as-possible",
        "--log", str(log), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((log.parent / "summary.json").read_text())
    assert summary["extra"]["array"] == "utah16x64"
    assert summary["extra"]["stimulator"] is None  # one stimulator per array: see links
    links = summary["extra"]["links"]
    assert len(links) == 16 and len({row["link"] for row in links}) == 16
    bins = summary["bins_total"] - summary["counters"]["bins_dropped"] + 1
    assert bins == 51  # 50 bins on the virtual clock, and the final zero frame
    for row in links:  # one frame per link per bin, every one received
        assert row["delivery"]["sent"] == bins and row["delivery"]["received"] == bins, row
    assert summary["extra"]["delivery"]["sent"] == 16 * bins
    assert sum(1 for ln in proc.stderr.splitlines() if ln.startswith("  left-")) == 8
    inspected = _npe("log", "inspect", str(log), "--json", cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    report = json.loads(inspected.stdout)
    assert report["ok"] and len(report["arrays"]) == 16
    assert all(r["n_frames"] == bins for r in report["arrays"])
    assert report["implant_breaches"] == 0 and report["limit_breaches"] == 0
    table = _npe("log", "inspect", str(log), cwd=tmp_path)
    assert "right-16" in table.stdout and "total" in table.stdout
    video = tmp_path / "p.avi"
    prev = _npe("preview", str(log), "--out", str(video), "--size", "96", cwd=tmp_path)
    assert prev.returncode == 0, prev.stderr[-2000:]
    info = json.loads((tmp_path / "p.avi.json").read_text())
    assert info["electrodes"] == 1024 and info["frames"] == bins


def _calibration(path: Path, ids: list[str], arrays: tuple[str, ...]) -> Path:
    cal = PatientCalibration(
        version=CALIBRATION_VERSION,
        patient_id="P7",
        arrays=arrays,
        electrodes=tuple(
            ElectrodeCalibration(
                electrode_id=i, threshold_ua=20.0, max_comfortable_ua=60.0, phosphene_deg=(2, 0)
            )
            for i in ids
        ),
    )
    return save_calibration(cal, path)


@pytest.mark.parametrize(
    ("ids", "arrays", "message"),
    [
        (["utah64-01"], ("pair",), "lack their array label"),
        (["upper:utah64-01", "lower:nope"], ("pair",), "unknown to implant 'pair'"),
        (["upper:utah64-01"], ("pair",), "lists no electrode of 1 array"),
        (["upper:utah64-01", "lower:utah64-01"], ("utah96",), "not implant 'pair'"),
    ],
)
def test_npe_run_refuses_a_calibration_that_does_not_fit_the_implant(
    tmp_path: Path, toy_bundle: Path, ids: list[str], arrays: tuple[str, ...], message: str
) -> None:
    imp = _implant_file(tmp_path / "pair.json")
    cal = _calibration(tmp_path / "cal.json", ids, arrays)
    log = tmp_path / "run" / "audit.log"
    proc = _npe(
        "run", "--bundle", str(toy_bundle), "--implant", str(imp), "--calibration", str(cal),
        "--source", "synthetic:bar", "--duration", "0.2", "--log", str(log), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not log.exists()


@pytest.mark.parametrize(
    "extra",
    [["--array", "utah96"], ["--link", "udp://127.0.0.1:9"], None],
)
def test_npe_run_implant_flags_that_exclude_each_other(
    tmp_path: Path, extra: list[str] | None
) -> None:
    args = ["run", "--implant-links"] if extra is None else ["run", "--implant", "utah16x64"]
    proc = _npe(*args, *(extra or []), "--duration", "0.1", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (tmp_path / "npe-runs").exists()


def test_signed_package_of_an_implant_runs(tmp_path: Path, toy_bundle: Path) -> None:
    from runtime.package import extract_package, generate_keypair

    kid = generate_keypair(tmp_path / "keys")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / f"{kid}.pub").write_bytes((tmp_path / "keys" / f"{kid}.pub").read_bytes())
    imp = _implant_file(tmp_path / "pair.json")
    cal = _calibration(
        tmp_path / "cal.json", [qualify("upper", "utah64-01"), qualify("lower", "utah64-02")],
        ("pair",),
    )  # fmt: skip
    pkg = tmp_path / "p.npepkg"
    key = str(tmp_path / "keys" / f"{kid}.key")
    both = _npe(
        "deploy", "build", "--bundle", str(toy_bundle), "--implant", str(imp), "--array",
        "utah96", "--key", key, "--out", str(pkg), cwd=tmp_path,
    )  # fmt: skip
    assert both.returncode == 2 and not pkg.exists()
    built = _npe(
        "deploy", "build", "--bundle", str(toy_bundle), "--implant", str(imp),
        "--calibration", str(cal), "--key", key, "--out", str(pkg), "--camera-fov-deg", "40",
        cwd=tmp_path,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    ext = extract_package(pkg, trusted)
    assert ext.array is None and ext.implant is not None
    assert load_implant(ext.implant).labels == ("upper", "lower")
    log = tmp_path / "run" / "audit.log"
    proc = _npe(
        "run", "--package", str(pkg), "--trusted-keys", str(trusted), "--source",
        "synthetic:bar", "--duration", "0.3", "--log", str(log), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = inspect_log(log)
    assert report.ok and report.implant == "pair" and len(report.arrays) == 2
    assert report.events_by_kind.get("package_verified") == 1
