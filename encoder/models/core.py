"""Cores: the part of a retina model that maps stimulus windows to feature maps.

A model is a core plus a readout (openretina's split, REFERENCES): the core turns a window of
stimulus history into features, the readout turns features into each recorded cell's
expected count. Why split: the core is what generalises across retinas (the same
photoreceptor–bipolar–amacrine cascade), the readout is what differs between recordings
(which cells, where). A new model is a new core or readout, not a copy of both, and several
sessions share one core with one readout each (`encoder.models.multisession`).

Subclasses build their layers in `__init__` with torch's default initialisation and apply the
model's own in `reset_parameters`, which the builder calls after the readout(s) exist: the
random draws then happen in the order the pre-split models made them, so a seed still gives
the same initial weights.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from encoder.models.config import ModelConfig, check_geometry, frames_of, sum_penalties


class Core(nn.Module):
    """`forward(x [B, T, H, W] contrast) -> features [B, *feature_shape]` for the newest frame.

    `forward_chunk` gives the features of every full window of a contiguous chunk; cores whose
    first stage runs per frame (`per_frame`) override it to compute that stage once per frame
    instead of once per window. Regularisers computed in a training forward are recorded and
    returned by `penalty()`.
    """

    #: Registered name of the model the core belongs to (error messages).
    model_name: ClassVar[str] = ""
    #: True when `forward_chunk` shares per-frame work between overlapping windows.
    per_frame: ClassVar[bool] = False

    def __init__(
        self, config: ModelConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> None:
        super().__init__()
        check_geometry(frame_shape, frame_rate_hz)
        self.config = config
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.frame_rate_hz = float(frame_rate_hz)
        self.window_frames = self.frames(config.window_ms)
        self.feature_shape: tuple[int, ...] = ()
        self._penalty: Tensor | None = None

    def frames(self, ms: float) -> int:
        """`ms` as whole frames at this core's frame rate."""
        return frames_of(self.model_name, ms, self.frame_rate_hz)

    def temporal_frames(self) -> dict[str, int]:
        """Frames used for each `_ms` field of the config; subclasses add their own fields."""
        return {"window_ms": self.window_frames}

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_chunk(self, x: Tensor) -> Tensor:
        """x: [B, L, H, W] with L ≥ T → [B, L − T + 1, *feature_shape] (entry j: frames j..j+T−1).

        Generic form: unfold the windows and run `forward` on all of them as one batch.
        """
        t = self.window_frames
        if x.shape[1] < t:
            raise ValueError(f"chunk of {x.shape[1]} frames is shorter than the window ({t})")
        windows = x.unfold(1, t, 1)  # [B, L-T+1, H, W, T]
        b, n = windows.shape[0], windows.shape[1]
        windows = windows.permute(0, 1, 4, 2, 3).reshape(b * n, t, x.shape[2], x.shape[3])
        features = self.forward(windows)
        return features.reshape(b, n, *features.shape[1:])

    def penalty(self) -> Tensor:
        """The core's regularisation terms from its latest training forward (0 when none)."""
        return sum_penalties([self._penalty])

    def reset_parameters(self) -> None:
        """Apply the model's initialisation (after the readouts exist; see module docstring)."""

    def feature_modules(self) -> list[nn.Module]:
        """Modules `--freeze core` keeps fixed (the convolutional feature extractor)."""
        return []

    def first_layer_filters(self) -> Tensor:
        """Spatial profile of each first-layer filter: [n_filters, kh, kw] (for figures)."""
        raise NotImplementedError


class WindowCore(Core):
    """The identity core: features are the window itself, [B, T, H, W].

    For models whose every stage is per cell (the LN baseline): nothing is shared between
    cells, so a multi-session LN model is honestly one readout per session and no core.
    """

    def __init__(
        self, config: ModelConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> None:
        super().__init__(config, frame_shape, frame_rate_hz)
        self.feature_shape = (self.window_frames, *self.frame_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x[:, -self.window_frames :]
