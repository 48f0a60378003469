"""Torch modules that give each exported form its exact call signature and units.

The ONNX graph of a form is traced from one of these wrappers, so the bundle's contract is
written here once: rates in spikes/s (the model's expected count per bin × frame_rate_hz),
static batch-1 shapes, and state passed in and out explicitly (ONNX Runtime keeps no hidden
state; REFERENCES, runtime facts).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class WindowRates(nn.Module):
    """window: [1, T, H, W] float32 contrast → rates [1, n_cells] or [1, n_types, H', W'] spikes/s."""

    def __init__(self, model: Any, frame_rate_hz: float, maps: bool) -> None:
        super().__init__()
        self.model = model
        self.maps = maps
        self.register_buffer("scale", torch.tensor(float(frame_rate_hz), dtype=torch.float32))

    def forward(self, window: Tensor) -> Tensor:
        out = self.model.forward_maps(window) if self.maps else self.model(window)
        return out * self.scale


class StepRates(nn.Module):
    """One new frame plus state → rates (spikes/s) and the next state.

    frame: [1, H, W] float32 contrast; state_i: shapes of `model.init_state(1)`.
    Returns (rates [1, n] or [1, n_types, H', W'], state_0_next, state_1_next, ...).
    """

    def __init__(self, model: Any, frame_rate_hz: float, maps: bool) -> None:
        super().__init__()
        self.model = model
        self.maps = maps
        self.register_buffer("scale", torch.tensor(float(frame_rate_hz), dtype=torch.float32))

    def forward(self, frame: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        if self.maps:
            out, new_state = self.model.step_maps(frame, tuple(state))
        else:
            out, new_state = self.model.step(frame, tuple(state))
        return (out * self.scale, *new_state)


def initial_state(model: Any, frame_shape: tuple[int, int]) -> tuple[Tensor, ...]:
    """The model's zero state for batch 1 at `frame_shape` (asserted to be all zeros)."""
    try:
        state = tuple(model.init_state(1, frame_shape))
    except TypeError:
        state = tuple(model.init_state(1))
    for i, s in enumerate(state):
        if bool(torch.any(s != 0)):
            raise ValueError(
                f"init_state()[{i}] is not all zeros; bundles declare zero initial state"
            )
    return state


#: Readable state names of the registry's stateful models (init_state order).
KNOWN_STATE_NAMES: dict[str, tuple[str, ...]] = {
    "cnn-lstm": ("lstm_h", "lstm_c"),
    "streaming": ("cache1", "cache2"),
}


def state_names(model: Any, n: int) -> list[str]:
    """Names of the state inputs: the model's `state_names()`, known names, else state_<i>."""
    names = getattr(model, "state_names", None)
    got = [str(v) for v in names()] if callable(names) else []
    if not got:
        got = list(KNOWN_STATE_NAMES.get(str(getattr(model, "name", "")), ()))
    return got if len(got) == n else [f"state_{i}" for i in range(n)]
