"""Hyper-parameters and checks shared by cores, readouts and models (no model here).

A module of its own so that `core.py`, `readout.py` and `base.py` can all import it without
importing each other.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from encoder.errors import EncoderError
from encoder.timebase import DEFAULT_WINDOW_MS, frames_from_ms

#: Input size used to report parameter counts (`npe models`): the synthetic retina's default
#: 32×32 px frames at 100 Hz with a 250 ms window (REFERENCES: YADLRetina's 250 ms window).
DEFAULT_FRAME_SHAPE: tuple[int, int] = (32, 32)
DEFAULT_FRAME_RATE_HZ: float = 100.0
DEFAULT_WINDOW_FRAMES: int = 25
DEFAULT_N_CELLS: int = 32


class ModelConfigError(EncoderError, ValueError):
    """A model name or configuration that cannot build a model."""


class ModelConfig(BaseModel):
    """Base of every model's hyper-parameters; subclasses add their own fields.

    Every temporal extent is a duration in ms (fields end in `_ms`), never a frame count: the
    model turns it into frames at build time from the recording's frame rate
    (`encoder.timebase.frames_from_ms`), so a config means the same network at 30 or 120 Hz.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_ms: float = Field(default=DEFAULT_WINDOW_MS, gt=0)  # stimulus history seen

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def check_geometry(frame_shape: tuple[int, int], frame_rate_hz: float) -> None:
    """Refuse a frame size or frame rate no model can be built for."""
    if len(frame_shape) != 2 or min(frame_shape) < 1:
        raise ModelConfigError(f"frame_shape must be (height, width) ≥ 1, got {frame_shape}")
    if not (math.isfinite(frame_rate_hz) and frame_rate_hz > 0):
        raise ModelConfigError(f"frame_rate_hz must be a positive number, got {frame_rate_hz}")


def frames_of(model_name: str, ms: float, frame_rate_hz: float) -> int:
    """`ms` as whole frames at `frame_rate_hz` (the shared `frames_from_ms`), refusal named."""
    try:
        return frames_from_ms(ms, frame_rate_hz)
    except ValueError as exc:
        raise ModelConfigError(f"{model_name}: {exc}") from exc


def two_conv_output_shape(
    model_name: str, frame_shape: tuple[int, int], kernel1: int, kernel2: int
) -> tuple[int, int]:
    """(height, width) left after two unpadded convolutions, or a clear refusal.

    The seed models' dense readouts are sized from this, so a frame smaller than the two
    layers' receptive field must fail at construction with the sizes named, not later as a
    shape error deep inside torch.
    """
    h = frame_shape[0] - kernel1 - kernel2 + 2
    w = frame_shape[1] - kernel1 - kernel2 + 2
    if h < 1 or w < 1:
        raise ModelConfigError(
            f"{model_name}: frames of {list(frame_shape)} px are smaller than the "
            f"{kernel1 + kernel2 - 1} px receptive field of the two conv layers"
        )
    return h, w


def gaussian_noise(x: Tensor, sigma: float, training: bool) -> Tensor:
    """Additive Gaussian noise on activations during training (YADLRetina, Deep Retina σ 0.1)."""
    if training and sigma > 0:
        return x + sigma * torch.randn_like(x)
    return x


def sum_penalties(terms: list[Tensor | None]) -> Tensor:
    """Sum of the recorded regularisation terms; 0 when none was recorded."""
    present = [t for t in terms if t is not None]
    if not present:
        return torch.zeros(())
    total = present[0]
    for t in present[1:]:
        total = total + t
    return total
