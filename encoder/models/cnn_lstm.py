"""`cnn-lstm`: the population CNN-LSTM of YADLRetina (Crespo-Cano et al. 2018).

Per-frame spatial convolutions (8 filters of 15 px, 12 of 5 px) with Gaussian noise on the
activations, dropout and an L2 activity regulariser, then an LSTM over the frames of the
window and a linear readout to all cells with softplus (REFERENCES: YADLRetina, ~1.5M
parameters; the hidden size 150 gives ~1.5M at 32×32 input).

The convolutions are per frame (purely spatial) so the model is causal and has a clean
`step`: one frame through the convolutions, one LSTM update. The LSTM is written out with
explicit matrix products so that (a) the input projection of each frame is computed once and
shared by all overlapping windows in training (`forward_chunk`) and (b) it exports to plain
MatMul/Sigmoid/Tanh ONNX ops.

Semantics: `forward(window)` runs the LSTM from zero state over the T frames of the window
(the original's stateless LSTM). `step`/`forward_sequence` run it continuously from zero
state, so they equal `forward` only for the first T frames; the deployment model with exact
window semantics in step form is `streaming`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoder.models.base import ModelConfig, ModelConfigError, RetinaModel, gaussian_noise


@dataclass(frozen=True)
class CNNLSTMConfig(ModelConfig):
    filters1: int = 8
    kernel1: int = 15
    filters2: int = 12
    kernel2: int = 5
    hidden: int = 150
    noise_sigma: float = 0.1
    dropout: float = 0.2
    l2_activity: float = 1e-4


class CNNLSTM(RetinaModel):
    name = "cnn-lstm"
    default_loss = "poisson"
    stateful = True
    config: CNNLSTMConfig

    def __init__(
        self, config: CNNLSTMConfig, n_cells: int, frame_shape: tuple[int, int], window_frames: int
    ) -> None:
        super().__init__(config, n_cells, frame_shape, window_frames)
        c = config
        h2 = frame_shape[0] - c.kernel1 - c.kernel2 + 2
        w2 = frame_shape[1] - c.kernel1 - c.kernel2 + 2
        if h2 < 1 or w2 < 1:
            raise ModelConfigError(
                f"cnn-lstm: frames of {list(frame_shape)} px are smaller than the "
                f"{c.kernel1 + c.kernel2 - 1} px receptive field of the two conv layers"
            )
        self.conv1 = nn.Conv2d(1, c.filters1, c.kernel1)
        self.conv2 = nn.Conv2d(c.filters1, c.filters2, c.kernel2)
        self.drop = nn.Dropout(c.dropout)
        self.input_proj = nn.Linear(c.filters2 * h2 * w2, 4 * c.hidden)
        self.recurrent = nn.Linear(c.hidden, 4 * c.hidden, bias=False)
        self.readout = nn.Linear(c.hidden, n_cells)
        with torch.no_grad():  # forget-gate bias 1: remember by default
            self.input_proj.bias[c.hidden : 2 * c.hidden] += 1.0
        nn.init.constant_(self.readout.bias, -2.0)

    # ------------------------------------------------------------------ stages
    def _frame_gates(self, x: Tensor) -> Tensor:
        """x: [B, N, H, W] → input contributions to the LSTM gates [B, N, 4·hidden]."""
        c = self.config
        b, n, h, w = x.shape
        f = x.reshape(b * n, 1, h, w)
        a1 = torch.relu(gaussian_noise(self.conv1(f), c.noise_sigma, self.training))
        a2 = torch.relu(gaussian_noise(self.conv2(a1), c.noise_sigma, self.training))
        if self.training:
            self._penalty = c.l2_activity * (a1.pow(2).mean() + a2.pow(2).mean())
        return self.input_proj(self.drop(a2.flatten(1))).reshape(b, n, -1)

    def _cell(self, gates_in: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One LSTM update: gates_in [B, 4H], h, c [B, H] → (h', c')."""
        gates = gates_in + self.recurrent(h)
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return h_new, c_new

    def _run(self, gates: Tensor) -> Tensor:
        """gates: [B, N, 4H] from zero state → hidden states [B, N, H]."""
        b, n, _ = gates.shape
        h = gates.new_zeros(b, self.config.hidden)
        c = gates.new_zeros(b, self.config.hidden)
        hs = []
        for t in range(n):
            h, c = self._cell(gates[:, t], h, c)
            hs.append(h)
        return torch.stack(hs, dim=1)

    def _out(self, h: Tensor) -> Tensor:
        return F.softplus(self.readout(h))

    # ------------------------------------------------------------------ window API
    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, H, W] contrast → [B, n_cells]: LSTM over the window from zero state."""
        gates = self._frame_gates(x[:, -self.window_frames :])
        return self._out(self._run(gates)[:, -1])

    def forward_chunk(self, x: Tensor) -> Tensor:
        """x: [B, L, H, W] → [B, L − T + 1, n_cells]; convolutions computed once per frame."""
        t = self.window_frames
        gates = self._frame_gates(x)  # [B, L, 4H]
        windows = gates.unfold(1, t, 1)  # [B, n, 4H, T]
        b, n = windows.shape[:2]
        windows = windows.permute(0, 1, 3, 2).reshape(b * n, t, -1)
        h = self._run(windows)[:, -1]
        return self._out(h).reshape(b, n, -1)

    # ------------------------------------------------------------------ streaming API
    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        """(h [B, hidden], c [B, hidden]) zeros."""
        p = self.readout.weight
        z = torch.zeros(batch, self.config.hidden, dtype=p.dtype, device=p.device)
        return (z, z.clone())

    def step(self, frame: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """frame: [B, H, W], state (h, c) → ([B, n_cells], (h', c'))."""
        gates = self._frame_gates(frame.unsqueeze(1))[:, 0]
        h, c = self._cell(gates, state[0], state[1])
        return self._out(h), (h, c)

    def forward_sequence(self, x: Tensor) -> Tensor:
        """x: [B, N, H, W] from zero state, LSTM never reset → [B, N, n_cells]."""
        return self._out(self._run(self._frame_gates(x)))

    def core_modules(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]

    def first_layer_filters(self) -> Tensor:
        return self.conv1.weight.detach()[:, 0]
