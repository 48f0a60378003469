"""Model interface tests: registry, causality, streaming equivalence, rate maps, `npe models`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from encoder.models import MODEL_REGISTRY, ModelConfigError, RetinaModel, build_model

FRAME = (16, 16)
WINDOW = 8
RATE_HZ = 100.0
WINDOW_MS = WINDOW * 1000.0 / RATE_HZ  # 80 ms = 8 frames at 100 Hz
N_CELLS = 3
WINDOW_TINY_DATA = 5  # window of test_models_data's 20 Hz recordings

#: YADLRetina's dense layout of `cnn-lstm` (the default before 2026-12-04: now the map layout).
YADL: dict[str, Any] = {"readout": "dense", "padding": "valid", "pool": 1}

#: Tiny configs so every model runs on 16×16 frames in milliseconds.
TINY: dict[str, dict[str, Any]] = {
    "single-cnn": {"window_ms": WINDOW_MS, "kernel1": 5, "kernel2": 3},
    # LSTM over 40 ms = 4 of the 8 frames: layer 1 filters over the other 5 frames in time
    "cnn-lstm": {
        "window_ms": WINDOW_MS,
        "kernel1": 5,
        "kernel2": 3,
        "hidden": 8,
        "dropout": 0.0,
        "lstm_ms": 40.0,
    },
    "deep-retina": {
        "window_ms": WINDOW_MS,
        "kernel1": 5,
        "kernel2": 3,
        "filters1": 4,
        "filters2": 4,
    },
    "fullyconv": {
        "window_ms": WINDOW_MS,
        "kernel1": 5,
        "kernel2": 3,
        "filters1": 4,
        "filters2": 4,
        "n_types": 3,
    },
    "ln": {"window_ms": WINDOW_MS},
    "streaming": {
        "window_ms": WINDOW_MS,
        "kernel1": 5,
        "kernel2": 3,
        "spatial1": 3,
        "channels1": 3,
        "spatial2": 3,
        "channels2": 3,
        "temporal2_ms": 30.0,
        "n_types": 3,
    },
}


def tiny_model(name: str, seed: int = 0) -> RetinaModel:
    torch.manual_seed(seed)
    model = build_model(name, TINY[name], N_CELLS, FRAME, RATE_HZ)
    if name == "ln":  # give the closed-form model non-trivial filters
        with torch.no_grad():
            model.readout.filters.normal_()  # type: ignore[operator]
    return model.eval()


def test_registry_has_every_model_of_the_issue() -> None:
    assert set(MODEL_REGISTRY) == {
        "single-cnn",
        "cnn-lstm",
        "deep-retina",
        "fullyconv",
        "streaming",
        "ln",
    }
    assert set(TINY) == set(MODEL_REGISTRY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_output_shape_and_nonnegative(name: str) -> None:
    model = tiny_model(name)
    out = model(torch.randn(4, WINDOW, *FRAME))
    assert out.shape == (4, N_CELLS)
    assert bool((out >= 0).all())
    if name == "single-cnn":
        assert bool((out <= 1).all())


@pytest.mark.parametrize("name", sorted(TINY))
def test_causality_future_frames_never_change_earlier_outputs(name: str) -> None:
    """Perturb frame k of a chunk: predictions for frames < k must not move; frame k's must."""
    model = tiny_model(name)
    torch.manual_seed(1)
    x = torch.randn(2, WINDOW + 12, *FRAME)
    k = WINDOW + 5
    x2 = x.clone()
    x2[:, k] += 3.0 * torch.randn(2, *FRAME)
    with torch.no_grad():
        a, b = model.forward_chunk(x), model.forward_chunk(x2)
    first_changed = k - (WINDOW - 1)  # chunk output j predicts frame j + T − 1
    assert torch.equal(a[:, :first_changed], b[:, :first_changed])
    assert not torch.allclose(a[:, first_changed], b[:, first_changed])
    if model.stateful:
        with torch.no_grad():
            sa, sb = model.forward_sequence(x), model.forward_sequence(x2)  # type: ignore[operator]
        assert torch.equal(sa[:, :k], sb[:, :k])


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_chunk_equals_forward_on_each_window(name: str) -> None:
    model = tiny_model(name)
    x = torch.randn(2, WINDOW + 4, *FRAME)
    with torch.no_grad():
        chunk = model.forward_chunk(x)
        for j in range(5):
            torch.testing.assert_close(
                chunk[:, j], model(x[:, j : j + WINDOW]), atol=1e-5, rtol=1e-4
            )


