"""Training: loss goes down and beats a constant predictor, seeds, resume, transfer, CLI."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from encoder.checkpoint import load_checkpoint
from encoder.losses import poisson_loss
from encoder.recording import read_recording
from encoder.train import TrainConfig, TrainError, TrainResult, train
from encoder.training.callbacks import Callback
from encoder.training.events import StepDone
from encoder.training.trainer import Trainer, evaluate_split, warm_ema_decay


def _load_helper():  # type: ignore[no-untyped-def]
    """The shared tiny-data helper, loaded by path (pytest runs with --import-mode=importlib)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "npe_models_testdata", Path(__file__).with_name("test_models_data.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_data = _load_helper()
TINY_SINGLE, TINY_STREAMING, write_tiny = _data.TINY_SINGLE, _data.TINY_STREAMING, _data.write_tiny


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("models_data") / "tiny_ln.h5")


def _cfg(**kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "model": "streaming",
        "model_config": TINY_STREAMING,
        "lr": 1e-2,
        "batch_size": 4,
        "chunk_ms": 800.0,  # 16 frames at the data's 20 Hz
        "max_epochs": 4,
        "patience": 10,
        "threads": 1,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_short_training_lowers_loss_and_beats_constant_predictor(
    tiny_path: Path, tmp_path: Path
) -> None:
    result = train(tiny_path, tmp_path / "run", _cfg())
    losses = [e.train_loss for e in result.epochs]
    assert losses[-1] < losses[0]
    rec = read_recording(tiny_path)
    a, b = rec.splits["train"][0]
    c, d = rec.splits["val"][0]
    mean_rate = rec.responses[a:b].astype(np.float32).mean(0)
    val = torch.from_numpy(rec.responses[c + 4 : d].astype(np.float32))  # frames with a full window
    constant = float(poisson_loss(torch.from_numpy(mean_rate).expand_as(val), val))
    assert result.best_val_loss < constant - 0.02
    assert max(e.val_pcc for e in result.epochs) > 0.3
    # best checkpoint, metrics per epoch in CSV and JSON
    assert load_checkpoint(tmp_path / "run").meta.epoch == result.best_epoch
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + len(result.epochs)
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]) == len(
        result.epochs
    )


def test_same_seed_same_weights_and_resume_continues(tiny_path: Path, tmp_path: Path) -> None:
    a = train(tiny_path, tmp_path / "a", _cfg(max_epochs=2, seed=5))
    b = train(tiny_path, tmp_path / "b", _cfg(max_epochs=2, seed=5))
    c = train(tiny_path, tmp_path / "c", _cfg(max_epochs=2, seed=6))
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256
    resumed = train(tiny_path, tmp_path / "a", _cfg(max_epochs=3, seed=5, resume=True))
    assert [e.epoch for e in resumed.epochs] == [1, 2, 3]
    assert resumed.epochs[:2] == a.epochs
    full = train(tiny_path, tmp_path / "d", _cfg(max_epochs=3, seed=5))
    assert full.weights_sha256 == resumed.weights_sha256  # resuming = never having stopped


def test_lr_decays_when_validation_stalls_and_resume_keeps_it(
    tiny_path: Path, tmp_path: Path
) -> None:
    """With a rate too small to improve anything, every epoch after the first stalls, so the
    plateau rule halves the rate after each; the decayed rate survives --resume. (Without the
    per-cell affine: its two parameters per cell still improve the loss at that rate.)"""
    plain = {**TINY_STREAMING, "cell_affine": False}
    cfg = _cfg(model_config=plain, lr=1e-6, lr_decay=0.5, lr_decay_patience=0, max_epochs=3, seed=1)
    result = train(tiny_path, tmp_path / "a", cfg)
    lrs = [e.lr for e in result.epochs]
    assert lrs[0] == 1e-6 and lrs[1] == 1e-6  # epoch 1 improves on inf; epoch 2 stalls
    assert lrs[2] == pytest.approx(0.5e-6)
    resumed = train(
        tiny_path, tmp_path / "a", _cfg(**{**cfg.__dict__, "max_epochs": 4, "resume": True})
    )
    assert resumed.epochs[3].lr == pytest.approx(0.25e-6)
    constant = train(tiny_path, tmp_path / "b", _cfg(lr=1e-6, max_epochs=3, seed=1))
    assert {e.lr for e in constant.epochs} == {1e-6}  # the default keeps the rate
    with pytest.raises(TrainError, match="lr-decay"):
        train(tiny_path, tmp_path / "c", _cfg(lr_decay=1.5))


