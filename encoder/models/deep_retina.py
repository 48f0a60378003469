"""`deep-retina`: the 3-layer CNN of McIntosh et al. 2016.

Stimulus history as input channels; conv 16@15×15 → conv 8@9×9 → dense → softplus; Gaussian
noise σ 0.1 after each conv, L2 1e-3 on weights, L1 1e-3 on readout activity, Poisson loss,
Adam (REFERENCES: Deep Retina). The original used 40 frames of 10 ms; we use the recording's
window (25 frames at 100 Hz) so every model sees the same 250 ms.

Core: the two convolutions (L2 on their weights); readout: `DenseReadout` with softplus (L2
on its weights, L1 on its output).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encoder.models.base import ModelConfig, RetinaModel, gaussian_noise, two_conv_output_shape
from encoder.models.core import Core
from encoder.models.readout import DenseReadout, Readout


class DeepRetinaConfig(ModelConfig):
    filters1: int = 16
    kernel1: int = 15
    filters2: int = 8
    kernel2: int = 9
    noise_sigma: float = 0.1
    l2_weights: float = 1e-3
    l1_activity: float = 1e-3


class DeepRetinaCore(Core):
    """Window as channels → conv + noise → ReLU → conv + noise → ReLU: [B, filters2, h2, w2]."""

    model_name = "deep-retina"
    config: DeepRetinaConfig

    def __init__(
        self, config: DeepRetinaConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> None:
        super().__init__(config, frame_shape, frame_rate_hz)
        c = config
        h2, w2 = two_conv_output_shape("deep-retina", frame_shape, c.kernel1, c.kernel2)
        self.conv1 = nn.Conv2d(self.window_frames, c.filters1, c.kernel1)
        self.conv2 = nn.Conv2d(c.filters1, c.filters2, c.kernel2)
        self.feature_shape = (c.filters2, h2, w2)

    def forward(self, x: Tensor) -> Tensor:
        c = self.config
        h = torch.relu(
            gaussian_noise(self.conv1(x[:, -self.window_frames :]), c.noise_sigma, self.training)
        )
        h = torch.relu(gaussian_noise(self.conv2(h), c.noise_sigma, self.training))
        if self.training:
            l2 = self.conv1.weight.pow(2).sum() + self.conv2.weight.pow(2).sum()
            self._penalty = c.l2_weights * l2
        return h

    def feature_modules(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]

    def first_layer_filters(self) -> Tensor:
        w = self.conv1.weight.detach()
        lag = w.pow(2).sum((2, 3)).argmax(1)
        return w[torch.arange(w.shape[0]), lag]


class DeepRetina(RetinaModel):
    name = "deep-retina"
    default_loss = "poisson"
    config: DeepRetinaConfig

    @classmethod
    def build_core(
        cls, config: ModelConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> Core:
        assert isinstance(config, DeepRetinaConfig)
        return DeepRetinaCore(config, frame_shape, frame_rate_hz)

    @classmethod
    def build_readout(cls, core: Core, n_cells: int) -> Readout:
        c = core.config
        assert isinstance(c, DeepRetinaConfig)
        return DenseReadout(
            n_cells,
            core.feature_shape,
            "softplus",
            l2_weight=c.l2_weights,
            l1_activity=c.l1_activity,
        )
