"""`deep-retina`: the 3-layer CNN of McIntosh et al. 2016.

Stimulus history as input channels; conv 16@15×15 → conv 8@9×9 → dense → softplus; Gaussian
noise σ 0.1 after each conv, L2 1e-3 on weights, L1 1e-3 on readout activity, Poisson loss,
Adam (REFERENCES: Deep Retina). The original used 40 frames of 10 ms; we use the recording's
window (25 frames at 100 Hz) so every model sees the same 250 ms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoder.models.base import ModelConfig, RetinaModel, gaussian_noise, two_conv_output_shape


class DeepRetinaConfig(ModelConfig):
    filters1: int = 16
    kernel1: int = 15
    filters2: int = 8
    kernel2: int = 9
    noise_sigma: float = 0.1
    l2_weights: float = 1e-3
    l1_activity: float = 1e-3


class DeepRetina(RetinaModel):
    name = "deep-retina"
    default_loss = "poisson"
    config: DeepRetinaConfig

    def __init__(
        self,
        config: DeepRetinaConfig,
        n_cells: int,
        frame_shape: tuple[int, int],
        frame_rate_hz: float,
    ) -> None:
        super().__init__(config, n_cells, frame_shape, frame_rate_hz)
        c = config
        h2, w2 = two_conv_output_shape("deep-retina", frame_shape, c.kernel1, c.kernel2)
        self.conv1 = nn.Conv2d(self.window_frames, c.filters1, c.kernel1)
        self.conv2 = nn.Conv2d(c.filters1, c.filters2, c.kernel2)
        self.dense = nn.Linear(c.filters2 * h2 * w2, n_cells)
        nn.init.constant_(self.dense.bias, -2.0)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, H, W] contrast → [B, n_cells] expected spike count in the newest bin."""
        c = self.config
        h = torch.relu(
            gaussian_noise(self.conv1(x[:, -self.window_frames :]), c.noise_sigma, self.training)
        )
        h = torch.relu(gaussian_noise(self.conv2(h), c.noise_sigma, self.training))
        out = F.softplus(self.dense(h.flatten(1)))
        if self.training:
            l2 = sum(m.weight.pow(2).sum() for m in (self.conv1, self.conv2, self.dense))
            self._penalty = c.l2_weights * l2 + c.l1_activity * out.abs().mean()
        return out

    def core_modules(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]

    def first_layer_filters(self) -> Tensor:
        w = self.conv1.weight.detach()
        lag = w.pow(2).sum((2, 3)).argmax(1)
        return w[torch.arange(w.shape[0]), lag]
