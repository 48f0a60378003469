"""Multi-session models: one core shared by every session, one readout per session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.checkpoint import (
    CheckpointError,
    MultiSessionMeta,
    load_checkpoint,
    load_multisession_checkpoint,
    make_meta,
    make_multisession_meta,
    read_meta,
    save_checkpoint,
)
from encoder.models import ModelConfigError, build_model
from encoder.models.multisession import (
    MultiSessionModel,
    build_multisession_model,
    common_geometry,
)

SHAPE = (16, 16)
RATE = 100.0
CELLS = {"retina_a": 3, "retina_b": 2}
TINY = {
    "deep-retina": {"window_ms": 80.0, "kernel1": 5, "kernel2": 3, "filters1": 3, "filters2": 3},
    "cnn-lstm": {"window_ms": 80.0, "kernel1": 5, "kernel2": 3, "hidden": 8, "lstm_ms": 40.0},
    "streaming": {
        "window_ms": 80.0,
        "kernel1": 5,
        "kernel2": 3,
        "spatial1": 3,
        "channels1": 3,
        "spatial2": 3,
        "channels2": 3,
        "temporal2_ms": 30.0,
        "n_types": 3,
    },
    "ln": {"window_ms": 80.0},
}


def two_sessions(name: str = "deep-retina", seed: int = 0) -> MultiSessionModel:
    torch.manual_seed(seed)
    return build_multisession_model(
        name, TINY[name], frame_shape=SHAPE, frame_rate_hz=RATE, cells_per_session=dict(CELLS)
    )


def _cells(n: int, prefix: str) -> dict[str, object]:
    return {
        "ids": [f"{prefix}{i}" for i in range(n)],
        "types": ["ON transient"] * n,
        "center_deg": [[0.0, 0.0]] * n,
    }


def _sessions_meta() -> list[dict[str, object]]:
    return [
        {"name": s, "cells": _cells(n, s[-1]), "pixel_size_deg": 0.2, "stimulus_kind": "contrast"}
        for s, n in CELLS.items()
    ]


def test_interface_names_sessions_and_cells_in_training_order() -> None:
    model = two_sessions()
    assert model.sessions == ("retina_a", "retina_b")
    assert model.n_cells_per_session == CELLS
    x = torch.randn(2, 8, *SHAPE)
    assert model(x, "retina_a").shape == (2, 3)
    assert model(x, "retina_b").shape == (2, 2)
    assert model.forward_chunk(torch.randn(2, 12, *SHAPE), "retina_b").shape == (2, 5, 2)


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_chunk_equals_forward_on_each_window_per_session(name: str) -> None:
    model = two_sessions(name).eval()
    x = torch.randn(1, 11, *SHAPE)
    with torch.no_grad():
        chunk = model.forward_chunk(x, "retina_b")
        for j in range(chunk.shape[1]):
            torch.testing.assert_close(chunk[:, j], model(x[:, j : j + 8], "retina_b"))


def test_gradient_of_one_session_reaches_the_core_and_its_readout_only() -> None:
    model = two_sessions().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.randn(4, 8, *SHAPE), "retina_a").sum() + model.penalty()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "core." in n)
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "retina_a" in n)
    assert all(g is None for n, g in grads.items() if "retina_b" in n)
    opt.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any(k.startswith("core.") for k in changed)
    assert any(k.startswith("readouts.retina_a.") for k in changed)
    assert not any(k.startswith("readouts.retina_b.") for k in changed)


def test_penalty_after_switching_sessions_backpropagates() -> None:
    """A readout not run by the latest forward contributes no stale terms (freed graphs)."""
    model = two_sessions().train()
    for session in ("retina_a", "retina_b", "retina_a"):
        out = model(torch.randn(2, 8, *SHAPE), session)
        penalty = model.penalty()
        assert float(penalty.detach()) > 0
        (out.mean() + penalty).backward()


def test_session_model_is_a_view_sharing_parameters() -> None:
    model = two_sessions("streaming").eval()
    view = model.session_model("retina_b")
    assert type(view).__name__ == "StreamingModel" and view.n_cells == 2
    assert view.core is model.core
    x = torch.randn(1, 8, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(view(x), model(x, "retina_b"), rtol=0, atol=0)
        model.core.type_maps.bias.add_(1.0)
        torch.testing.assert_close(view(x), model(x, "retina_b"), rtol=0, atol=0)
        # rate maps come from the shared core: every session's view gives the same maps
        maps_a = model.session_model("retina_a").forward_maps(x)  # type: ignore[operator]
        torch.testing.assert_close(view.forward_maps(x), maps_a, rtol=0, atol=0)  # type: ignore[operator]
        # the step form works on a view
        state = view.init_state(1)  # type: ignore[operator]
        for i in range(8):
            y, state = view.step(x[:, i], state)  # type: ignore[operator]
        torch.testing.assert_close(y, view(x), atol=1e-5, rtol=1e-4)


def test_unknown_sessions_and_bad_names_are_refused_by_name() -> None:
    model = two_sessions()
    with pytest.raises(ModelConfigError, match=r"unknown session 'c'; .*retina_a, retina_b"):
        model(torch.randn(1, 8, *SHAPE), "c")
    with pytest.raises(ModelConfigError, match="unknown session"):
        model.session_model("c")
    for cells in ({}, {"a.b": 2}, {"a": 0}):
        with pytest.raises(ModelConfigError):
            build_multisession_model(
                "deep-retina",
                TINY["deep-retina"],
                frame_shape=SHAPE,
                frame_rate_hz=RATE,
                cells_per_session=cells,
            )


def test_sessions_with_other_frame_rate_or_shape_are_refused_with_both_values() -> None:
    assert common_geometry({"a": ((16, 16), 100.0), "b": ((16, 16), 100.0)}) == ((16, 16), 100.0)
    with pytest.raises(
        ModelConfigError, match=r"'a' \(16×16 px at 100 Hz\) and 'b' \(16×16 px at 60 Hz\)"
    ):
        common_geometry({"a": ((16, 16), 100.0), "b": ((16, 16), 60.0)})
    with pytest.raises(ModelConfigError, match=r"'b' \(20×16 px at 100 Hz\)"):
        common_geometry({"a": ((16, 16), 100.0), "b": ((20, 16), 100.0)})


def test_multisession_checkpoint_round_trip_and_session_views(tmp_path: Path) -> None:
    model = two_sessions("cnn-lstm").eval()
    meta = make_multisession_meta(model, _sessions_meta(), loss="poisson", epoch=3)
    run = save_checkpoint(tmp_path / "run", model, meta)
    raw = json.loads((run / "checkpoint.json").read_text())
    assert raw["schema_version"] == 2
    assert [s["name"] for s in raw["sessions"]] == ["retina_a", "retina_b"]
    loaded = load_multisession_checkpoint(run)
    assert isinstance(loaded.meta, MultiSessionMeta)
    assert loaded.meta.cells_per_session == CELLS
    x = torch.randn(2, 8, *SHAPE)
    with torch.no_grad():
        for s in CELLS:
            torch.testing.assert_close(loaded.model(x, s), model(x, s), rtol=0, atol=0)
        view = load_checkpoint(run, session="retina_b")
        assert view.session == "retina_b"
        assert view.meta.cells.ids == ("b0", "b1") and view.meta.n_cells == 2
        torch.testing.assert_close(view.model(x), model(x, "retina_b"), rtol=0, atol=0)
    with pytest.raises(
        CheckpointError, match=r"multi-session checkpoint \(sessions retina_a, retina_b\)"
    ):
        load_checkpoint(run)
    with pytest.raises(CheckpointError, match="multi-session"):
        read_meta(run)
    with pytest.raises(CheckpointError, match="unknown session 'zz'"):
        load_checkpoint(run, session="zz")


def test_checkpoint_kinds_refuse_each_other(tmp_path: Path) -> None:
    single = build_model("deep-retina", TINY["deep-retina"], 3, SHAPE, RATE)
    meta = make_meta(
        single, loss="poisson", pixel_size_deg=0.2, stimulus_kind="contrast", cells=_cells(3, "a")
    )
    run = save_checkpoint(tmp_path / "single", single, meta)
    with pytest.raises(CheckpointError, match="single-session checkpoint has no sessions"):
        load_checkpoint(run, session="retina_a")
    with pytest.raises(CheckpointError, match="not a multi-session"):
        load_multisession_checkpoint(run)
    multi = two_sessions()
    good = make_multisession_meta(multi, _sessions_meta(), loss="poisson")
    with pytest.raises(CheckpointError, match="single-session meta for a multi-session"):
        save_checkpoint(tmp_path / "x", multi, meta)
    with pytest.raises(CheckpointError, match="multi-session meta for a single-session"):
        save_checkpoint(tmp_path / "y", single, good)
    swapped = make_multisession_meta(multi, _sessions_meta()[::-1], loss="poisson")
    with pytest.raises(CheckpointError, match="sessions"):
        save_checkpoint(tmp_path / "z", multi, swapped)
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
    with pytest.raises(ValueError, match="unique"):
        make_multisession_meta(multi, _sessions_meta()[:1] * 2, loss="poisson")


def test_readouts_start_at_the_mean_count_where_they_have_a_bias() -> None:
    model = two_sessions("cnn-lstm")
    mean = np.array([0.2, 1.5])
    model.init_output_bias(mean, "retina_b")
    readout = model.readout_of("retina_b")
    with torch.no_grad():  # with no features, the output is the bias alone
        start = readout(torch.zeros(1, *readout.feature_shape))[0].numpy()
    np.testing.assert_allclose(start, mean, rtol=1e-4)
    with pytest.raises(ValueError, match="need 3"):
        model.init_output_bias(mean, "retina_a")