def test_streaming_step_by_step_equals_full_window() -> None:
    model = tiny_model("streaming")
    torch.manual_seed(2)
    n = WINDOW + 10
    x = torch.randn(2, n, *FRAME)
    state = model.init_state(2)  # type: ignore[operator]
    outs = []
    with torch.no_grad():
        for t in range(n):
            out, state = model.step(x[:, t], state)  # type: ignore[operator]
            outs.append(out)
        stepped = torch.stack(outs, 1)
        torch.testing.assert_close(stepped, model.forward_sequence(x), atol=1e-5, rtol=1e-4)  # type: ignore[operator]
        for t in range(WINDOW - 1, n):
            torch.testing.assert_close(
                stepped[:, t], model(x[:, t - WINDOW + 1 : t + 1]), atol=1e-5, rtol=1e-4
            )
    # the state's size is fixed: it does not grow with the number of frames processed
    assert [tuple(s.shape) for s in state] == [tuple(s.shape) for s in model.init_state(2)]  # type: ignore[operator]


def test_streaming_step_maps_equal_forward_maps_on_other_frame_size() -> None:
    model = tiny_model("streaming")
    x = torch.randn(1, WINDOW + 2, 20, 27)
    state = model.init_state(1, (20, 27))  # type: ignore[operator]
    with torch.no_grad():
        for t in range(x.shape[1]):
            maps, state = model.step_maps(x[:, t], state)  # type: ignore[operator]
        torch.testing.assert_close(maps, model.forward_maps(x[:, -WINDOW:]), atol=1e-5, rtol=1e-4)  # type: ignore[operator]


def _steps_equal_the_sequence(model: Any, x: torch.Tensor) -> tuple[list[torch.Tensor], Any]:
    """Run `model.step` over x [B, N, H, W] from its initial state; assert the outputs equal
    `forward_sequence(x)`; return them and the final state."""
    state = model.init_state(x.shape[0])
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            out, state = model.step(x[:, t], state)
            outs.append(out)
        torch.testing.assert_close(
            torch.stack(outs, 1), model.forward_sequence(x), atol=1e-5, rtol=1e-4
        )
    return outs, state


@pytest.mark.parametrize("layout", ["map", "dense"])
@pytest.mark.parametrize("lstm_steps", [4, WINDOW])
def test_cnn_lstm_step_equals_forward_sequence(lstm_steps: int, layout: str) -> None:
    torch.manual_seed(0)
    config = {**TINY["cnn-lstm"], "lstm_ms": lstm_steps * 1000.0 / RATE_HZ}
    if layout == "dense":
        config.update(YADL)
    model = build_model("cnn-lstm", config, N_CELLS, FRAME, RATE_HZ).eval()
    x = torch.randn(2, WINDOW + 3, *FRAME)
    outs, state = _steps_equal_the_sequence(model, x)
    with torch.no_grad():
        if lstm_steps >= WINDOW:
            # purely spatial layer 1: within the first window the continuous LSTM equals the
            # windowed forward
            torch.testing.assert_close(outs[WINDOW - 1], model(x[:, :WINDOW]), atol=1e-5, rtol=1e-4)
    # the state is (h, c) plus, with a temporal stage, the cache of the last T − lstm_steps
    # spatial responses; its size is fixed whatever the number of frames processed
    shapes = [tuple(s.shape) for s in state]
    assert shapes == [tuple(s.shape) for s in model.init_state(2)]  # type: ignore[operator]
    # dense: h, c [B, hidden 8], valid convs; map: [B, 8×8 places (16 px / pool 2), 16], 'same'
    h1 = FRAME[0] - TINY["cnn-lstm"]["kernel1"] + 1 if layout == "dense" else FRAME[0]
    expected = [(2, 8), (2, 8)] if layout == "dense" else [(2, 64, 16), (2, 64, 16)]
    if lstm_steps < WINDOW:
        expected.append((2, 8, WINDOW - lstm_steps, h1, h1))  # 8 = default filters1
    assert shapes == expected
    assert list(model.state_names()) == ["lstm_h", "lstm_c", "cache1"][: len(expected)]  # type: ignore[operator]


