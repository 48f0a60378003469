"""`fullyconv`: fully convolutional Deep Retina (Sivulka; REFERENCES).

History as input channels, conv → conv ('same' padding, no batch-norm) → 1×1 conv to
`n_types` cell-type rate maps (softplus). During training a `CellSelector` chooses which
map and location explain each recorded cell, pushed towards one-hot by the semantic loss of
Xu et al. 2017; after training the selector is dropped and the maps tile any frame size
(`forward_maps`). Batch-norm is avoided because its statistics caused the train/validation
gap reported for this model.

Core: everything up to the type maps (they describe cell types, not recorded cells, so they
are shared by every session); readout: the `CellSelector`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoder.models.base import (
    CellSelector,
    ModelConfig,
    ModelConfigError,
    RateMapMixin,
    RetinaModel,
    gaussian_noise,
)
from encoder.models.core import Core
from encoder.models.readout import Readout


class FullyConvConfig(ModelConfig):
    filters1: int = 8
    kernel1: int = 15
    filters2: int = 8
    kernel2: int = 9
    n_types: int = 8
    map_stride: int = 2
    noise_sigma: float = 0.1
    semantic_weight: float = 1e-3
    type_labels: tuple[str, ...] = ()


def map_shape(frame_shape: tuple[int, int], stride: int) -> tuple[int, int]:
    """(⌈H/s⌉, ⌈W/s⌉): the rate-map grid of a frame at map stride s."""
    h, w = frame_shape
    return ((h + stride - 1) // stride, (w + stride - 1) // stride)


class FullyConvCore(Core):
    """Window as channels → two 'same' convs → 1×1 conv: type maps [B, n_types, ⌈H/s⌉, ⌈W/s⌉]."""

    model_name = "fullyconv"
    config: FullyConvConfig

    def __init__(
        self, config: FullyConvConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> None:
        super().__init__(config, frame_shape, frame_rate_hz)
        c = config
        if c.kernel1 % 2 == 0 or c.kernel2 % 2 == 0:
            raise ModelConfigError("fullyconv: kernel1 and kernel2 must be odd ('same' padding)")
        self.conv1 = nn.Conv2d(
            self.window_frames, c.filters1, c.kernel1, padding=c.kernel1 // 2, stride=c.map_stride
        )
        self.conv2 = nn.Conv2d(c.filters1, c.filters2, c.kernel2, padding=c.kernel2 // 2)
        self.type_maps = nn.Conv2d(c.filters2, c.n_types, 1)
        self.feature_shape = (c.n_types, *map_shape(frame_shape, c.map_stride))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.type_maps.bias, -2.0)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, H, W] of any H, W → rate maps [B, n_types, ⌈H/s⌉, ⌈W/s⌉] (counts/bin)."""
        c = self.config
        h = torch.relu(
            gaussian_noise(self.conv1(x[:, -self.window_frames :]), c.noise_sigma, self.training)
        )
        h = torch.relu(gaussian_noise(self.conv2(h), c.noise_sigma, self.training))
        return F.softplus(self.type_maps(h))

    def feature_modules(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]

    def first_layer_filters(self) -> Tensor:
        w = self.conv1.weight.detach()
        lag = w.pow(2).sum((2, 3)).argmax(1)
        return w[torch.arange(w.shape[0]), lag]


class FullyConv(RateMapMixin, RetinaModel):
    name = "fullyconv"
    default_loss = "poisson"
    ratemap = True
    config: FullyConvConfig

    @classmethod
    def build_core(
        cls, config: ModelConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> Core:
        assert isinstance(config, FullyConvConfig)
        return FullyConvCore(config, frame_shape, frame_rate_hz)

    @classmethod
    def build_readout(cls, core: Core, n_cells: int) -> Readout:
        c = core.config
        assert isinstance(c, FullyConvConfig)
        return CellSelector(
            n_cells, c.n_types, map_shape(core.frame_shape, c.map_stride), c.semantic_weight
        )

    def forward_maps(self, x: Tensor) -> Tensor:
        """x: [B, T, H, W] of any H, W → rate maps [B, n_types, ⌈H/s⌉, ⌈W/s⌉] (counts/bin)."""
        return self.core(x)
