"""Multi-session training, data side: one lazy dataset per session, batches tagged and
interleaved, validation per session, refusals naming the files, the repeatable --data flag.

The model is the real `encoder.models.multisession` (one shared core, a readout per session);
the last test runs the whole user path: train on two sessions, evaluate them, export one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from support.train_reference import cases
from typer.testing import CliRunner

from encoder.recording import Recording, write_recording
from encoder.train import EpochMetrics, StepDone, TrainConfig, TrainError, TrainEvent, train


def _recording(seed: int, session: str, n_frames: int = 1200) -> Recording:
    from support.train_reference import _helper as load

    rec: Recording = load().make_recording(n_frames=n_frames, seed=seed)
    return dataclasses.replace(rec, extra_attrs={"session": session})


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("sessions")
    a = write_recording(_recording(0, "retina-a"), d / "a.h5")
    b = write_recording(_recording(1, "retina-b", n_frames=1800), d / "b.h5")
    return a, b


def _cfg(**kw: object) -> TrainConfig:
    return TrainConfig(**{**cases()["streaming"], **kw})  # type: ignore[arg-type]


def test_two_sessions_share_a_core_with_one_readout_each(
    two_sessions: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[TrainEvent] = []
    result = train(list(two_sessions), tmp_path / "run", _cfg(), progress=events.append)
    assert result.sessions == ("retina-a", "retina-b")
    steps = [e for e in events if isinstance(e, StepDone)]
    epochs = [e for e in events if isinstance(e, EpochMetrics)]
    first = [s.session for s in steps if s.epoch == 1]
    # interleaved, not one session after the other; the larger session gets more steps
    assert set(first) == {"retina-a", "retina-b"}
    assert first != sorted(first) and first != sorted(first, reverse=True)
    for e in epochs:
        a, b = e.sessions
        assert (a.session, b.session) == ("retina-a", "retina-b")
        assert b.steps > a.steps > 0 and a.steps + b.steps == sum(s.epoch == e.epoch for s in steps)
        assert e.val_loss == pytest.approx(a.val_loss + b.val_loss)  # summed over sessions
        assert e.val_pcc == pytest.approx((a.val_pcc + b.val_pcc) / 2)
    # each session's best readout is an ordinary checkpoint with that session's cells
    for path, name in zip(two_sessions, result.sessions, strict=True):
        meta = json.loads((tmp_path / "run" / "sessions" / name / "checkpoint.json").read_text())
        assert meta["data_path"] == str(path.resolve()) and len(meta["cells"]["ids"]) == 3
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert config["data"] == [str(p) for p in two_sessions]
    again = train(list(two_sessions), tmp_path / "again", _cfg())
    assert again.weights_sha256 == result.weights_sha256  # seeded interleaving


def test_sessions_that_cannot_train_together_are_refused_naming_the_files(
    two_sessions: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = two_sessions
    fast = write_recording(
        dataclasses.replace(_recording(2, "fast"), frame_rate_hz=40.0), tmp_path / "fast.h5"
    )
    rec = _recording(3, "small")
    small = write_recording(
        dataclasses.replace(
            rec, stimulus=np.ascontiguousarray(rec.stimulus[:, :10, :10]), repeats=None
        ),
        tmp_path / "small.h5",
    )
    same = write_recording(_recording(4, "retina-a"), tmp_path / "same.h5")
    for other, needle in (
        (fast, "is at 40 Hz but"),
        (small, "has 10×10 px frames but"),
        (same, "are both session 'retina-a'"),
    ):
        with pytest.raises(TrainError, match=needle) as info:
            train([a, other], tmp_path / "x", _cfg())
        assert str(other) in str(info.value) and str(a) in str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(TrainError, match="--cells selects cells of one recording"):
        train(list(two_sessions), tmp_path / "x", _cfg(cells=(0,)))
    assert not (tmp_path / "x").exists()  # refused before writing


@pytest.mark.cli
def test_cli_repeatable_data_flag(
    two_sessions: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from encoder.cli_models import app

    a, b = two_sessions
    kw = cases()["streaming"]
    common = ["--model", "streaming", "--max-epochs", "1", "--threads", "1"]
    common += ["--model-config", json.dumps(kw["model_config"]), "--chunk-ms", "800"]
    runner = CliRunner()
    res = runner.invoke(
        app, ["train", "--data", str(a), "--data", str(b), "--out", str(tmp_path / "r"), *common]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "r" / "train_summary.json").read_text())
    assert summary["sessions"] == ["retina-a", "retina-b"] and summary["epochs"] == 1
    assert "retina-a r" in res.output  # per-session validation in the epoch line
    fast = write_recording(
        dataclasses.replace(_recording(2, "fast"), frame_rate_hz=40.0), tmp_path / "fast.h5"
    )
    res = runner.invoke(
        app, ["train", "--data", str(a), "--data", str(fast), "--out", str(tmp_path / "f"), *common]
    )
    assert res.exit_code == 2 and res.stderr.startswith("error: --data ")
    assert res.stderr.count("\n") == 1 and not (tmp_path / "f").exists()


@pytest.mark.cli
def test_config_file_lists_several_recordings(tmp_path: Path) -> None:
    """`data = [...]` in a TOML file fills the repeatable --data; one value stays a scalar."""
    import tomllib

    from npe_cli import app

    cfg = tmp_path / "two.toml"
    cfg.write_text('data = ["a.h5", "b.h5"]\nmodel = "streaming"\n')
    res = CliRunner().invoke(app, ["config", "show", "train", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    shown = tomllib.loads(res.stdout)
    assert shown["data"] == ["a.h5", "b.h5"] and shown["max-epochs"] == 100
    cfg.write_text('data = "a.h5"\n')
    res = CliRunner().invoke(app, ["config", "show", "train", "--config", str(cfg)])
    assert res.exit_code == 0 and tomllib.loads(res.stdout)["data"] == "a.h5"


def test_train_two_sessions_then_evaluate_each_and_export_one(
    two_sessions: tuple[Path, Path], tmp_path: Path
) -> None:
    """The user's path through the CLI: one shared-core checkpoint at the run directory,
    scored per session and pooled, and one session's cells exported to a bundle the runtime
    loads (a cell model: export without --session is refused, naming the sessions)."""
    from encoder.checkpoint import MultiSessionMeta, read_any_meta
    from npe_cli import app
    from runtime.spec import load_model_spec

    a, b = two_sessions
    run = tmp_path / "run"
    cfg = TrainConfig(**cases()["single-cnn-subset-decay"])  # type: ignore[arg-type]
    runner = CliRunner()
    args = ["train", "--data", str(a), "--data", str(b), "--out", str(run)]
    args += ["--model", cfg.model, "--model-config", json.dumps(cfg.model_config)]
    args += ["--max-epochs", "2", "--chunk-ms", str(cfg.chunk_ms), "--threads", "1"]
    trained = runner.invoke(app, args)
    assert trained.exit_code == 0, trained.output
    meta = read_any_meta(run)
    assert isinstance(meta, MultiSessionMeta)
    assert meta.session_names == ("retina-a", "retina-b")
    evaluated = runner.invoke(
        app, ["evaluate", str(run), "--data", str(a), "--data", str(b), "--no-figures"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "retina-a" in evaluated.output and "retina-b" in evaluated.output
    assert "pooled" in evaluated.output.lower()
    refused = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "retina-a" in refused.output
    assert not (tmp_path / "x").exists()
    exported = runner.invoke(
        app, ["export", str(run), "--session", "retina-b", "--out", str(tmp_path / "bundle")]
    )
    assert exported.exit_code == 0, exported.output
    spec = load_model_spec(tmp_path / "bundle")
    b_cells = next(s for s in meta.sessions if s.name == "retina-b").cells.ids
    assert spec.kind == "cells" and spec.ids == tuple(b_cells)
