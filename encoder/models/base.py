"""The interface every retina model implements: a composition of a core and a readout.

A model maps a window of stimulus history to the expected spike count of each cell in the
newest frame bin: `readout(core(window))` (`encoder.models.core`, `encoder.models.readout`).
Each registered model is a `RetinaModel` subclass that says which core and which readout it
is made of (`build_core`, `build_readout`) and adds its own API (step form, rate maps) on top.

Training and evaluation work on contiguous *chunks* of frames (`forward_chunk`), because
models whose first stage runs per frame (the CNN-LSTM, the streaming model) then compute that
stage once per frame instead of once per window — a ~25× saving that keeps training within
the 2-core budget of the accuracy benchmark.

State-dict keys are `core.…` and `readout.…`; checkpoints written before the split used the
layers' own names and are mapped on load (`encoder.checkpoint.LEGACY_KEYS`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray
from torch import Tensor, nn

from encoder.models.config import (
    DEFAULT_FRAME_RATE_HZ,
    DEFAULT_FRAME_SHAPE,
    DEFAULT_N_CELLS,
    DEFAULT_WINDOW_FRAMES,
    ModelConfig,
    ModelConfigError,
    gaussian_noise,
    two_conv_output_shape,
)
from encoder.models.core import Core
from encoder.models.readout import CellSelector, Readout

__all__ = [
    "DEFAULT_FRAME_RATE_HZ",
    "DEFAULT_FRAME_SHAPE",
    "DEFAULT_N_CELLS",
    "DEFAULT_WINDOW_FRAMES",
    "CellSelector",
    "ModelConfig",
    "ModelConfigError",
    "RateMapMixin",
    "RetinaModel",
    "gaussian_noise",
    "polarity_of",
    "two_conv_output_shape",
]


class RetinaModel(nn.Module):
    """`forward(x [B, T, H, W] contrast) -> [B, n_cells]` = `readout(core(x))`.

    Built by `build_model` from (config, n_cells, frame_shape, frame_rate_hz): the subclass's
    `build_core` and `build_readout` make the parts, then their `reset_parameters` apply the
    initialisation. `compose(core, readout)` makes a model from existing parts instead (the
    single-session view of a multi-session model shares them).
    """

    name: ClassVar[str] = ""
    default_loss: ClassVar[str] = "poisson"
    stateful: ClassVar[bool] = False
    ratemap: ClassVar[bool] = False

    core: Core
    readout: Readout

    def __init__(
        self,
        config: ModelConfig,
        n_cells: int,
        frame_shape: tuple[int, int],
        frame_rate_hz: float,
        *,
        parts: tuple[Core, Readout] | None = None,
    ) -> None:
        super().__init__()
        if parts is None:
            if n_cells < 1:
                raise ModelConfigError(f"n_cells must be ≥ 1, got {n_cells}")
            core = self.build_core(config, frame_shape, frame_rate_hz)
            readout = self.build_readout(core, n_cells)
            core.reset_parameters()
            readout.reset_parameters()
        else:
            core, readout = parts
        if readout.feature_shape != core.feature_shape:
            raise ModelConfigError(
                f"{self.name}: readout reads features of {list(readout.feature_shape)}, the "
                f"core makes {list(core.feature_shape)}"
            )
        self.core = core
        self.readout = readout
        self.config = config
        self.n_cells = readout.n_cells
        self.frame_shape = core.frame_shape
        self.frame_rate_hz = core.frame_rate_hz
        self.window_frames = core.window_frames

    # ----------------------------------------------------------------- the composition
    @classmethod
    def build_core(
        cls, config: ModelConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> Core:
        """This model's core for `config` at the data geometry."""
        raise NotImplementedError

    @classmethod
    def build_readout(cls, core: Core, n_cells: int) -> Readout:
        """A readout of `n_cells` cells on `core`'s features (one per session if several)."""
        raise NotImplementedError

    @classmethod
    def compose(cls, core: Core, readout: Readout, config: ModelConfig | None = None) -> Self:
        """The model made of these parts (shared, not copied); `config` defaults to the core's."""
        return cls(
            config or core.config,
            readout.n_cells,
            core.frame_shape,
            core.frame_rate_hz,
            parts=(core, readout),
        )

    # ----------------------------------------------------------------- generic API
    def frames(self, ms: float) -> int:
        """`ms` as whole frames at this model's frame rate (the shared `frames_from_ms`)."""
        return self.core.frames(ms)

    def temporal_frames(self) -> dict[str, int]:
        """Frames this model uses for each `_ms` field of its config (checked by the tests)."""
        return self.core.temporal_frames()

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, H, W] contrast → [B, n_cells] expected counts in the newest bin."""
        return self.readout(self.core(x))

    def forward_chunk(self, x: Tensor) -> Tensor:
        """Outputs for every full window inside a contiguous chunk.

        x: [B, L, H, W] float32 contrast with L ≥ T → [B, L - T + 1, n_cells]; entry j is
        `forward(x[:, j : j + T])`, i.e. the prediction for frame j + T - 1.
        """
        return self.readout.forward_chunk(self.core.forward_chunk(x))

    def penalty(self) -> Tensor:
        """Regularisation terms of core and readout from the latest training forward (0 if none)."""
        return self.core.penalty() + self.readout.penalty()

    def core_modules(self) -> list[nn.Module]:
        """Modules frozen by `--freeze core` (the convolutional feature extractor)."""
        return self.core.feature_modules()

    def first_layer_filters(self) -> Tensor:
        """Spatial profile of each first-layer filter: [n_filters, kh, kw] (for figures)."""
        return self.core.first_layer_filters()

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def n_parameters(self) -> int:
        return sum(int(p.numel()) for p in self.parameters())


def polarity_of(label: str) -> int:
    """+1 for ON types, -1 for OFF types, 0 when the label says neither."""
    words = label.upper().replace("-", " ").split()
    if "OFF" in words:
        return -1
    if "ON" in words:
        return 1
    return 0


class RateMapMixin:
    """Shared rate-map bookkeeping for `fullyconv` and `streaming` (core: type maps, readout:
    `CellSelector`).

    Map pixel (i, j) is centred on input pixel (i·s, j·s) with s the readout stride, in
    input-pixel index coordinates (pixel k's centre is k). Degrees follow as
    x_deg = (x_px − (W − 1)/2)·pixel_size_deg, y_deg = −(y_px − (H − 1)/2)·pixel_size_deg.
    """

    config: Any
    readout: Readout

    @property
    def selector(self) -> CellSelector:
        """The readout, typed as the cell selector it is for rate-map models."""
        readout = self.readout
        if not isinstance(readout, CellSelector):
            raise TypeError(f"rate-map model with a {type(readout).__name__} readout")
        return readout

    def map_grid(self, height: int, width: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Centres of the output pixels: (ys_px [H'], xs_px [W']) in input-pixel coordinates."""
        s = int(self.config.map_stride)
        return (
            np.arange(0, height, s, dtype=np.float64),
            np.arange(0, width, s, dtype=np.float64),
        )

    def type_labels(self) -> list[str]:
        labels = list(self.config.type_labels)
        n = int(self.config.n_types)
        return labels if len(labels) == n else [f"type {k}" for k in range(n)]

    def type_polarity(self) -> list[int]:
        return [polarity_of(label) for label in self.type_labels()]

    def label_types_from_cells(self, cell_types: list[str]) -> list[str]:
        """Name each map after the majority type of the recorded cells that select it."""
        type_idx, _ = self.selector.assignments()
        labels = []
        for k in range(int(self.config.n_types)):
            chosen = [cell_types[c] for c in np.flatnonzero(type_idx == k)]
            labels.append(max(set(chosen), key=chosen.count) if chosen else f"type {k}")
        # Keep labels unique so a bundle's output names stay unambiguous.
        seen: dict[str, int] = {}
        unique = []
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
            unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
        return unique
