"""`npe run` end to end in subprocesses: defaults headless, SIGTERM, runtime without torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from support.toymodel import write_toy_bundle

from hardware.audit import inspect_log, read_frames
from runtime.bundle import default_bundle_path

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DISPLAY", None)  # headless, as in CI
    return env


#: Marks this module's tests `cli` (tests/conftest.py): it drives `npe` in subprocesses.
DRIVES_CLI = True


def _npe(*args: str) -> list[str]:
    return [sys.executable, "-m", "npe_cli", *args]


@pytest.fixture(scope="module")
def toy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_bundle(
        tmp_path_factory.mktemp("bundle") / "toy", window_frames=10, height=24, width=24
    )


def _check_log(log: Path) -> None:
    report = inspect_log(log)
    assert report.ok, report.problems
    assert report.n_frames > 10 and report.limit_breaches == 0
    assert report.events_by_kind.get("stop") == 1
    _, frames = read_frames(log)
    assert not np.any(frames[-1].active)  # the last frame written is zero stimulation


def test_npe_run_with_defaults_runs_headless_and_writes_a_log(
    tmp_path: Path, toy_bundle: Path
) -> None:
    """No camera in CI: the default source falls back to a synthetic scene; default log path."""
    args = ["run", "--duration", "2"]
    if not (default_bundle_path() / "manifest.json").is_file():
        args += ["--bundle", str(toy_bundle), "--camera-fov-deg", "40"]  # until one is shipped
    proc = subprocess.run(
        _npe(*args),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = list((tmp_path / "npe-runs").iterdir())
    assert len(runs) == 1
    _check_log(runs[0] / "audit.log")
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["source"] == "synthetic:bar" and summary["stop_reason"] == "duration reached"
    assert summary["counters"]["bins_done"] > 50
    stim = summary["extra"]["stimulator"]
    assert stim["accepted"] > 50  # frames reached the simulated stimulator
    # Delivery is reported: frames sent against received and accepted, with refusals named.
    sent = summary["extra"]["link_stats"]["sent"]
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("stimulator: "))
    assert f"{sent} frames sent, {stim['received']} received" in line
    assert f"{stim['accepted']} accepted" in line


def test_npe_run_from_a_patient_config_file_writes_its_effective_config(
    tmp_path: Path, toy_bundle: Path
) -> None:
    """A clinician's run setup in TOML; a flag overrides it; the run writes what it used."""
    log = tmp_path / "run" / "audit.log"
    cfg = tmp_path / "patient.toml"
    cfg.write_text(
        f'bundle = "{toy_bundle}"\nsource = "synthetic:bar"\ncamera-fov-deg = 40.0\n'
        f'duration = 30.0\nstimulator = "thread"\nlog = "{log}"\n'
    )
    proc = subprocess.run(
        _npe("run", "--config", str(cfg), "--duration", "1"),
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    _check_log(log)
    used = tomllib.loads((log.parent / "npe-config.toml").read_text())
    assert used["duration"] == 1.0 and used["stimulator"] == "thread"
    assert used["bundle"] == str(toy_bundle) and used["camera-fov-deg"] == 40.0
    summary = json.loads((log.parent / "summary.json").read_text())
    assert summary["stop_reason"] == "duration reached"


@pytest.mark.parametrize(
    "how",
    ["sigterm", "ctrl-c"],  # ctrl-c: SIGINT to the whole process group, as a terminal does
)
def test_stop_signal_during_run_leaves_a_complete_audit_log(
    tmp_path: Path, toy_bundle: Path, how: str
) -> None:
    """The run stops cleanly, and the simulated stimulator (a child process, in the same
    process group) lives to receive the final zero frame and report its stats."""
    log = tmp_path / "run" / "audit.log"
    proc = subprocess.Popen(
        _npe(
            "run",
            "--bundle",
            str(toy_bundle),
            "--source",
            "synthetic:noise",
            "--log",
            str(log),
            "--camera-fov-deg",
            "40",
        ),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so killpg reaches only this run
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 150_000):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    _check_log(log)
    summary = json.loads((log.parent / "summary.json").read_text())
    assert summary["stop_reason"] == "stop requested"
    stim = summary["extra"]["stimulator"]
    _, frames = read_frames(log)
    assert stim["accepted"] > 10
    assert stim["last_frame_sequence"] == frames[-1].sequence  # the final zero frame arrived
    assert stim["stimulating"] is False


BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "encoder", "export"):
                raise ImportError(f"blocked import of {name}: the runtime must not need it")
            return None
    sys.meta_path.insert(0, Block())
    """
)


def test_runtime_imports_and_runs_without_torch(tmp_path: Path, toy_bundle: Path) -> None:
    code = BLOCK_TORCH + textwrap.dedent(
        f"""
        import importlib, pkgutil, runtime
        live = [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]
        assert "runtime.bench.report" in live, live  # subpackages are walked too
        for name in live:
            importlib.import_module(name)
        from runtime.cli import app
        app(["run", "--bundle", {str(toy_bundle)!r}, "--source", "synthetic:bar",
             "--as-fast-as-possible", "--duration", "0.5", "--camera-fov-deg", "40",
             "--log", {str(tmp_path / "log" / "audit.log")!r}], standalone_mode=False)
        assert "torch" not in sys.modules
        print("imported", len(live), "modules")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported" in proc.stdout
    summary = json.loads((tmp_path / "log" / "summary.json").read_text())
    assert summary["bins_total"] == 50


def test_blocker_really_blocks_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + "import torch"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0 and "blocked import of torch" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "synthetic:plaid"], "unknown synthetic scene"),
        (
            ["--camera-fov-deg", "2", "--source", "synthetic:bar", "--duration", "1"],
            "check --camera-fov-deg",
        ),
    ],
)
def test_npe_run_bad_input_is_one_red_line_and_nonzero(
    tmp_path: Path, toy_bundle: Path, args: list[str], message: str
) -> None:
    proc = subprocess.run(
        _npe("run", "--bundle", str(toy_bundle), *args),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_npe_bench_witness_without_realtime_is_refused(tmp_path: Path, toy_bundle: Path) -> None:
    proc = subprocess.run(
        _npe("bench", "--bundle", str(toy_bundle), "--witness", "--out", str(tmp_path / "b")),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--witness needs --realtime" in proc.stderr
    assert not (tmp_path / "b").exists()  # refused before anything ran or was written