def test_cnn_lstm_lstm_ms_sets_the_temporal_stage() -> None:
    """Layer 1's temporal filter spans T − L + 1 frames (L = lstm_ms in frames); an LSTM
    history ≥ the window gives the purely spatial layout; lstm_ms ≤ 0 is refused by name."""
    torch.manual_seed(0)
    model = build_model("cnn-lstm", TINY["cnn-lstm"], N_CELLS, FRAME, RATE_HZ).eval()
    assert model.temporal1 == WINDOW - 4 + 1  # type: ignore[attr-defined]
    assert model.time1 is not None  # type: ignore[attr-defined]
    spatial = build_model(
        "cnn-lstm", {**TINY["cnn-lstm"], "lstm_ms": 990.0}, N_CELLS, FRAME, WINDOW
    )
    assert spatial.time1 is None  # type: ignore[attr-defined]
    with pytest.raises(ModelConfigError, match="lstm_ms"):
        build_model("cnn-lstm", {**TINY["cnn-lstm"], "lstm_ms": 0}, N_CELLS, FRAME, RATE_HZ)


def test_cnn_lstm_pool_shrinks_the_input_projection_and_keeps_the_step_form() -> None:
    """`pool` averages layer 2's responses before the LSTM's input projection: its fan-in
    falls by pool² (16×16 frames, kernels 5 and 3: 10×10 → 5×5), the step form still equals
    the continuous sequence, and a pool wider than the responses is refused by name (the
    dense layout, where the projection reads the whole map)."""
    torch.manual_seed(0)
    dense = {**TINY["cnn-lstm"], **YADL}
    plain = build_model("cnn-lstm", dense, N_CELLS, FRAME, RATE_HZ).eval()
    pooled = build_model("cnn-lstm", {**dense, "pool": 2}, N_CELLS, FRAME, RATE_HZ)
    pooled = pooled.eval()
    fan_in = [m.core.lstm_input.in_features for m in (plain, pooled)]  # type: ignore[union-attr]
    assert fan_in == [12 * 10 * 10, 12 * 5 * 5]
    _steps_equal_the_sequence(pooled, torch.randn(2, WINDOW + 3, *FRAME))
    with pytest.raises(ModelConfigError, match="pool 11"):
        build_model("cnn-lstm", {**dense, "pool": 11}, N_CELLS, FRAME, RATE_HZ)


def test_cnn_lstm_temporal_stage_starts_as_the_spatial_layout() -> None:
    """Untrained, layer 1's temporal filter passes the newest frame through, so the model
    computes what the purely spatial layout with the same other weights computes (from
    random taps it did not learn white noise; cnn_lstm module docstring)."""
    torch.manual_seed(0)
    temporal = build_model("cnn-lstm", TINY["cnn-lstm"], N_CELLS, FRAME, RATE_HZ).eval()
    spatial = build_model(
        "cnn-lstm", {**TINY["cnn-lstm"], "lstm_ms": WINDOW_MS}, N_CELLS, FRAME, WINDOW
    ).eval()
    shared = {k: v for k, v in temporal.state_dict().items() if not k.startswith("core.time1.")}
    spatial.load_state_dict(shared)
    x = torch.randn(2, WINDOW + 4, *FRAME)
    with torch.no_grad():
        torch.testing.assert_close(
            temporal.forward_sequence(x),  # type: ignore[operator]
            spatial.forward_sequence(x),  # type: ignore[operator]
            atol=1e-6,
            rtol=1e-5,
        )


