"""runtime.bench.scale: the scaling table's measuring function on a few small cells (the
full table is `benchmarks/mapping/scale.py`)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.bench.scale import grid_field, implant_for, measure_cell, run_scale


def test_geometries_and_implants():
    pos, pol = grid_field(8192)
    assert pos.shape == (8192, 2) and set(np.unique(pol).tolist()) == {-1, 1}
    assert np.abs(pos).max() == pytest.approx(10.0)
    assert [implant_for(n).n_electrodes for n in (96, 384, 1024)] == [96, 384, 1024]
    with pytest.raises(ValueError, match="2 × a square"):
        grid_field(1000)
    with pytest.raises(ValueError, match="multiple of 64"):
        implant_for(100)


def test_a_cell_reports_kernel_and_general_costs():
    pos, pol = grid_field(2048)
    rates = np.random.default_rng(0).gamma(1.0, 40.0, (8, 2048)).astype(np.float32)
    cell = measure_cell(implant_for(96), pos, pol, rates, "grid", bins=50, warmup=5, general_bins=5)
    assert cell.electrodes == 96 and cell.rates == 2048 and cell.bins == 50
    assert 0 < cell.p50_ms <= cell.p99_ms
    assert cell.general_p50_ms > 0 and cell.kernel_share == 1.0
    assert cell.weight_nnz > 0


def test_run_scale_small_table_with_the_model_step():
    report = run_scale((96,), (2048,), bins=30, with_model=True)
    assert report.model_step_p50_ms is not None and report.model_step_p50_ms > 0
    assert [c.geometry for c in report.cells] == ["shipped bundle", "grid ±10°"]
    assert "shipped utah96 / model step (p50)" in report.ratios
    assert any(k.startswith("utah96 ≤ 0.3") for k in report.targets)


def test_npe_bench_scale_prints_the_table_and_writes_json(tmp_path):
    """`npe bench --scale`: every electrodes × rates cell and the shipped-bundle row, with the
    ratios to the model step measured in the same run, and whether each target is met."""
    import json

    from typer.testing import CliRunner

    from npe_cli import app

    out = tmp_path / "scale"
    res = CliRunner().invoke(app, ["bench", "--scale", "--scale-bins", "10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "scale.json").read_text())
    cells = {
        (c["electrodes"], c["rates"]) for c in doc["cells"] if c["geometry"] != "shipped bundle"
    }
    assert cells == {(e, r) for e in (96, 384, 1024) for r in (2048, 8192, 32768)}
    assert doc["model_step_p50_ms"] > 0
    assert any("model step" in k for k in doc["ratios"])
    assert "mapping + safety per bin" in res.output and "target" in res.output
    assert (out / "npe-config.toml").exists()
    # The model rows: the shipped bundle, a larger streaming and a cnn-lstm step bundle (built
    # by export with untrained weights), each with its step, its mapping and the verdict.
    models = {m["model"]: m for m in doc["models"]}
    assert [m["model"] for m in doc["models"]] == ["streaming", "streaming", "cnn-lstm"]
    shipped, larger = doc["models"][0], doc["models"][1]
    assert (shipped["rates"], larger["rates"], models["cnn-lstm"]["rates"]) == (2048, 8192, 64)
    assert larger["input_shape"] == [1, 64, 64] and larger["parameters"] > shipped["parameters"]
    assert models["cnn-lstm"]["parameters"] > 1_000_000
    for m in doc["models"]:
        assert 0 < m["step_p50_ms"] <= m["step_p99_ms"]
        assert m["worst_p99_ms"] == pytest.approx(m["step_p99_ms"] + m["map_1024_p99_ms"])
        assert m["fits_bin_with_margin"] == (m["worst_p99_ms"] <= 5.0)
    assert "fits 10 ms bin" in res.output