class _RawWeights(Callback):
    """The raw (optimiser-stepped) weights after every step, as the loop leaves them."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, trainer: Trainer, event: StepDone) -> None:
        self.steps.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in load_checkpoint(run).model.state_dict().items()}


def test_the_weight_average_is_what_is_validated_and_kept(tiny_path: Path, tmp_path: Path) -> None:
    """--ema-decay d: the checkpoint holds the running average of the raw weights over the
    steps (first step copied, then avg ← d_n·avg + (1 − d_n)·w with d_n = min(d, (1 + n) /
    (10 + n)) at the n-th update after it), computed from the raw weights each step leaves
    (so the average is never fed back into training); the epoch's validation loss is the
    average's, and train_config.json records the decay used."""
    raw = _RawWeights()
    result = train(
        tiny_path, tmp_path / "a", _cfg(max_epochs=1, seed=3, ema_decay=0.5), callbacks=[raw]
    )
    assert len(raw.steps) >= 3
    expected = dict(raw.steps[0])
    for n, w in enumerate(raw.steps[1:], start=1):
        d = min(0.5, (1 + n) / (10 + n))  # the warm-up ramp, then the decay asked for
        expected = {k: d * expected[k] + (1 - d) * w[k] for k in w}
    kept = _weights(tmp_path / "a")
    for k, v in expected.items():
        torch.testing.assert_close(kept[k], v, rtol=1e-5, atol=1e-6)
    last = raw.steps[-1]
    assert any(not torch.allclose(kept[k], last[k]) for k in last)  # not the last raw weights
    rec = read_recording(tiny_path)
    cfg = load_checkpoint(tmp_path / "a")
    val_loss, _ = evaluate_split(
        cfg.model, rec, "val", np.arange(rec.n_cells), poisson_loss, "cpu", 16
    )
    assert val_loss == pytest.approx(result.epochs[0].val_loss, rel=1e-5)
    recorded = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert recorded["ema_decay"] == 0.5
    # Off means off: the checkpoint is then the last raw weights.
    raw_off = _RawWeights()
    train(tiny_path, tmp_path / "b", _cfg(max_epochs=1, seed=3, ema_decay=0.0), callbacks=[raw_off])
    off = _weights(tmp_path / "b")
    for k, v in raw_off.steps[-1].items():
        torch.testing.assert_close(off[k], v)
    with pytest.raises(TrainError, match="ema-decay"):
        train(tiny_path, tmp_path / "c", _cfg(ema_decay=1.0))


def test_a_short_run_keeps_an_average_near_its_last_weights_not_its_start(
    tiny_path: Path, tmp_path: Path
) -> None:
    """With the warm-up ramp a run of a few epochs at the default 0.995 keeps a model as good
    on validation as its raw weights (within 5 % of the loss); a constant 0.995 from the
    first step would have kept most of the initial weights (`warm_ema_decay`'s reason)."""
    assert warm_ema_decay(0.995, 0) == pytest.approx(0.1)
    assert warm_ema_decay(0.995, 5000) == 0.995
    averaged = train(tiny_path, tmp_path / "a", _cfg(seed=3))  # streaming's own default
    recorded = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert recorded["ema_decay"] == 0.995
    raw = train(tiny_path, tmp_path / "b", _cfg(seed=3, ema_decay=0.0))
    assert averaged.best_val_loss < 1.05 * raw.best_val_loss, (averaged, raw)


def test_resume_continues_the_weight_average(tiny_path: Path, tmp_path: Path) -> None:
    """The average is part of train_state.pt: 2 epochs + --resume to 3 keep the same
    checkpoint, epochs and final raw weights as 3 epochs at once."""
    cfg = _cfg(max_epochs=2, seed=4, ema_decay=0.9, patience=10)
    train(tiny_path, tmp_path / "a", cfg)
    resumed = train(
        tiny_path, tmp_path / "a", _cfg(**{**cfg.__dict__, "max_epochs": 3, "resume": True})
    )
    full = train(tiny_path, tmp_path / "b", _cfg(**{**cfg.__dict__, "max_epochs": 3}))

    def scores(r: TrainResult) -> list[tuple[float, float, float]]:
        return [(e.train_loss, e.val_loss, e.val_pcc) for e in r.epochs]

    assert scores(resumed) == scores(full)
    assert resumed.weights_sha256 == full.weights_sha256
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_weight_decay_shrinks_the_weights_and_is_refused_out_of_range(
    tiny_path: Path, tmp_path: Path
) -> None:
    """--weight-decay trains with AdamW's decoupled decay: from the same seed, the decayed
    run ends with a smaller weight norm than plain Adam's; a decay ≥ 1 is refused by name."""

    def norm(run: Path) -> float:
        model = load_checkpoint(run).model
        return float(sum(p.detach().pow(2).sum() for p in model.parameters()) ** 0.5)

    train(tiny_path, tmp_path / "plain", _cfg(max_epochs=2, seed=2))
    train(tiny_path, tmp_path / "decay", _cfg(max_epochs=2, seed=2, weight_decay=0.9))
    plain, decayed = norm(tmp_path / "plain"), norm(tmp_path / "decay")
    assert decayed < 0.999 * plain, (plain, decayed)
    with pytest.raises(TrainError, match="weight-decay"):
        train(tiny_path, tmp_path / "bad", _cfg(weight_decay=1.0))


