"""Evaluation of a multi-session checkpoint: per session, pooled, and through `npe evaluate`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from encoder import evaluate as ev
from encoder.checkpoint import (
    load_checkpoint,
    load_multisession_checkpoint,
    make_multisession_meta,
    save_checkpoint,
)
from encoder.models.multisession import build_multisession_model
from encoder.recording import CellInfo, Recording, read_recording, write_recording
from npe_cli import app

pytestmark = pytest.mark.cli
runner = CliRunner()


def _load_helper() -> Any:
    """The shared tiny-data helper, loaded by path (pytest runs with --import-mode=importlib)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "npe_models_testdata_sessions", Path(__file__).with_name("test_models_data.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_data = _load_helper()


def _session_recording(seed: int, prefix: str, n_cells: int) -> Recording:
    """A tiny recording whose cells are `prefix`0.. (the first n_cells of the helper's 3)."""
    rec: Recording = _data.make_recording(n_frames=900, n_repeats=3, rep_frames=120, seed=seed)
    cells = CellInfo(
        ids=tuple(f"{prefix}{i}" for i in range(n_cells)),
        types=rec.cells.types[:n_cells],
        center_deg=rec.cells.center_deg[:n_cells],
    )
    assert rec.repeats is not None
    repeats = dataclasses.replace(
        rec.repeats,
        responses=np.ascontiguousarray(rec.repeats.responses[:, :, :n_cells]),
        truth_rates_hz=None
        if rec.repeats.truth_rates_hz is None
        else np.ascontiguousarray(rec.repeats.truth_rates_hz[:, :n_cells]),
    )
    truth = None if rec.truth_rates_hz is None else rec.truth_rates_hz[:, :n_cells]
    return dataclasses.replace(
        rec,
        responses=np.ascontiguousarray(rec.responses[:, :n_cells]),
        cells=cells,
        repeats=repeats,
        truth_rates_hz=None if truth is None else np.ascontiguousarray(truth),
    )


@pytest.fixture(scope="module")
def two_session_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sessions")
    recs = {"ret_a": _session_recording(0, "a", 3), "ret_b": _session_recording(1, "b", 2)}
    paths = {s: write_recording(r, root / f"{s}.h5") for s, r in recs.items()}
    torch.manual_seed(0)
    model = build_multisession_model(
        "streaming",
        _data.TINY_STREAMING,
        frame_shape=(12, 12),
        frame_rate_hz=_data.FRAME_RATE,
        cells_per_session={s: r.n_cells for s, r in recs.items()},
    )
    sessions = [
        {
            "name": s,
            "cells": {
                "ids": list(r.cells.ids),
                "types": list(r.cells.types),
                "center_deg": r.cells.center_deg.tolist(),
            },
            "pixel_size_deg": r.pixel_size_deg,
            "stimulus_kind": r.stimulus_kind,
            "data_path": str(paths[s]),
        }
        for s, r in recs.items()
    ]
    meta = make_multisession_meta(model, sessions, loss="poisson")
    run = save_checkpoint(root / "run", model, meta)
    return {"run": run, **paths}


def test_per_session_results_equal_each_views_evaluation_and_pool_all_cells(
    two_session_run: dict[str, Path],
) -> None:
    ckpt = load_multisession_checkpoint(two_session_run["run"])
    recs = {
        s: (str(two_session_run[s]), read_recording(two_session_run[s]))
        for s in ckpt.model.sessions
    }
    result, preds = ev.evaluate_sessions(ckpt, recs, smooth_ms=0)
    assert [r.session for r in result.sessions] == ["ret_a", "ret_b"]
    assert set(preds) == {"ret_a", "ret_b"}
    for r in result.sessions:
        alone, _ = ev.evaluate(
            load_checkpoint(two_session_run["run"], r.session), recs[r.session][1], smooth_ms=0
        )
        assert r.per_cell_pcc == alone.per_cell_pcc and r.cell_ids == alone.cell_ids
    pooled = result.pooled
    assert pooled.n_sessions == 2 and pooled.n_cells == 5
    every = [v for r in result.sessions for v in r.per_cell_pcc if v is not None]
    assert pooled.mean_pcc == pytest.approx(float(np.mean(every)))
    tests = [v for r in result.sessions for v in r.per_cell_test_pcc if v is not None]
    assert pooled.test_pcc == pytest.approx(float(np.mean(tests)))
    assert pooled.n_cells_feve == sum(r.n_cells_feve for r in result.sessions)
    assert pooled.ceiling_pcc is not None and 0 < pooled.ceiling_pcc <= 1
    again = ev.MultiSessionEvaluationResult.model_validate_json(result.to_json())
    assert again == result


def test_recordings_match_sessions_by_name_else_by_order(two_session_run: dict[str, Path]) -> None:
    a, b = read_recording(two_session_run["ret_a"]), read_recording(two_session_run["ret_b"])
    by_name = ev.match_sessions(("ret_a", "ret_b"), [("x/ret_b.h5", b), ("y/ret_a.h5", a)])
    assert list(by_name) == ["ret_a", "ret_b"] and by_name["ret_a"][1] is a
    subset = ev.match_sessions(("ret_a", "ret_b"), [("ret_b.h5", b)])
    assert list(subset) == ["ret_b"]
    by_order = ev.match_sessions(("ret_a", "ret_b"), [("one.h5", a), ("two.h5", b)])
    assert by_order["ret_b"][0] == "two.h5"
    named = dataclasses.replace(a, extra_attrs={"session": "ret_b"})
    assert list(ev.match_sessions(("ret_a", "ret_b"), [("one.h5", named)])) == ["ret_b"]
    with pytest.raises(ev.EvaluationError, match=r"named one match neither .*ret_a, ret_b"):
        ev.match_sessions(("ret_a", "ret_b"), [("one.h5", a)])


def test_npe_evaluate_prints_a_row_per_session_and_pooled(
    two_session_run: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(two_session_run["run"]),
            "--data",
            str(two_session_run["ret_b"]),
            "--data",
            str(two_session_run["ret_a"]),
            "--json",
            str(out),
            "--figures",
            str(tmp_path / "figs"),
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    for label in ("ret_a", "ret_b", "pooled"):
        assert label in res.output
    for session in ("ret_a", "ret_b"):  # each session's figures in its own directory
        for png in ("traces.png", "correlation_histogram.png", "receptive_fields.png"):
            assert (tmp_path / "figs" / session / png).stat().st_size > 1000
    result = ev.MultiSessionEvaluationResult.model_validate(json.loads(out.read_text()))
    assert [r.session for r in result.sessions] == ["ret_a", "ret_b"]
    assert result.pooled.n_cells == 5


def test_npe_evaluate_refuses_mismatched_recordings_in_one_line(
    two_session_run: dict[str, Path], tmp_path: Path
) -> None:
    other = _data.make_recording(n_frames=300, n_repeats=2, rep_frames=60, seed=3)
    wrong = write_recording(dataclasses.replace(other, frame_rate_hz=40.0), tmp_path / "ret_b.h5")
    out = tmp_path / "eval.json"
    args = ["evaluate", str(two_session_run["run"]), "--json", str(out), "--no-figures"]
    res = runner.invoke(app, [*args, "--data", str(wrong)])
    assert res.exit_code == 2
    assert "session 'ret_b'" in res.output and "40.0 Hz" in res.output
    assert "Traceback" not in res.output and not out.exists()
    res = runner.invoke(
        app,
        [*args, "--data", str(tmp_path / "ret_b.h5"), "--data", str(wrong), "--data", str(wrong)],
    )
    assert res.exit_code == 2 and "match neither" in res.output
