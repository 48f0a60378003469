"""The live preview keeps its own copy of each stimulation frame: the pipeline refills its
frames in a ring (hardware.pipeline.RING_FRAMES), so a frame held by the preview thread would
otherwise change under it."""

from __future__ import annotations

import numpy as np

from hardware.arrays import load_array
from hardware.pipeline import RING_FRAMES, StimulationPipeline
from hardware.safety import SafetyLimits
from hardware.types import RateField
from runtime.live_preview import PreviewThread
from runtime.loop import BinView
from runtime.spec import ModelSpec


def test_preview_frame_survives_the_ring_refilling(toy_spec: ModelSpec, tmp_path) -> None:
    arr = load_array("utah96")
    pipe = StimulationPipeline(arr, None, SafetyLimits())
    rng = np.random.default_rng(0)
    centre = pipe.model.phosphene_deg.mean(axis=0)
    pos = (centre + rng.normal(0, 2.0, (2048, 2))).astype(np.float32)
    pol = rng.integers(-1, 2, 2048).astype(np.int8)
    bright = RateField(np.full(2048, 90.0, np.float32), pos, pol)
    dark = RateField(np.zeros(2048, np.float32), pos, pol)
    prev = PreviewThread(toy_spec, arr, None, tmp_path / "p.avi")
    image = np.zeros((toy_spec.height, toy_spec.width), np.float32)
    stim = pipe.process(bright)
    assert stim.active.any()
    sent = stim.amplitude_ua.copy()
    prev.observe(BinView(0, image, None, stim, ""))
    for _ in range(RING_FRAMES):  # the ring comes round: `stim` is refilled with darkness
        pipe.process(dark)
    assert not stim.active.any()
    kept = prev._stim
    assert kept is not None and kept is not stim
    np.testing.assert_array_equal(kept.amplitude_ua, sent)  # what was sent, not what is now
    assert prev.compose() is not None
