"""`streaming`: the deployment model — fully convolutional, space-time separable, causal.

Each layer is a per-frame spatial convolution followed by a causal temporal convolution
(a Conv3d with kernel (T_k, 1, 1), i.e. mixing channels over the last T_k frames at each
pixel). The two temporal kernels span exactly the window: T1 + T2 − 1 = window frames
(T2 from `temporal2_ms` at the recording's frame rate).

Why this shape: a new camera frame needs only *one* frame of spatial convolutions plus a
T_k-tap dot product per channel and pixel over cached spatial responses; nothing of the past
is recomputed, unlike a window model that reconvolves all T frames every bin. The state is
the two caches of spatial responses, passed explicitly (ONNX Runtime cannot update state
hidden in parameters; REFERENCES: runtime facts). No batch-norm: its statistics caused a
train/validation gap in the fully convolutional Deep Retina (REFERENCES), so it is avoided.

Core: the layers and a 1×1 convolution to `n_types` rate maps (softplus), with the step form
(`init_state`, `step`); readout: `CellSelector` picks a type and location per recorded cell
(semantic loss of Xu et al. 2017) during training, with a gain and an offset per cell
(`cell_affine`). The maps are shared by every session.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
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
from encoder.models.fullyconv import map_shape
from encoder.models.readout import Readout


class StreamingConfig(ModelConfig):
    spatial1: int = 8  # spatial filters of layer 1 (YADLRetina: 8 filters, 15 px)
    kernel1: int = 15
    channels1: int = 8  # channels after the temporal stage of layer 1
    spatial2: int = 12  # YADLRetina: 12 filters, 5 px
    kernel2: int = 5
    channels2: int = 12
    # Span of the second temporal conv (ms; 5 taps at 100 Hz); the first gets the rest of the
    # window: T1 = window − T2 + 1 frames.
    temporal2_ms: float = Field(default=50.0, gt=0)
    n_types: int = 8
    map_stride: int = 2
    noise_sigma: float = 0.1  # Deep Retina: Gaussian noise σ 0.1 after each conv
    semantic_weight: float = 1e-3
    # A gain and an offset per recorded cell on its map's generator, in training and
    # evaluation only (`CellSelector.cell_output`); the deployed maps are unchanged. On by
    # default since 2026-12-03: FEV up on every accuracy row (benchmarks/accuracy); older
    # checkpoints load without it (`encoder.checkpoint.LEGACY_CONFIG`).
    cell_affine: bool = True
    type_labels: tuple[str, ...] = ()


class StreamingCore(Core):
    """Separable causal layers → type maps; features [B, n_types, ⌈H/s⌉, ⌈W/s⌉] per window."""

    model_name = "streaming"
    per_frame = True
    config: StreamingConfig

    def __init__(
        self, config: StreamingConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> None:
        super().__init__(config, frame_shape, frame_rate_hz)
        c = config
        if c.kernel1 % 2 == 0 or c.kernel2 % 2 == 0:
            raise ModelConfigError("streaming: kernel1 and kernel2 must be odd ('same' padding)")
        self.t2 = self.frames(c.temporal2_ms)
        if self.t2 > self.window_frames:
            raise ModelConfigError(
                f"streaming: temporal2_ms {c.temporal2_ms:g} ms ({self.t2} frames at "
                f"{self.frame_rate_hz:g} Hz) is longer than the window of "
                f"{self.window_frames} frames ({c.window_ms:g} ms)"
            )
        self.t1 = self.window_frames - self.t2 + 1
        # Layer 1 runs at the map stride: 4× less work for every later stage, and the readout
        # grid is the layer-1 grid (output pixel i is centred on input pixel i·stride).
        self.space1 = nn.Conv2d(
            1, c.spatial1, c.kernel1, padding=c.kernel1 // 2, stride=c.map_stride
        )
        self.time1 = nn.Conv2d(c.spatial1, c.channels1, (self.t1, 1))
        self.space2 = nn.Conv2d(c.channels1, c.spatial2, c.kernel2, padding=c.kernel2 // 2)
        self.time2 = nn.Conv2d(c.spatial2, c.channels2, (self.t2, 1))
        self.type_maps = nn.Conv2d(c.channels2, c.n_types, 1)
        self.feature_shape = (c.n_types, *map_shape(frame_shape, c.map_stride))

    def reset_parameters(self) -> None:
        assert self.type_maps.bias is not None
        # start near a low rate, typical of RGC baselines
        nn.init.constant_(self.type_maps.bias, -2.0)

    def temporal_frames(self) -> dict[str, int]:
        return {**super().temporal_frames(), "temporal2_ms": self.t2}

    # ------------------------------------------------------------------ stages
    def _spatial(self, conv: nn.Conv2d, x: Tensor) -> Tensor:
        """x: [B, C, N, H, W] → per-frame spatial conv → [B, C', N, H', W']."""
        b, ch, n, h, w = x.shape
        y = conv(x.permute(0, 2, 1, 3, 4).reshape(b * n, ch, h, w))
        return y.reshape(b, n, *y.shape[1:]).permute(0, 2, 1, 3, 4)

    @staticmethod
    def _temporal(conv: nn.Conv2d, x: Tensor) -> Tensor:
        """Causal temporal conv as a Conv2d over [B, C, N, H·W]: [B, C, N, H, W] → [B, C', N', H, W].

        A (T_k, 1) Conv2d over flattened pixels is the same operation as a (T_k, 1, 1) Conv3d
        but runs several times faster on CPU and exports to a plain 2-D ONNX Conv.
        """
        b, ch, n, h, w = x.shape
        y = conv(x.reshape(b, ch, n, h * w))
        return y.reshape(b, y.shape[1], y.shape[2], h, w)

    def maps_from_sequence(self, x: Tensor, pad: bool) -> Tensor:
        """x: [B, N, H, W] → maps [B, N', n_types, H', W'] (N' = N if pad else N − T + 1)."""
        s1 = self._spatial(self.space1, x.unsqueeze(1))
        if pad:
            s1 = F.pad(s1, (0, 0, 0, 0, self.t1 - 1, 0))
        h1 = torch.relu(
            gaussian_noise(self._temporal(self.time1, s1), self.config.noise_sigma, self.training)
        )
        s2 = self._spatial(self.space2, h1)
        if pad:
            s2 = F.pad(s2, (0, 0, 0, 0, self.t2 - 1, 0))
        h2 = torch.relu(
            gaussian_noise(self._temporal(self.time2, s2), self.config.noise_sigma, self.training)
        )
        b, ch, n, hh, ww = h2.shape
        maps = F.softplus(self.type_maps(h2.permute(0, 2, 1, 3, 4).reshape(b * n, ch, hh, ww)))
        return maps.reshape(b, n, *maps.shape[1:])

    # ------------------------------------------------------------------ window API
    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, H, W] of any H, W → rate maps [B, n_types, ⌈H/s⌉, ⌈W/s⌉] (counts/bin)."""
        return self.maps_from_sequence(x[:, -self.window_frames :], pad=False)[:, -1]

    def forward_chunk(self, x: Tensor) -> Tensor:
        """x: [B, L, H, W] → maps [B, L − T + 1, n_types, H', W'] (every full window)."""
        return self.maps_from_sequence(x, pad=False)

    # ------------------------------------------------------------------ streaming API
    def init_state(
        self, batch: int, frame_shape: tuple[int, int] | None = None
    ) -> tuple[Tensor, ...]:
        """Zero caches: ([B, spatial1, T1 − 1, H', W'], [B, spatial2, T2 − 1, H', W']).

        H' = ⌈H/s⌉, W' = ⌈W/s⌉ with s the map stride (the caches hold layer-1 resolution).
        """
        h, w = map_shape(frame_shape or self.frame_shape, self.config.map_stride)
        p = self.space1.weight
        c = self.config
        return (
            torch.zeros(batch, c.spatial1, self.t1 - 1, h, w, dtype=p.dtype, device=p.device),
            torch.zeros(batch, c.spatial2, self.t2 - 1, h, w, dtype=p.dtype, device=p.device),
        )

    def step(self, frame: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """frame: [B, H, W], state from `init_state` → (maps [B, n_types, H', W'], new state).

        Fixed work per frame: two per-frame spatial convolutions, two temporal dot products over
        the caches; no data-dependent control flow (exports to a static ONNX graph).
        """
        cache1, cache2 = state
        s1 = self.space1(frame.unsqueeze(1)).unsqueeze(2)  # [B, S1, 1, H, W]
        full1 = torch.cat([cache1, s1], dim=2)
        h1 = torch.relu(self._temporal(self.time1, full1)).squeeze(2)  # [B, C1, H, W]
        s2 = self.space2(h1).unsqueeze(2)
        full2 = torch.cat([cache2, s2], dim=2)
        h2 = torch.relu(self._temporal(self.time2, full2)).squeeze(2)
        maps = F.softplus(self.type_maps(h2))
        return maps, (full1[:, :, 1:], full2[:, :, 1:])

    def forward_sequence(self, x: Tensor) -> Tensor:
        """x: [B, N, H, W] from zero state → [B, N, n_types, H', W']; equals `step` N times."""
        return self.maps_from_sequence(x, pad=True)

    def feature_modules(self) -> list[nn.Module]:
        return [self.space1, self.time1, self.space2, self.time2]

    def first_layer_filters(self) -> Tensor:
        return self.space1.weight.detach()[:, 0]


class StreamingModel(RateMapMixin, RetinaModel):
    name = "streaming"
    default_loss = "poisson"
    stateful = True
    ratemap = True
    config: StreamingConfig
    core: StreamingCore

    @classmethod
    def build_core(
        cls, config: ModelConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> Core:
        assert isinstance(config, StreamingConfig)
        return StreamingCore(config, frame_shape, frame_rate_hz)

    @classmethod
    def build_readout(cls, core: Core, n_cells: int) -> Readout:
        c = core.config
        assert isinstance(c, StreamingConfig)
        return CellSelector(
            n_cells,
            c.n_types,
            map_shape(core.frame_shape, c.map_stride),
            c.semantic_weight,
            cell_affine=c.cell_affine,
        )

    def forward_maps(self, x: Tensor) -> Tensor:
        """x: [B, T, H, W] of any H, W → rate maps [B, n_types, ⌈H/s⌉, ⌈W/s⌉] (counts/bin)."""
        return self.core(x)

    # ------------------------------------------------------------------ streaming API
    def init_state(
        self, batch: int, frame_shape: tuple[int, int] | None = None
    ) -> tuple[Tensor, ...]:
        """The core's zero caches (see `StreamingCore.init_state`)."""
        return self.core.init_state(batch, frame_shape)

    def step_maps(
        self, frame: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """frame: [B, H, W], state from `init_state` → (maps [B, n_types, H', W'], new state)."""
        return self.core.step(frame, state)

    def step(self, frame: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """frame: [B, H, W] → ([B, n_cells], new state); frame size must be the training one."""
        maps, new_state = self.core.step(frame, state)
        return self.readout(maps), new_state

    def forward_sequence(self, x: Tensor) -> Tensor:
        """x: [B, N, H, W] from zero state → [B, N, n_cells]; equals `step` applied N times."""
        return self.readout.forward_chunk(self.core.forward_sequence(x))

    def forward_sequence_maps(self, x: Tensor) -> Tensor:
        """x: [B, N, H, W] from zero state → [B, N, n_types, H', W']."""
        return self.core.forward_sequence(x)
