"""Temporal hyper-parameters are durations: every model means the same ms at every frame rate."""

from __future__ import annotations

import pytest

from encoder.models import MODEL_REGISTRY, ModelConfigError, build_model
from encoder.timebase import frames_from_ms, ms_from_frames

RATES_HZ = (30.0, 40.0, 85.0, 100.0, 120.0)  # rates of real datasets, and the 40 Hz failure


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_temporal_extent_is_its_ms_within_one_frame(name: str, rate_hz: float) -> None:
    model = build_model(name, None, 2, (32, 32), rate_hz)
    config = model.config.model_dump()
    ms_fields = {k for k in config if k.endswith("_ms")}
    extents = model.temporal_frames()
    assert set(extents) == ms_fields  # every declared duration is reported, nothing else
    frame_ms = 1000.0 / rate_hz
    for field, frames in extents.items():
        assert abs(frames * frame_ms - config[field]) <= frame_ms, (field, frames)
    # the layers really have that many taps
    t = model.window_frames
    if name == "cnn-lstm":
        assert model.temporal1 + model.lstm_frames - 1 == t  # type: ignore[attr-defined,operator]
        assert model.time1.weight.shape[2] == model.temporal1  # type: ignore[attr-defined,union-attr]
    elif name == "streaming":
        assert model.core.time1.weight.shape[2] + model.core.time2.weight.shape[2] - 1 == t  # type: ignore[attr-defined,union-attr,index]
    elif name == "ln":
        assert model.readout.filters.shape[1] == t  # type: ignore[attr-defined,union-attr,index]
    else:
        assert model.core.conv1.weight.shape[1] == t  # type: ignore[attr-defined,union-attr,index]


def test_cnn_lstm_keeps_its_temporal_stage_at_40_hz() -> None:
    """At 40 Hz the 250 ms window is 10 frames; a 10-frame LSTM used to leave temporal1 = 1."""
    model = build_model("cnn-lstm", None, 2, (32, 32), 40.0)
    assert model.window_frames == 10
    assert model.temporal1 > 1 and model.time1 is not None  # type: ignore[attr-defined]
    assert model.temporal1 * 25.0 >= 150.0  # type: ignore[attr-defined,operator]


def test_frames_from_ms_round_trips_and_refuses_nonsense() -> None:
    for rate in (*RATES_HZ, 59.94, 1000.0):
        for n in range(1, 64):
            assert frames_from_ms(ms_from_frames(n, rate), rate) == n
    assert frames_from_ms(250.0, 100.0) == 25 and frames_from_ms(1.0, 30.0) == 1
    with pytest.raises(ValueError, match="frame_rate_hz"):
        frames_from_ms(250.0, 0.0)
    with pytest.raises(ValueError, match="positive"):
        frames_from_ms(-5.0, 100.0)
    with pytest.raises(ModelConfigError, match="temporal2_ms"):
        build_model("streaming", {"temporal2_ms": 500.0}, 2, (32, 32), 100.0)
    with pytest.raises(ModelConfigError, match="window_ms"):
        build_model("ln", {"window_ms": -1.0}, 2, (32, 32), 100.0)
