"""`npe simulate`, `npe dataset info|validate` and `npe sta` through the real Typer app."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
from typer.testing import CliRunner

from encoder.recording import read_recording
from npe_cli import app

runner = CliRunner()


def test_simulate_writes_a_valid_recording_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "sim.h5"
    args = ["simulate", "--out", str(out), "--stimulus", "bars", "--duration-scale", "0.003"]
    args += ["--size", "16", "--seed", "4", "--repeats", "3", "--repeat-seconds", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rec = read_recording(out)
    assert rec.frame_shape == (16, 16) and rec.frame_rate_hz == 100.0
    assert rec.repeats is not None and rec.repeats.n_repeats == 3
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["n_frames"] == rec.n_frames and summary["config"]["stimulus"] == "bars"
    assert 0.0 < summary["ceiling_pcc_mean"] <= 1.0
    assert len(summary["ceiling_pcc_per_cell"]) == rec.n_cells


def test_simulate_refuses_a_bad_option(tmp_path: Path) -> None:
    out = tmp_path / "x.h5"
    result = runner.invoke(app, ["simulate", "--out", str(out), "--stimulus", "movies"])
    assert result.exit_code == 2
    assert "stimulus" in result.output and "natural" in result.output
    assert not out.exists()


def test_dataset_info_json_reports_correct_counts(tiny_recording_path: Path) -> None:
    result = runner.invoke(app, ["dataset", "info", str(tiny_recording_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    rec = read_recording(tiny_recording_path)
    assert info["n_frames"] == rec.n_frames == 1920
    assert info["n_cells"] == rec.n_cells
    assert sum(info["cell_types"].values()) == rec.n_cells
    assert {k: v["frames"] for k, v in info["splits"].items()} == {
        "train": 1500,
        "val": 210,
        "test": 210,
    }
    assert info["n_spikes"] == int(rec.responses.sum())
    assert info["repeats"] == {"n_repeats": 3, "frames": 200, "has_truth": True}
    assert info["has_truth"] is True
    table = runner.invoke(app, ["dataset", "info", str(tiny_recording_path)])
    assert table.exit_code == 0 and "1920 frames" in table.output


def test_dataset_validate_accepts_good_and_refuses_bad_files(
    tiny_recording_path: Path, tmp_path: Path
) -> None:
    ok = runner.invoke(app, ["dataset", "validate", str(tiny_recording_path)])
    assert ok.exit_code == 0 and "valid" in ok.output
    bad = tmp_path / "bad.h5"
    shutil.copy(tiny_recording_path, bad)
    with h5py.File(bad, "r+") as f:
        del f["splits/val"]
        f["splits/val"] = np.array([[100, 400]], np.int64)  # overlaps train
    result = runner.invoke(app, ["dataset", "validate", str(bad)])
    assert result.exit_code == 2
    assert "overlaps" in result.output and "/splits" in result.output
    assert "Traceback" not in result.output
    as_json = runner.invoke(app, ["dataset", "validate", str(bad), "--json"])
    assert as_json.exit_code == 2
    verdict = json.loads(as_json.stdout.splitlines()[0])
    assert verdict["valid"] is False and "overlaps" in verdict["reason"]
    with h5py.File(bad, "r+") as f:
        del f["responses"]
    shapes = runner.invoke(app, ["dataset", "validate", str(bad)])
    assert shapes.exit_code == 2
    assert "/responses: missing (expected [n_frames, n_cells] uint16)" in shapes.output
    missing = runner.invoke(app, ["dataset", "validate", str(tmp_path / "none.h5")])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_sta_command_writes_png_arrays_and_centres(
    tiny_whitenoise_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sta"
    result = runner.invoke(app, ["sta", str(tiny_whitenoise_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "sta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rec = read_recording(tiny_whitenoise_path)
    arrays = np.load(out / "sta.npz")
    assert arrays["sta"].shape == (rec.n_cells, 25, 16, 16)
    report = json.loads((out / "sta.json").read_text())
    assert [c["id"] for c in report["cells"]] == list(rec.cells.ids)
    assert all(c["center_error_px"] <= 1.0 for c in report["cells"])


def test_simulate_at_40_hz_natural_scenes_and_models_keep_their_durations(tmp_path: Path) -> None:
    """`npe simulate --frame-rate 40` works, and a model built for that recording keeps the
    CNN-LSTM's temporal stage (the 40 Hz failure of frame-counted hyper-parameters)."""
    from encoder.models import build_model

    out = tmp_path / "sim40.h5"
    args = ["simulate", "--out", str(out), "--stimulus", "natural", "--duration-scale", "0.003"]
    args += ["--size", "16", "--seed", "4", "--repeats", "2", "--repeat-seconds", "1"]
    result = runner.invoke(app, [*args, "--frame-rate", "40"])
    assert result.exit_code == 0, result.output
    rec = read_recording(out)
    assert rec.frame_rate_hz == 40.0
    assert rec.repeats is not None and rec.repeats.stimulus.shape[0] == 40  # 1 s at 40 Hz
    model = build_model("cnn-lstm", {"kernel1": 5, "kernel2": 3, "hidden": 4}, 2, (16, 16), 40.0)
    assert model.window_frames == 10 and model.temporal1 > 1  # type: ignore[attr-defined,operator]