@pytest.mark.parametrize("name", ["fullyconv", "streaming"])
def test_rate_maps_tile_any_frame_size(name: str) -> None:
    model = tiny_model(name)
    for h, w in [(16, 16), (23, 40)]:
        maps = model.forward_maps(torch.randn(1, WINDOW, h, w))  # type: ignore[operator]
        ys, xs = model.map_grid(h, w)  # type: ignore[operator]
        assert maps.shape == (1, 3, len(ys), len(xs))
        assert ys[0] == 0 and ys[-1] <= h - 1 and xs[-1] <= w - 1
        assert bool((maps >= 0).all())
    assert len(model.type_labels()) == 3  # type: ignore[operator]
    assert set(model.type_polarity()) <= {-1, 0, 1}  # type: ignore[operator]


def test_type_labels_follow_the_cells_each_map_explains() -> None:
    model = tiny_model("fullyconv")
    with torch.no_grad():
        model.selector.type_logits.zero_()  # type: ignore[union-attr]
        model.selector.type_logits[0, 2] = 5.0  # type: ignore[index]
        model.selector.type_logits[1, 2] = 5.0  # type: ignore[index]
        model.selector.type_logits[2, 0] = 5.0  # type: ignore[index]
    labels = model.label_types_from_cells(["OFF sustained", "OFF sustained", "ON transient"])  # type: ignore[operator]
    assert labels[2] == "OFF sustained" and labels[0] == "ON transient"
    assert labels[1] == "type 1"