def test_init_from_with_frozen_core_keeps_conv_layers(tiny_path: Path, tmp_path: Path) -> None:
    cfg = _cfg(model="single-cnn", model_config=TINY_SINGLE, max_epochs=1)
    train(tiny_path, tmp_path / "base", cfg)
    base = load_checkpoint(tmp_path / "base").model
    train(
        tiny_path,
        tmp_path / "transfer",
        _cfg(
            model="single-cnn",
            model_config=TINY_SINGLE,
            max_epochs=2,
            cells=(2,),
            init_from=str(tmp_path / "base"),
            freeze="core",
            seed=1,
        ),
    )
    new = load_checkpoint(tmp_path / "transfer").model
    assert new.n_cells == 1
    assert torch.equal(new.core.conv1.weight, base.core.conv1.weight)  # type: ignore[union-attr]
    assert torch.equal(new.core.conv2.weight, base.core.conv2.weight)  # type: ignore[union-attr]
    assert new.readout.linear.weight.shape != base.readout.linear.weight.shape  # type: ignore[union-attr]
    with pytest.raises(TrainError, match="--freeze core needs --init-from"):
        train(tiny_path, tmp_path / "x", _cfg(freeze="core"))


def test_ln_baseline_fits_in_closed_form(tiny_path: Path, tmp_path: Path) -> None:
    result = train(tiny_path, tmp_path / "ln", _cfg(model="ln", model_config={}))
    assert result.stopped == "closed-form"
    assert result.epochs[0].val_pcc > 0.3  # the generator is LN: its STA model must fit it


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_requested_without_gpu_is_a_clear_error(tiny_path: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="no CUDA GPU is available"):
        train(tiny_path, tmp_path / "gpu", _cfg(device="cuda"))


