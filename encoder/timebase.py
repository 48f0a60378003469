"""Milliseconds ↔ frames: the one place where a temporal hyper-parameter becomes a frame count.

Why: hyper-parameters counted in frames silently change a model at every other frame rate
(a 10-frame LSTM history is 100 ms at 100 Hz but 250 ms — the whole window — at 40 Hz, which
removed the CNN-LSTM's temporal stage). Models therefore declare durations in ms and turn
them into frames only at build time, from the recording's frame rate, through this helper.
"""

from __future__ import annotations

import math

#: Stimulus history every model sees by default (REFERENCES: YADLRetina's 250 ms window).
DEFAULT_WINDOW_MS: float = 250.0


def frames_from_ms(ms: float, frame_rate_hz: float) -> int:
    """Whole frames covering `ms` at `frame_rate_hz` (nearest, at least 1): 250 ms, 100 Hz → 25."""
    if not (math.isfinite(frame_rate_hz) and frame_rate_hz > 0):
        raise ValueError(f"frame_rate_hz must be a positive number, got {frame_rate_hz}")
    if not (math.isfinite(ms) and ms > 0):
        raise ValueError(f"a duration in ms must be a positive number, got {ms}")
    return max(1, round(ms / 1000.0 * frame_rate_hz))


def ms_from_frames(frames: int, frame_rate_hz: float) -> float:
    """Duration of `frames` frames in ms; `frames_from_ms` of it gives `frames` back exactly."""
    if not (math.isfinite(frame_rate_hz) and frame_rate_hz > 0):
        raise ValueError(f"frame_rate_hz must be a positive number, got {frame_rate_hz}")
    return frames * 1000.0 / frame_rate_hz