def test_cell_affine_starts_as_the_identity_and_moves_each_cell_alone() -> None:
    """The per-cell gain and offset start as the plain selector (same outputs, also on the
    softplus floor) and, once moved, change only their own cell, never the deployed maps."""
    torch.manual_seed(0)
    plain = build_model(
        "streaming", {**TINY["streaming"], "cell_affine": False}, N_CELLS, FRAME, RATE_HZ
    ).eval()
    affine = build_model(
        "streaming", {**TINY["streaming"], "cell_affine": True}, N_CELLS, FRAME, RATE_HZ
    ).eval()
    affine.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, WINDOW, *FRAME)
    torch.testing.assert_close(affine(x), plain(x), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        floor = affine.selector.cell_output(torch.zeros(1, N_CELLS))  # type: ignore[operator]
    assert bool(torch.isfinite(floor).all()) and float(floor.max()) < 1e-6
    with torch.no_grad():
        affine.selector.offset[1] = 1.0  # type: ignore[index]
    moved, base = affine(x), plain(x)
    torch.testing.assert_close(moved[:, [0, 2]], base[:, [0, 2]], rtol=1e-5, atol=1e-6)
    assert bool((moved[:, 1] > base[:, 1]).all())
    torch.testing.assert_close(affine.forward_maps(x), plain.forward_maps(x))  # type: ignore[operator]


def test_semantic_loss_is_lower_for_one_hot_selection() -> None:
    from encoder.models.readout import _softmax_semantic_loss

    uniform = _softmax_semantic_loss(torch.zeros(2, 5))
    peaked = _softmax_semantic_loss(torch.tensor([[8.0, 0, 0, 0, 0], [0, 0, 8.0, 0, 0]]))
    assert float(peaked) < 0.01 < float(uniform)
    # analytic value for a uniform distribution over n: −log(n · (1/n) · (1 − 1/n)^(n−1))
    n = 5
    assert float(uniform) == pytest.approx(-np.log((1 - 1 / n) ** (n - 1)), rel=1e-4)


def test_build_model_refuses_bad_names_and_configs() -> None:
    with pytest.raises(ModelConfigError, match="unknown model 'nope'"):
        build_model("nope", None, 1, FRAME, RATE_HZ)
    with pytest.raises(ModelConfigError, match="unknown config keys \\['hiden'\\]"):
        build_model("cnn-lstm", {"hiden": 3}, 1, FRAME, RATE_HZ)
    with pytest.raises(ModelConfigError, match="smaller than"):
        build_model("single-cnn", None, 1, FRAME, RATE_HZ)  # 15 + 5 px kernels on 16 px frames


def test_npe_models_lists_every_model_with_parameter_count(tmp_path: Path) -> None:
    from encoder.cli_models import app

    out = tmp_path / "models.json"
    result = CliRunner().invoke(app, ["models", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(out.read_text())["models"]}
    assert set(rows) == set(MODEL_REGISTRY)
    for name, row in rows.items():
        expected = build_model(name, None, row["n_cells"], (32, 32), 100.0).n_parameters()
        assert row["parameters"] == expected
        assert name in result.output
    # in YADLRetina's dense layout the population CNN-LSTM has the original's ~1.5M
    # parameters at the default input; the map layout (the default) about 1 % of that
    cells = rows["cnn-lstm"]["n_cells"]
    yadl = build_model("cnn-lstm", YADL, cells, (32, 32), 100.0).n_parameters()
    assert 1.3e6 < yadl < 1.7e6
    assert rows["cnn-lstm"]["parameters"] < 0.02 * yadl


@pytest.mark.parametrize("layout", ["map", "dense"])
def test_cnn_lstm_output_bias_starts_at_the_mean_count(layout: str) -> None:
    torch.manual_seed(0)
    config = {**TINY["cnn-lstm"], **(YADL if layout == "dense" else {})}
    model = build_model("cnn-lstm", config, N_CELLS, FRAME, RATE_HZ).eval()
    mean = np.array([0.05, 0.3, 2.0])
    model.init_output_bias(mean)  # type: ignore[operator]
    with torch.no_grad():  # with no features, the output is the bias alone
        start = model.readout(torch.zeros(1, *model.readout.feature_shape))[0].numpy()
    np.testing.assert_allclose(start, mean, rtol=1e-4)
    with pytest.raises(ValueError, match="3 finite non-negative"):
        model.init_output_bias(np.array([0.1, -1.0, 0.2]))  # type: ignore[operator]


def test_cnn_lstm_learns_white_noise_with_a_large_learning_step(tmp_path: Path) -> None:
    """Regression: the LSTM gates saturated before the model learned anything.

    Adam moves each weight by ~lr per step, so with a plain nn.Linear over many non-negative
    ReLU features a same-sign gradient moved every gate by lr·Σ|a| per step; the gates
    saturated, the LSTM state froze and the model stayed a constant predictor (PCC 0.00 on the
    benchmark's white noise). At this tiny scale (432 features, lr 1e-2) the old
    parametrisation reproduced it: validation PCC 0.00 after every epoch.
    """
    import importlib.util

    from encoder.train import TrainConfig, train

    spec = importlib.util.spec_from_file_location(
        "npe_models_testdata_lstm", Path(__file__).with_name("test_models_data.py")
    )
    assert spec is not None and spec.loader is not None
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    path = data.write_tiny(tmp_path / "white_noise.h5")  # 12×12 binary white noise, 3 cells
    config = TrainConfig(
        model="cnn-lstm",
        # the data's 20 Hz: default 250 ms window = 5 frames, LSTM over 200 ms = 4 of them
        model_config={**TINY["cnn-lstm"], "window_ms": 250.0, "lstm_ms": 200.0},
        lr=1e-2,
        batch_size=4,
        chunk_ms=800.0,  # 16 frames at 20 Hz
        max_epochs=4,  # ~500 Adam steps
        patience=10,
        threads=1,
    )
    result = train(path, tmp_path / "run", config)
    # a constant predictor has PCC 0 (NaN); the generator's structure allows ~0.6
    assert max(e.val_pcc for e in result.epochs) > 0.3
    rec = data.make_recording()
    a, b = rec.splits["train"][0]
    c, d = rec.splits["val"][0]
    val = rec.responses[c + WINDOW_TINY_DATA - 1 : d].astype(np.float64)
    mean = rec.responses[a:b].astype(np.float64).mean(0)
    constant = float(np.mean(mean - val * np.log(mean)))  # Poisson loss of the mean rate
    assert result.best_val_loss < constant - 0.02


@pytest.mark.parametrize("name", ["single-cnn", "cnn-lstm", "deep-retina"])
def test_frames_smaller_than_the_receptive_field_are_refused_by_name(name: str) -> None:
    with pytest.raises(
        ModelConfigError, match=rf"{name}: frames of \[12, 40\] px .* receptive field"
    ):
        config = YADL if name == "cnn-lstm" else None  # 'same' padding fits any frame
        build_model(name, config, n_cells=3, frame_shape=(12, 40), frame_rate_hz=100.0)


def _map_cnn_lstm(seed: int = 0, padding: str = "valid") -> RetinaModel:
    torch.manual_seed(seed)
    config = {**TINY["cnn-lstm"], "readout": "map", "map_hidden": 4, "padding": padding, "pool": 1}
    return build_model("cnn-lstm", config, N_CELLS, FRAME, RATE_HZ).eval()


@pytest.mark.parametrize(("padding", "side"), [("valid", 10), ("same", 16)])
def test_cnn_lstm_map_readout_keeps_every_form_equal_and_causal(padding: str, side: int) -> None:
    """The per-place LSTM and spatial readout: the features are a map [hidden, h, w] (16×16
    frames, kernels 5 and 3: 10×10 with valid convolutions, the frame's 16×16 with 'same'),
    chunks equal windows, steps equal the continuous sequence with a fixed-size state, and a
    future frame never changes an earlier output."""
    model = _map_cnn_lstm(padding=padding)
    assert model.core.feature_shape == (4, side, side)
    torch.manual_seed(1)
    x = torch.randn(2, WINDOW + 6, *FRAME)
    with torch.no_grad():
        chunk = model.forward_chunk(x)
        windows = torch.stack([model(x[:, j : j + WINDOW]) for j in range(7)], 1)
    torch.testing.assert_close(chunk, windows, atol=1e-5, rtol=1e-4)
    _, state = _steps_equal_the_sequence(model, x)
    assert [tuple(s.shape) for s in state[:2]] == [(2, side * side, 4)] * 2
    k = WINDOW + 3
    x2 = x.clone()
    x2[:, k] += 3.0
    with torch.no_grad():
        a, b = model.forward_chunk(x), model.forward_chunk(x2)
    first_changed = k - (WINDOW - 1)
    assert torch.equal(a[:, :first_changed], b[:, :first_changed])
    assert not torch.allclose(a[:, first_changed], b[:, first_changed])


def test_cnn_lstm_map_readout_reads_each_cell_at_its_own_place() -> None:
    """With each cell's mask on one map pixel, a cell's output depends only on the input
    pixels that pixel sees (its 7×7 receptive field: kernels 5 + 3 − 1), over the whole
    history: changing pixels outside it leaves the cell exactly as it was, while a cell whose
    place sees them moves. The dense readout (YADLRetina) mixes every place into every cell."""
    model = _map_cnn_lstm()
    places = [(0, 0), (9, 9), (5, 2)]  # map pixels; map (i, j) sees input rows i..i+6
    with torch.no_grad():
        model.readout.loc_logits.fill_(-1e4)  # type: ignore[operator]
        for c, (i, j) in enumerate(places):
            model.readout.loc_logits[c, i * 10 + j] = 0.0  # type: ignore[index]
    torch.manual_seed(2)
    x = torch.randn(1, WINDOW + 4, *FRAME)
    x2 = x.clone()
    x2[:, :, 12:, 12:] += 2.0  # seen by map pixel (9, 9) only among the three places
    with torch.no_grad():
        a, b = model.forward_chunk(x), model.forward_chunk(x2)
    assert torch.equal(a[..., 0], b[..., 0])
    assert torch.equal(a[..., 2], b[..., 2])
    assert not torch.allclose(a[..., 1], b[..., 1])
    torch.manual_seed(0)
    dense = build_model("cnn-lstm", {**TINY["cnn-lstm"], **YADL}, N_CELLS, FRAME, RATE_HZ).eval()
    with torch.no_grad():
        da, db = dense.forward_chunk(x), dense.forward_chunk(x2)
    assert not torch.allclose(da[..., 0], db[..., 0])


@pytest.mark.parametrize(
    ("padding", "pool", "offset_px"), [("valid", 1, 3.0), ("same", 1, 0.0), ("same", 2, 0.5)]
)
def test_cnn_lstm_map_readout_starts_at_each_cells_sta_peak(
    padding: str, pool: int, offset_px: float
) -> None:
    """`encoder.training.init.init_selector_from_sta` starts each cell's mask at its STA peak:
    on white noise from a hidden generator with known centres, each mask's peak sits within
    one input pixel (+ half a pooled pixel) of the cell's centre, with map pixel m centred on
    input pixel m·pool + offset (valid 5 px and 3 px kernels: 3 px; 'same': none; a 2×2 pool:
    half a pixel more); the output bias starts at the mean count."""
    import importlib.util

    from encoder.training.init import init_output_from_mean, init_selector_from_sta

    spec = importlib.util.spec_from_file_location(
        "npe_models_testdata_map", Path(__file__).with_name("test_models_data.py")
    )
    assert spec is not None and spec.loader is not None
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    rec = data.make_recording()  # 12×12 white noise at 20 Hz, 3 cells with known centres
    torch.manual_seed(0)
    config = {
        **TINY["cnn-lstm"],
        **{"readout": "map", "padding": padding, "pool": pool},
        **{"window_ms": 250.0, "lstm_ms": 100.0},
    }
    model = build_model("cnn-lstm", config, 3, rec.frame_shape, rec.frame_rate_hz)
    cells = np.arange(3)
    init_selector_from_sta(model, rec, cells)
    init_output_from_mean(model, rec, cells)
    _, w = model.core.map_shape  # type: ignore[union-attr]
    peak = model.readout.loc_logits.argmax(-1).numpy()  # type: ignore[operator]
    got = np.stack([peak // w, peak % w], 1) * float(pool) + offset_px
    size = rec.frame_shape[0]
    centre = rec.cells.center_deg.astype(np.float64)
    expected = np.stack(
        [
            -centre[:, 1] / rec.pixel_size_deg + (size - 1) / 2,
            centre[:, 0] / rec.pixel_size_deg + (size - 1) / 2,
        ],
        1,
    )
    assert np.abs(got - expected).max() <= 1.0 + (pool - 1) / 2, (got, expected)
    a, b = rec.splits["train"][0]
    mean = rec.responses[a:b].astype(np.float64).mean(0)
    bias = F.softplus(model.readout.bias).detach().numpy()  # type: ignore[arg-type]
    np.testing.assert_allclose(bias, mean, rtol=1e-3)


def test_cnn_lstm_same_padding_needs_odd_kernels() -> None:
    """'same' padding centres each map pixel on an input pixel, which an even kernel cannot:
    refused by name rather than silently shifting every cell by half a pixel."""
    config = {**TINY["cnn-lstm"], "padding": "same", "kernel1": 4}
    with pytest.raises(ModelConfigError, match="padding 'same' needs odd kernel1 and kernel2"):
        build_model("cnn-lstm", config, N_CELLS, FRAME, RATE_HZ)
