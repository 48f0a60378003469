"""`single-cnn`: the single-cell CNN of YADLRetina (Crespo-Cano et al. 2018).

250 ms of stimulus enters as input channels (one per frame); two convolutional layers with
5 and 5 spatio-temporal filters (15 px then 5 px kernels), a dense readout and a sigmoid:
the output is the probability of at least one spike in the newest bin, trained with binary
cross-entropy and Adam, weights normal-initialised (REFERENCES: YADLRetina). The original
had ~150k parameters at its input size; `npe models` reports ours at the default input.

Core: the two convolutions; readout: `DenseReadout` with a sigmoid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encoder.models.base import ModelConfig, RetinaModel, two_conv_output_shape
from encoder.models.core import Core
from encoder.models.readout import DenseReadout, Readout


class SingleCNNConfig(ModelConfig):
    filters1: int = 5
    kernel1: int = 15
    filters2: int = 5
    kernel2: int = 5
    init_std: float = 0.01  # normal initialisation, as in the original


class SingleCNNCore(Core):
    """Window as channels → conv → ReLU → conv → ReLU: features [B, filters2, h2, w2]."""

    model_name = "single-cnn"
    config: SingleCNNConfig

    def __init__(
        self, config: SingleCNNConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> None:
        super().__init__(config, frame_shape, frame_rate_hz)
        c = config
        h2, w2 = two_conv_output_shape("single-cnn", frame_shape, c.kernel1, c.kernel2)
        self.conv1 = nn.Conv2d(self.window_frames, c.filters1, c.kernel1)
        self.conv2 = nn.Conv2d(c.filters1, c.filters2, c.kernel2)
        self.feature_shape = (c.filters2, h2, w2)

    def reset_parameters(self) -> None:
        for layer in (self.conv1, self.conv2):
            nn.init.normal_(layer.weight, std=self.config.init_std)
            nn.init.constant_(layer.bias, 0.0)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv1(x[:, -self.window_frames :]))
        return torch.relu(self.conv2(h))

    def feature_modules(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]

    def first_layer_filters(self) -> Tensor:
        """Spatial profile at the lag of largest energy of each conv1 filter: [5, 15, 15]."""
        w = self.conv1.weight.detach()  # [F, T, k, k]
        lag = w.pow(2).sum((2, 3)).argmax(1)
        return w[torch.arange(w.shape[0]), lag]


class SingleCNN(RetinaModel):
    name = "single-cnn"
    default_loss = "bce"
    config: SingleCNNConfig

    @classmethod
    def build_core(
        cls, config: ModelConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> Core:
        assert isinstance(config, SingleCNNConfig)
        return SingleCNNCore(config, frame_shape, frame_rate_hz)

    @classmethod
    def build_readout(cls, core: Core, n_cells: int) -> Readout:
        assert isinstance(core.config, SingleCNNConfig)
        # normal init as the original; bias −2 starts at p(spike) ≈ 0.12
        return DenseReadout(
            n_cells, core.feature_shape, "sigmoid", init_std=core.config.init_std, init_bias=-2.0
        )