def test_cli_train_then_evaluate(tiny_path: Path, tmp_path: Path) -> None:
    from encoder.cli_models import app

    runner = CliRunner()
    run = tmp_path / "cli_run"
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(tiny_path),
            "--model",
            "streaming",
            "--out",
            str(run),
            "--max-epochs",
            "2",
            "--lr",
            "0.01",
            "--chunk-ms",
            "1600",
            "--threads",
            "1",
            "--model-config",
            json.dumps(TINY_STREAMING),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((run / "train_summary.json").read_text())["epochs"] == 2
    out = tmp_path / "eval.json"
    res = runner.invoke(
        app,
        ["evaluate", str(run), "--data", str(tiny_path), "--json", str(out), "--smooth-ms", "0"],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads(out.read_text())
    for key in ("mean_pcc", "per_cell_pcc", "mean_fev", "ceiling_pcc"):
        assert key in metrics
    assert len(metrics["per_cell_pcc"]) == 3
    assert 0.5 < metrics["ceiling_pcc"] <= 1.0  # the tiny recording has truth rates
    from encoder.evaluate import EvaluationResult

    result = EvaluationResult.model_validate(metrics)  # the JSON is the typed result
    assert len(result.per_cell_gain) == len(result.per_cell_mean_rate_error) == 3
    assert result.oracle_ceiling is not None and -1.0 <= result.oracle_ceiling <= 1.0
    assert result.split_half_ceiling is not None and result.split_half_ceiling <= 1.0
    assert result.n_cells_feve == sum(v is not None for v in result.per_cell_feve)
    for label in ("FEVE", "gain", "split-half", "oracle"):  # two narrow tables
        assert label in res.output
    bad_ratio = runner.invoke(
        app,
        ["evaluate", str(run), "--data", str(tiny_path), "--max-noise-ratio", "0", "--no-figures"],
    )
    assert bad_ratio.exit_code == 2 and "--max-noise-ratio" in bad_ratio.output
    for png in (
        "traces.png",
        "correlation_histogram.png",
        "first_layer_filters.png",
        "receptive_fields.png",
    ):
        assert (run / "figures" / png).stat().st_size > 1000
    bad = runner.invoke(
        app, ["train", "--data", str(tiny_path), "--model", "nope", "--out", str(tmp_path / "bad")]
    )
    assert bad.exit_code == 2
    assert "unknown model 'nope'" in bad.output
    assert "Traceback" not in bad.output


def test_cli_train_from_a_config_file_flags_override_and_the_effective_config_is_written(
    tiny_path: Path, tmp_path: Path
) -> None:
    """An experiment's setup kept in TOML: the file fills options, a flag wins, and the run
    directory gets the configuration it actually ran with, which reads back unchanged."""
    from encoder.cli_models import app
    from npe_config import CONFIG_FILE_NAME

    runner = CliRunner()
    run = tmp_path / "from_config"
    cfg = tmp_path / "experiment.toml"
    cfg.write_text(
        f'data = "{tiny_path}"\nmodel = "streaming"\nout = "{run}"\nmax-epochs = 3\n'
        f"lr = 0.01\nchunk-ms = 320.0\nthreads = 1\nmodel-config = '{json.dumps(TINY_STREAMING)}'\n"
    )
    res = runner.invoke(app, ["train", "--config", str(cfg), "--max-epochs", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "train_summary.json").read_text())["epochs"] == 1
    written = tomllib.loads((run / CONFIG_FILE_NAME).read_text())
    assert written["max-epochs"] == 1 and written["lr"] == 0.01
    assert written["data"] == str(tiny_path) and "config" not in written
    assert json.loads(written["model-config"]) == TINY_STREAMING

    bad = tmp_path / "bad.toml"
    for text, needle in (
        ("learning-rate = 0.1\n", "unknown setting 'learning-rate'"),
        ("max-epochs = 'many'\n", "max-epochs"),
        ("max-epochs = [\n", "not valid TOML"),
    ):
        bad.write_text(text)
        res = runner.invoke(app, ["train", "--config", str(bad)])
        assert res.exit_code == 2, res.output
        assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"error: {bad}: ")
        assert needle in res.stderr
    bad.write_bytes(b"lr = 0.1 \xff\n")
    res = runner.invoke(app, ["train", "--config", str(bad)])
    assert res.exit_code == 2 and "not UTF-8" in res.stderr


def test_train_refuses_empty_train_split_before_writing(
    tiny_recording_path: Path, tmp_path: Path
) -> None:
    """Issue 16: a refused recording leaves no run directory (no train_config.json) behind."""
    import dataclasses

    rec = read_recording(tiny_recording_path)
    splits = dict(rec.splits)
    splits["train"] = np.zeros((0, 2), np.int64)
    empty = dataclasses.replace(rec, splits=splits)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainError, match="train split has no window"):
        train(tiny_recording_path, run_dir, _cfg(), recording=empty)
    assert not run_dir.exists()


def test_train_on_a_file_that_is_not_hdf5_is_one_error_line_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """A refused recording ends in exactly one line (no empty progress bar above it), exit
    code 2, and no run directory."""
    from encoder.cli_models import app

    bad = tmp_path / "junk.h5"
    bad.write_bytes(np.random.default_rng(0).bytes(3000))
    run_dir = tmp_path / "run"
    args = ["train", "--model", "streaming", "--data", str(bad), "--out", str(run_dir)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.stdout == "", res.stdout
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith(f"error: {bad}: not a readable HDF5 file")
    assert not run_dir.exists()


def test_train_cli_refuses_a_weight_average_out_of_range_in_one_line(
    tiny_path: Path, tmp_path: Path
) -> None:
    """`--ema-decay 1` would never move the average off the initial weights: one error line
    naming the option, exit code 2, no run directory."""
    from encoder.cli_models import app

    run_dir = tmp_path / "run"
    args = ["train", "--model", "streaming", "--data", str(tiny_path), "--out", str(run_dir)]
    res = CliRunner().invoke(app, [*args, "--ema-decay", "1"])
    assert res.exit_code == 2, res.output
    assert res.stderr.count("\n") == 1 and "--ema-decay must lie in [0, 1)" in res.stderr
    assert not run_dir.exists()
