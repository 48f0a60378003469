"""`cnn-lstm`: the population CNN-LSTM of YADLRetina (Crespo-Cano et al. 2018).

Per-frame spatial convolutions (8 filters of 15 px, 12 of 5 px) with Gaussian noise on the
activations, dropout and an L2 activity regulariser, then an LSTM over the frames of the
window and a readout to all cells with softplus.

Two layouts (`readout`):
* "map" (the default since 2026-12-04): 'same' convolutions and 2×2 pooling give a map of
  half the frame's size; a small LSTM (16 units, weights shared) runs at every place of it
  (a 1×1 convolutional LSTM) and each cell is read at its own place (`SpatialReadout`, its
  mask started at the cell's STA peak). ~16 k parameters at 32×32.
* "dense" (YADLRetina's, with `padding` "valid", `pool` 1): one LSTM (hidden 150) over the
  flattened valid map and a dense readout from its state (REFERENCES: YADLRetina, ~1.5M
  parameters at 32×32 input).
Why the default changed: on the synthetic retina's natural scenes never seen in training
(40 Hz) the dense layout reached 0.79 of the noise ceiling and its best of 17 variants 0.85,
where the map layout reaches 0.97 (benchmarks/accuracy, README): the dense layout learns each
cell's place inside one population-wide projection, which did not carry over to new scenes.
Older checkpoints load as the dense layout (`encoder.checkpoint.LEGACY_CONFIG`).

Layer 1 is space-time separable: a per-frame spatial convolution, then a causal temporal
convolution over the last `temporal1` = T − L + 1 frames of its responses (L = `lstm_ms` in
frames at the recording's frame rate), and
only then the rectification. Why: retinal subunits (bipolar cells) filter in time *before*
they rectify, and so does the synthetic retina; with purely spatial convolutions (this model's first
layout, still what `lstm_ms` ≥ `window_ms` gives) the ReLU discards the sign of a response before
the LSTM can filter it in time. On the benchmark's natural movie that layout converged to
0.859 mean PCC (87.8 % of the ceiling) in 9.6 min; with the temporal stage (16 taps, LSTM
over the last 10 frames) to 0.886 (90.5 %) in 6.5 min (benchmarks/accuracy). The model stays
causal and has a clean `step`: one frame through the convolutions (with a cache of the last
temporal1 − 1 spatial responses), one LSTM update. The LSTM is written out with
explicit matrix products so that (a) the input projection of each frame is computed once and
shared by all overlapping windows in training (`forward_chunk`) and (b) it exports to plain
MatMul/Sigmoid/Tanh ONNX ops.

Training dynamics (why `lstm_input` is scaled and the readout bias is set from the data):
the LSTM input is a flattened map of ~2.4k non-negative (ReLU) features. Adam moves every
weight by about `lr` per step whatever its gradient's size, so when all gradients share a sign
— as they do at the start, when the readout's mean rate is wrong — a plain `nn.Linear` with
its 1/√fan_in-sized weights moves every gate pre-activation by lr·Σ|a| ≈ 0.15 per step. Within
~100 steps the gates saturated (|pre-activation| ≫ 10), the LSTM state froze at ±1, gradients
through the sigmoid/tanh vanished, and only the readout bias kept learning: a constant
predictor (validation PCC 0.00 on white noise). Fixes, neither changing the architecture:
* the features enter the projection multiplied by 1/√fan_in and its weights are stored at unit
  scale (an "equalised learning rate", Karras et al. 2018): same function at init, but each
  Adam step moves the gates √fan_in times less;
* `init_output_bias(mean_counts)` (called by `encoder.train` before training) starts the
  softplus readout at each cell's mean count, so there is no large same-sign gradient to begin
  with (before: softplus(−2) = 0.13 spikes/bin for every cell);
* layer 1's temporal filter starts as a pass-through of the newest frame (the purely spatial
  layout) and learns its taps from there: from random taps the model never left "predict the
  mean" on white noise (validation PCC ≤ 0.02 after 7 epochs at Adam 1e-3 and 3e-3), where
  from the pass-through it learned from epoch 4.

Semantics: `forward(window)` runs the LSTM from zero state over the last T − temporal1 + 1
frames of the window (the original's stateless LSTM). `step`/`forward_sequence` run it
continuously from zero state (and a zero cache), so they do not equal `forward` on windows;
the deployment model with exact window semantics in step form is `streaming`.

Core: convolutions, temporal stage and LSTM (features: the hidden state [B, hidden], or the
hidden map [B, map_hidden, h, w]), with the step form; readout: `DenseReadout` with softplus
on the hidden state, or `SpatialReadout` on the map.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import Field
from torch import Tensor, nn

from encoder.models.base import (
    ModelConfig,
    ModelConfigError,
    RetinaModel,
    gaussian_noise,
    two_conv_output_shape,
)
from encoder.models.core import Core
from encoder.models.readout import DenseReadout, Readout, SpatialReadout


class CNNLSTMConfig(ModelConfig):
    filters1: int = 8
    kernel1: int = 15
    filters2: int = 12
    kernel2: int = 5
    # History the LSTM runs over (ms; 10 frames at 100 Hz); layer 1's temporal filter spans
    # the rest of the window (temporal1 = window − lstm frames + 1 frames; an LSTM history of
    # the whole window or more: purely spatial layer 1).
    lstm_ms: float = Field(default=100.0, gt=0)
    hidden: int = 150
    # Average pooling (pool × pool, stride pool) of layer 2's responses before the LSTM;
    # 1 = none (YADLRetina). With the map readout it sets the map's resolution (2: a
    # 16×16 map of 32×32 frames, `streaming`'s map stride); with the dense readout it shrinks
    # the features → gates projection (~95 % of that layout's parameters) by pool².
    pool: int = Field(default=2, ge=1)
    # Where the LSTM runs and how cells are read. "map" (default since 2026-12-04): one small
    # LSTM per location of layer 2's map (`map_hidden` units, weights shared across
    # locations: a 1×1 convolutional LSTM) and each cell read from its own place on the
    # hidden map (`SpatialReadout`). "dense" (YADLRetina): one LSTM over the flattened map
    # (`hidden` units), every cell read from that one population state. Why the change: on
    # the synthetic retina's unseen scenes at 40 Hz the dense layout reached 0.79 of the
    # ceiling (best of 17 variants 0.85), the map layout 0.97 (benchmarks/accuracy).
    readout: Literal["dense", "map"] = "map"
    map_hidden: int = Field(default=16, ge=1)
    # Spatial padding of both convolutions. "valid" (YADLRetina): layer 2's map covers only
    # the centre of the frame (32×32 → 14×14 with the 15 px and 5 px kernels), so a cell near
    # the edge has no place of its own on it (the map layout with valid padding: 0.81 of the
    # ceiling on that row). "same" (odd kernels): the map is the frame's size (÷ pool) and
    # every cell's receptive field has a map location at its centre, as in `streaming`.
    padding: Literal["valid", "same"] = "same"
    noise_sigma: float = 0.1
    dropout: float = 0.2
    l2_activity: float = 1e-4


class CNNLSTMCore(Core):
    """Per-frame convs (+ causal temporal stage) → LSTM.

    Features: the hidden state [B, hidden] ("dense") or the hidden map [B, map_hidden, h, w]
    ("map"; internally [B, h·w, map_hidden]: one LSTM per location, the locations a batch
    axis, so the same cell update serves both layouts).
    """

    model_name = "cnn-lstm"
    per_frame = True
    config: CNNLSTMConfig

    def __init__(
        self, config: CNNLSTMConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> None:
        super().__init__(config, frame_shape, frame_rate_hz)
        c = config
        if c.padding == "same":
            if c.kernel1 % 2 == 0 or c.kernel2 % 2 == 0:
                raise ModelConfigError("cnn-lstm: padding 'same' needs odd kernel1 and kernel2")
            h2, w2 = frame_shape
            pad1, pad2 = c.kernel1 // 2, c.kernel2 // 2
        else:
            h2, w2 = two_conv_output_shape("cnn-lstm", frame_shape, c.kernel1, c.kernel2)
            pad1 = pad2 = 0
        self.pad1 = pad1  # layer 1's spatial padding (the streaming cache's shape)
        self.lstm_frames = min(self.frames(c.lstm_ms), self.window_frames)
        self.temporal1 = self.window_frames - self.lstm_frames + 1
        self.conv1 = nn.Conv2d(1, c.filters1, c.kernel1, padding=pad1)
        # Layer 1's temporal stage: a causal (temporal1, 1) conv over per-frame responses,
        # before the rectification (see module docstring). None when temporal1 == 1.
        self.time1 = (
            nn.Conv2d(c.filters1, c.filters1, (self.temporal1, 1)) if self.temporal1 > 1 else None
        )
        self.conv2 = nn.Conv2d(c.filters1, c.filters2, c.kernel2, padding=pad2)
        self.drop = nn.Dropout(c.dropout)
        if c.pool > min(h2, w2):
            raise ModelConfigError(
                f"cnn-lstm: pool {c.pool} is larger than layer 2's {h2}×{w2} responses"
            )
        self.pool = nn.AvgPool2d(c.pool) if c.pool > 1 else None
        self.per_location = c.readout == "map"
        self.map_shape = (h2 // c.pool, w2 // c.pool)
        self.hidden = c.map_hidden if self.per_location else c.hidden
        n_features = c.filters2 if self.per_location else c.filters2 * math.prod(self.map_shape)
        # Equalised learning rate for the wide LSTM input projection (see module docstring):
        # weights at unit scale, features scaled by 1/√fan_in in `_gates`. Same
        # initial function as nn.Linear's default (effective weights U(±1/√fan_in)).
        self.feature_scale = 1.0 / math.sqrt(n_features)
        self.lstm_input = nn.Linear(n_features, 4 * self.hidden)
        self.recurrent = nn.Linear(self.hidden, 4 * self.hidden, bias=False)
        self.feature_shape = (self.hidden, *self.map_shape) if self.per_location else (self.hidden,)
        # Map pixel (i, j) of layer 2 is centred on input pixel (i·pool + offset,
        # j·pool + offset) (for `SpatialReadout.init_locations`); 'same' convs shift nothing.
        valid_shift = (c.kernel1 - 1) / 2 + (c.kernel2 - 1) / 2 if c.padding == "valid" else 0.0
        self.map_offset_px = valid_shift + (c.pool - 1) / 2

    def reset_parameters(self) -> None:
        c = self.config
        if self.time1 is not None:
            # Start as the purely spatial layout: each channel passes its newest frame through
            # (see module docstring, "Training dynamics").
            nn.init.zeros_(self.time1.weight)
            nn.init.zeros_(self.time1.bias)  # type: ignore[arg-type]
            with torch.no_grad():
                for i in range(c.filters1):
                    self.time1.weight[i, i, -1, 0] = 1.0
        nn.init.uniform_(self.lstm_input.weight, -1.0, 1.0)
        nn.init.zeros_(self.lstm_input.bias)
        with torch.no_grad():  # forget-gate bias 1: remember by default
            self.lstm_input.bias[self.hidden : 2 * self.hidden] = 1.0

    def temporal_frames(self) -> dict[str, int]:
        return {**super().temporal_frames(), "lstm_ms": self.lstm_frames}

    # ------------------------------------------------------------------ stages
    def _spatial1(self, x: Tensor) -> Tensor:
        """x: [B, N, H, W] → layer-1 spatial responses [B, F1, N, H1, W1] (before time1)."""
        b, n, h, w = x.shape
        s = self.conv1(x.reshape(b * n, 1, h, w))
        return s.reshape(b, n, *s.shape[1:]).permute(0, 2, 1, 3, 4)

    def _frame_gates(self, x: Tensor, history: Tensor | None = None) -> Tensor:
        """x: [B, N, H, W] → input contributions to the LSTM gates [B, N', 4·hidden].

        Without a temporal stage (temporal1 = 1) N' = N. With one, each output frame needs the
        temporal1 − 1 frames before it: `history` [B, F1, temporal1 − 1, H1, W1] supplies the
        spatial responses of the frames before x (the streaming cache, zeros from rest) and
        N' = N; without it the stage is 'valid' and N' = N − temporal1 + 1, so that a window
        model sees only its own frames.
        """
        if self.time1 is None:
            b, n, h, w = x.shape
            return self._gates(self.conv1(x.reshape(b * n, 1, h, w)), b, n)
        s1 = self._spatial1(x)
        if history is not None:
            s1 = torch.cat([history, s1], dim=2)
        return self._temporal_gates(s1)

    def _temporal_gates(self, s1: Tensor) -> Tensor:
        """s1: spatial responses [B, F1, M, H1, W1] → gates [B, M − temporal1 + 1, 4·hidden]."""
        assert self.time1 is not None
        b, ch, m, h1, w1 = s1.shape
        t = self.time1(s1.reshape(b, ch, m, h1 * w1))  # [B, F1, N', H1·W1]
        n = t.shape[2]
        z = t.reshape(b, ch, n, h1, w1).permute(0, 2, 1, 3, 4).reshape(b * n, ch, h1, w1)
        return self._gates(z, b, n)

    def _gates(self, z: Tensor, b: int, n: int) -> Tensor:
        """Layer-1 pre-activations z [B·N, F1, H1, W1] → LSTM input gates [B, N, 4·hidden]
        ("dense") or [B, N, h·w, 4·map_hidden] ("map")."""
        c = self.config
        a1 = torch.relu(gaussian_noise(z, c.noise_sigma, self.training))
        a2 = torch.relu(gaussian_noise(self.conv2(a1), c.noise_sigma, self.training))
        if self.training:
            self._penalty = c.l2_activity * (a1.pow(2).mean() + a2.pow(2).mean())
        if self.pool is not None:
            a2 = self.pool(a2)
        if self.per_location:  # channels last: [B·N, h·w, F2], one projection per place
            features = self.drop(a2.flatten(2).transpose(1, 2)) * self.feature_scale
            return self.lstm_input(features).reshape(b, n, *features.shape[1:2], -1)
        features = self.drop(a2.flatten(1)) * self.feature_scale
        return self.lstm_input(features).reshape(b, n, -1)

    def _cell(self, gates_in: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One LSTM update: gates_in [B, (h·w,) 4H], h, c [B, (h·w,) H] → (h', c')."""
        gates = gates_in + self.recurrent(h)
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return h_new, c_new

    def _run(self, gates: Tensor) -> Tensor:
        """gates: [B, N, (h·w,) 4H] from zero state → hidden states [B, N, (h·w,) H]."""
        n = gates.shape[1]
        h = gates.new_zeros(gates.shape[0], *gates.shape[2:-1], self.hidden)
        c = torch.zeros_like(h)
        hs = []
        for t in range(n):
            h, c = self._cell(gates[:, t], h, c)
            hs.append(h)
        return torch.stack(hs, dim=1)

    # ------------------------------------------------------------------ window API
    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, H, W] contrast → hidden state [B, hidden]: LSTM over the window from zero.

        With a temporal stage the LSTM runs over the T − temporal1 + 1 frames whose temporal
        filter lies inside the window.
        """
        gates = self._frame_gates(x[:, -self.window_frames :])
        return self._features(self._run(gates)[:, -1])

    def _features(self, h: Tensor) -> Tensor:
        """Hidden state → the readout's features: [B, hidden] as it is, or the per-location
        states [B, h·w, map_hidden] as a map [B, map_hidden, h, w]."""
        if not self.per_location:
            return h
        return h.transpose(1, 2).reshape(h.shape[0], self.hidden, *self.map_shape)

    def forward_chunk(self, x: Tensor) -> Tensor:
        """x: [B, L, H, W] → [B, L − T + 1, hidden]; convolutions computed once per frame."""
        t = self.window_frames - self.temporal1 + 1  # LSTM steps per window
        gates = self._frame_gates(x)  # [B, L − temporal1 + 1, (h·w,) 4H]
        b, n = gates.shape[0], gates.shape[1] - t + 1
        # Every window runs its own LSTM from zero state; all n windows advance together, and
        # step k of window j reads frame j + k, so step k's inputs are the view
        # gates[:, k : k + n]. Why not unfold the windows: that copies the gates t times
        # (335 MB per batch of the map layout at 100 Hz) and made training ~4× slower.
        h = gates.new_zeros(b, n, *gates.shape[2:-1], self.hidden)
        c = torch.zeros_like(h)
        for k in range(t):
            h, c = self._cell(gates[:, k : k + n], h, c)
        f = self._features(h.reshape(b * n, *h.shape[2:]))
        return f.reshape(b, n, *f.shape[1:])

    # ------------------------------------------------------------------ streaming API
    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        """Zeros: (h, c) [B, hidden] ("dense") or [B, h·w, map_hidden] ("map") and, with a
        temporal stage, the cache of the last temporal1 − 1 frames' spatial responses
        [B, F1, temporal1 − 1, H1, W1]."""
        p = self.recurrent.weight
        places = (math.prod(self.map_shape),) if self.per_location else ()
        z = torch.zeros(batch, *places, self.hidden, dtype=p.dtype, device=p.device)
        if self.time1 is None:
            return (z, z.clone())
        c = self.config
        h1, w1 = (d - c.kernel1 + 1 + 2 * self.pad1 for d in self.frame_shape)
        cache = torch.zeros(
            batch, c.filters1, self.temporal1 - 1, h1, w1, dtype=p.dtype, device=p.device
        )
        return (z, z.clone(), cache)

    def state_names(self) -> tuple[str, ...]:
        """Names of `init_state`'s tensors, in order (used by the exporter)."""
        return ("lstm_h", "lstm_c") if self.time1 is None else ("lstm_h", "lstm_c", "cache1")

    def step(self, frame: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """frame: [B, H, W], state from `init_state` → (features, next state)."""
        x = frame.unsqueeze(1)
        if self.time1 is None:
            gates = self._frame_gates(x)[:, 0]
            h, c = self._cell(gates, state[0], state[1])
            return self._features(h), (h, c)
        s1 = torch.cat([state[2], self._spatial1(x)], dim=2)  # [B, F1, temporal1, H1, W1]
        gates = self._temporal_gates(s1)[:, 0]
        h, c = self._cell(gates, state[0], state[1])
        return self._features(h), (h, c, s1[:, :, 1:])

    def forward_sequence(self, x: Tensor) -> Tensor:
        """x: [B, N, H, W] from zero state, LSTM never reset → features [B, N, *feature_shape]."""
        history = None
        if self.time1 is not None:
            history = self.init_state(x.shape[0])[2]
        h = self._run(self._frame_gates(x, history=history))  # [B, N, (h·w,) H]
        b, n = h.shape[:2]
        f = self._features(h.reshape(b * n, *h.shape[2:]))
        return f.reshape(b, n, *f.shape[1:])

    def feature_modules(self) -> list[nn.Module]:
        return [m for m in (self.conv1, self.time1, self.conv2) if m is not None]

    def first_layer_filters(self) -> Tensor:
        return self.conv1.weight.detach()[:, 0]


class CNNLSTM(RetinaModel):
    name = "cnn-lstm"
    default_loss = "poisson"
    stateful = True
    config: CNNLSTMConfig
    core: CNNLSTMCore

    @classmethod
    def build_core(
        cls, config: ModelConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> Core:
        assert isinstance(config, CNNLSTMConfig)
        return CNNLSTMCore(config, frame_shape, frame_rate_hz)

    @classmethod
    def build_readout(cls, core: Core, n_cells: int) -> Readout:
        assert isinstance(core, CNNLSTMCore)
        if core.per_location:
            channels, h, w = core.feature_shape
            return SpatialReadout(n_cells, (channels, h, w))
        return DenseReadout(n_cells, core.feature_shape, "softplus")

    def init_cell_locations(self, ys_px: NDArray[np.float64], xs_px: NDArray[np.float64]) -> None:
        """Start each cell's readout mask at input pixel (ys_px[c], xs_px[c]) (its STA peak);
        the dense readout has no place to start, so it is left as it is."""
        if isinstance(self.readout, SpatialReadout):
            pool, offset = float(self.config.pool), self.core.map_offset_px
            self.readout.init_locations((ys_px - offset) / pool, (xs_px - offset) / pool, 1.5)

    @property
    def temporal1(self) -> int:
        """Taps of layer 1's temporal stage (1: purely spatial layer 1)."""
        return self.core.temporal1

    @property
    def lstm_frames(self) -> int:
        return self.core.lstm_frames

    @property
    def time1(self) -> nn.Conv2d | None:
        return self.core.time1

    def init_output_bias(self, mean_counts: NDArray[np.floating]) -> None:
        """Start each cell's output at its mean count per bin: mean_counts [n_cells] ≥ 0.

        Sets the readout bias to softplus⁻¹(mean) so that training starts near the best
        constant predictor instead of pushing every LSTM gate the same way (module docstring).
        Only this model offers it at model level, which is what `encoder.train` looks for.
        """
        self.readout.init_output_bias(mean_counts)

    # ------------------------------------------------------------------ streaming API
    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        """The core's zero state (see `CNNLSTMCore.init_state`)."""
        return self.core.init_state(batch)

    def state_names(self) -> tuple[str, ...]:
        """Names of `init_state`'s tensors, in order (used by the exporter)."""
        return self.core.state_names()

    def step(self, frame: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """frame: [B, H, W], state from `init_state` → ([B, n_cells], next state)."""
        h, new_state = self.core.step(frame, state)
        return self.readout(h), new_state

    def forward_sequence(self, x: Tensor) -> Tensor:
        """x: [B, N, H, W] from zero state, LSTM never reset → [B, N, n_cells]."""
        return self.readout.forward_chunk(self.core.forward_sequence(x))
