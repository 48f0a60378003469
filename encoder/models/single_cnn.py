"""`single-cnn`: the single-cell CNN of YADLRetina (Crespo-Cano et al. 2018).

250 ms of stimulus enters as input channels (one per frame); two convolutional layers with
5 and 5 spatio-temporal filters (15 px then 5 px kernels), a dense readout and a sigmoid:
the output is the probability of at least one spike in the newest bin, trained with binary
cross-entropy and Adam, weights normal-initialised (REFERENCES: YADLRetina). The original
had ~150k parameters at its input size; `npe models` reports ours at the default input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encoder.models.base import ModelConfig, RetinaModel, two_conv_output_shape


class SingleCNNConfig(ModelConfig):
    filters1: int = 5
    kernel1: int = 15
    filters2: int = 5
    kernel2: int = 5
    init_std: float = 0.01  # normal initialisation, as in the original


class SingleCNN(RetinaModel):
    name = "single-cnn"
    default_loss = "bce"
    config: SingleCNNConfig

    def __init__(
        self,
        config: SingleCNNConfig,
        n_cells: int,
        frame_shape: tuple[int, int],
        frame_rate_hz: float,
    ) -> None:
        super().__init__(config, n_cells, frame_shape, frame_rate_hz)
        c = config
        h2, w2 = two_conv_output_shape("single-cnn", frame_shape, c.kernel1, c.kernel2)
        self.conv1 = nn.Conv2d(self.window_frames, c.filters1, c.kernel1)
        self.conv2 = nn.Conv2d(c.filters1, c.filters2, c.kernel2)
        self.dense = nn.Linear(c.filters2 * h2 * w2, n_cells)
        for layer in (self.conv1, self.conv2, self.dense):
            nn.init.normal_(layer.weight, std=c.init_std)
            nn.init.constant_(layer.bias, -2.0 if layer is self.dense else 0.0)  # type: ignore[arg-type]  # start at p(spike) ≈ 0.12

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, H, W] contrast → [B, n_cells] spike probability in the newest bin."""
        h = torch.relu(self.conv1(x[:, -self.window_frames :]))
        h = torch.relu(self.conv2(h))
        return torch.sigmoid(self.dense(h.flatten(1)))

    def core_modules(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]

    def first_layer_filters(self) -> Tensor:
        """Spatial profile at the lag of largest energy of each conv1 filter: [5, 15, 15]."""
        w = self.conv1.weight.detach()  # [F, T, k, k]
        lag = w.pow(2).sum((2, 3)).argmax(1)
        return w[torch.arange(w.shape[0]), lag]
