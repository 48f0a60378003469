"""One live session under `npe run` and `npe bench` (runtime.session.LiveSession).

Both commands are driven in-process (typer's runner) with the session's `open` and `run`
counted, and their results read back through their typed models: `RunSummary` for the run's
summary.json, `BenchReport` for bench.json.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.toymodel import write_toy_bundle
from typer.testing import CliRunner

from hardware.audit import TYPE_EVENT, Record, inspect_log, iter_records
from runtime.bench.models import BenchReport
from runtime.cli import app
from runtime.loop import RunSummary
from runtime.session import LiveSession, Pacing, SessionError, SessionPlan

#: Marks this module's tests `cli` (tests/conftest.py): they drive `npe` commands.
DRIVES_CLI = True


@pytest.fixture(scope="module")
def toy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_bundle(
        tmp_path_factory.mktemp("bundle") / "toy", window_frames=10, height=24, width=24
    )


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each LiveSession opened and run (by its pacing)."""
    seen: list[str] = []
    real_open, real_run = LiveSession.open, LiveSession.run

    def open_(self: LiveSession) -> LiveSession:
        seen.append(f"open {self.plan.pacing}")
        return real_open(self)

    def run(self: LiveSession, *a: object, **kw: object) -> RunSummary:
        seen.append(f"run {self.plan.pacing}")
        return real_run(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(LiveSession, "open", open_)
    monkeypatch.setattr(LiveSession, "run", run)
    return seen


def test_npe_run_goes_through_the_live_session(
    tmp_path: Path, toy_bundle: Path, sessions: list[str]
) -> None:
    log = tmp_path / "run" / "audit.log"
    res = CliRunner().invoke(
        app,
        ["run", "--bundle", str(toy_bundle), "--source", "synthetic:bar",
         "--as-fast-as-possible", "--duration", "0.3", "--camera-fov-deg", "40",
         "--stimulator", "thread", "--log", str(log)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert sessions == ["open as fast as possible", "run as fast as possible"]
    summary = RunSummary.model_validate_json((log.parent / "summary.json").read_text())
    assert summary.stop_reason == "duration reached" and summary.bins_total == 30
    assert summary.extra is not None
    d = summary.extra.delivery
    # 30 bins and the final zero frame, every one accepted; the counts add up.
    assert d.sent == 31 and d.accepted == 31 and d.lost == 0 and d.accounted
    stim = summary.extra.stimulator
    assert stim is not None and stim.accepted == 31 and stim.breaches_after_enforcement == 0
    assert inspect_log(log).ok
    assert (log.parent / "npe-config.toml").is_file()  # the effective config, as before
    # The log says which form mapped and encoded the frames (compiled or numpy).
    starts = [
        r.json()["detail"]
        for r in iter_records(log)
        if isinstance(r, Record) and r.rtype == TYPE_EVENT and r.json()["kind"] == "start"
    ]
    assert len(starts) == 1 and "live_path=compiled (numba " in starts[0], starts


def test_npe_bench_goes_through_the_live_session_and_writes_a_typed_report(
    tmp_path: Path, toy_bundle: Path, sessions: list[str]
) -> None:
    out = tmp_path / "bench"
    res = CliRunner().invoke(
        app,
        ["bench", "--bundle", str(toy_bundle), "--out", str(out), "--runs", "5",
         "--warmup", "1", "--bins", "40", "--paced-bins", "10", "--alloc-bins", "20",
         "--source", "synthetic:grating", "--camera-fov-deg", "40", "--stimulator", "thread"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    # The flood, the paced check and the allocation pass: three sessions, each opened once.
    assert sessions == [
        "open as fast as possible",
        "run as fast as possible",
        "open real time",
        "run real time",
        "open as fast as possible",
    ]
    report = BenchReport.model_validate_json((out / "bench.json").read_text())
    assert report.format == "npe.bench/2"
    assert report.end_to_end is not None and report.paced_check is not None
    for e2e in report.e2e_runs():
        d = e2e.delivery
        assert d.sent == (d.accepted or 0) + sum(d.rejected.values()) + (d.lost or 0)
    assert report.allocations is not None and report.allocations.bins == 20
    assert "target paced_zero_lost" in res.output and "target allocations" in res.output
    assert "frames sent" in res.output  # the delivery line of each run


def test_a_session_used_out_of_order_says_so(tmp_path: Path, toy_bundle: Path) -> None:
    from runtime.inference import SessionSettings
    from runtime.spec import load_model_spec

    spec = load_model_spec(toy_bundle)
    plan = SessionPlan(source="synthetic:bar", log_path=tmp_path / "a.log")
    s = LiveSession(spec, spec.pick_form(), SessionSettings(), plan)
    with pytest.raises(SessionError, match="not open"):
        s.run(max_bins=1)
    with pytest.raises(SessionError, match="never opened"):
        s.close()
    assert not (tmp_path / "a.log").exists()  # nothing was opened, nothing written
    # Pacing as fast as possible is refused for a camera before anything is opened.
    cam = SessionPlan(
        source="camera:99", log_path=tmp_path / "b.log", pacing=Pacing.AS_FAST_AS_POSSIBLE
    )
    with pytest.raises(Exception, match="as-fast-as-possible needs a file"):
        LiveSession(spec, spec.pick_form(), SessionSettings(), cam).open()
    assert not (tmp_path / "b.log").exists()
