"""The interface every retina model implements, plus the pieces several models share.

A model maps a window of stimulus history to the expected spike count of each cell in the
newest frame bin. Training and evaluation work on contiguous *chunks* of frames
(`forward_chunk`), because models whose first stage runs per frame (the CNN-LSTM, the
streaming model) then compute that stage once per frame instead of once per window —
a ~25× saving that keeps training within the 2-core budget of the accuracy benchmark.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from encoder.errors import EncoderError
from encoder.timebase import DEFAULT_WINDOW_MS, frames_from_ms

#: Input size used to report parameter counts (`npe models`): the synthetic retina's default
#: 32×32 px frames at 100 Hz with a 250 ms window (REFERENCES: YADLRetina's 250 ms window).
DEFAULT_FRAME_SHAPE: tuple[int, int] = (32, 32)
DEFAULT_FRAME_RATE_HZ: float = 100.0
DEFAULT_WINDOW_FRAMES: int = 25
DEFAULT_N_CELLS: int = 32


class ModelConfigError(EncoderError, ValueError):
    """A model name or configuration that cannot build a model."""


class ModelConfig(BaseModel):
    """Base of every model's hyper-parameters; subclasses add their own fields.

    Every temporal extent is a duration in ms (fields end in `_ms`), never a frame count: the
    model turns it into frames at build time from the recording's frame rate
    (`encoder.timebase.frames_from_ms`), so a config means the same network at 30 or 120 Hz.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_ms: float = Field(default=DEFAULT_WINDOW_MS, gt=0)  # stimulus history seen

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def two_conv_output_shape(
    model_name: str, frame_shape: tuple[int, int], kernel1: int, kernel2: int
) -> tuple[int, int]:
    """(height, width) left after two unpadded convolutions, or a clear refusal.

    The seed models' dense readouts are sized from this, so a frame smaller than the two
    layers' receptive field must fail at construction with the sizes named, not later as a
    shape error deep inside torch.
    """
    h = frame_shape[0] - kernel1 - kernel2 + 2
    w = frame_shape[1] - kernel1 - kernel2 + 2
    if h < 1 or w < 1:
        raise ModelConfigError(
            f"{model_name}: frames of {list(frame_shape)} px are smaller than the "
            f"{kernel1 + kernel2 - 1} px receptive field of the two conv layers"
        )
    return h, w


def gaussian_noise(x: Tensor, sigma: float, training: bool) -> Tensor:
    """Additive Gaussian noise on activations during training (YADLRetina, Deep Retina σ 0.1)."""
    if training and sigma > 0:
        return x + sigma * torch.randn_like(x)
    return x


class RetinaModel(nn.Module):
    """Base class: `forward(x [B, T, H, W] contrast) -> [B, n_cells]` expected counts per bin.

    Subclasses set the class attributes and implement `forward`; `forward_chunk` has a generic
    (window-unfolding) implementation that per-frame models override. The window is
    `config.window_ms` turned into frames at `frame_rate_hz`; subclasses turn their own `_ms`
    fields into frames with `self.frames(ms)` and report them in `temporal_frames`.
    """

    name: ClassVar[str] = ""
    default_loss: ClassVar[str] = "poisson"
    stateful: ClassVar[bool] = False
    ratemap: ClassVar[bool] = False

    def __init__(
        self,
        config: ModelConfig,
        n_cells: int,
        frame_shape: tuple[int, int],
        frame_rate_hz: float,
    ) -> None:
        super().__init__()
        if n_cells < 1:
            raise ModelConfigError(f"n_cells must be ≥ 1, got {n_cells}")
        if len(frame_shape) != 2 or min(frame_shape) < 1:
            raise ModelConfigError(f"frame_shape must be (height, width) ≥ 1, got {frame_shape}")
        if not (math.isfinite(frame_rate_hz) and frame_rate_hz > 0):
            raise ModelConfigError(f"frame_rate_hz must be a positive number, got {frame_rate_hz}")
        self.config = config
        self.n_cells = int(n_cells)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.frame_rate_hz = float(frame_rate_hz)
        self.window_frames = self.frames(config.window_ms)
        self._penalty: Tensor | None = None

    def frames(self, ms: float) -> int:
        """`ms` as whole frames at this model's frame rate (the shared `frames_from_ms`)."""
        try:
            return frames_from_ms(ms, self.frame_rate_hz)
        except ValueError as exc:
            raise ModelConfigError(f"{self.name}: {exc}") from exc

    def temporal_frames(self) -> dict[str, int]:
        """Frames this model uses for each `_ms` field of its config (checked by the tests).

        Subclasses with more temporal fields extend it; the window is common to all.
        """
        return {"window_ms": self.window_frames}

    # ----------------------------------------------------------------- generic API
    def forward_chunk(self, x: Tensor) -> Tensor:
        """Outputs for every full window inside a contiguous chunk.

        x: [B, L, H, W] float32 contrast with L ≥ T → [B, L - T + 1, n_cells]; entry j is
        `forward(x[:, j : j + T])`, i.e. the prediction for frame j + T - 1.
        """
        t = self.window_frames
        if x.shape[1] < t:
            raise ValueError(f"chunk of {x.shape[1]} frames is shorter than the window ({t})")
        windows = x.unfold(1, t, 1)  # [B, L-T+1, H, W, T]
        b, n = windows.shape[0], windows.shape[1]
        windows = windows.permute(0, 1, 4, 2, 3).reshape(b * n, t, x.shape[2], x.shape[3])
        return self.forward(windows).reshape(b, n, -1)

    def penalty(self) -> Tensor:
        """Regularisation terms from the latest training forward pass (0 when none)."""
        if self._penalty is None:
            return torch.zeros(())
        return self._penalty

    def core_modules(self) -> list[nn.Module]:
        """Modules frozen by `--freeze core` (the convolutional feature extractor)."""
        return []

    def first_layer_filters(self) -> Tensor:
        """Spatial profile of each first-layer filter: [n_filters, kh, kw] (for figures)."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def n_parameters(self) -> int:
        return sum(int(p.numel()) for p in self.parameters())


def _softmax_semantic_loss(logits: Tensor) -> Tensor:
    """Semantic loss of Xu et al. 2017 for 'exactly one' over the last axis, mean over rows.

    L = −log Σ_j p_j Π_{k≠j}(1 − p_k) with p = softmax(logits); computed in log space as
    −[logsumexp_j(log p_j − log(1 − p_j)) + Σ_k log(1 − p_k)] so that it stays finite as the
    distribution approaches one-hot (REFERENCES: fully convolutional Deep Retina).
    """
    logp = torch.log_softmax(logits, dim=-1)
    log1mp = torch.log1p(-torch.exp(logp).clamp(max=1.0 - 1e-6))
    value = torch.logsumexp(logp - log1mp, dim=-1) + log1mp.sum(dim=-1)
    return -value.mean()


class CellSelector(nn.Module):
    """Maps rate maps to recorded cells: which type map and which location explain each cell.

    Each cell has a softmax over types and a softmax over map locations; its prediction is the
    map value under those distributions. The semantic loss pushes both towards one-hot, so after
    training each cell is one type at one place and the maps can be tiled over any frame.

    maps: [B, n_types, h, w] → [B, n_cells].
    """

    def __init__(self, n_cells: int, n_types: int, map_shape: tuple[int, int]) -> None:
        super().__init__()
        self.map_shape = map_shape
        self.type_logits = nn.Parameter(0.01 * torch.randn(n_cells, n_types))
        self.loc_logits = nn.Parameter(torch.zeros(n_cells, map_shape[0] * map_shape[1]))

    def forward(self, maps: Tensor) -> Tensor:
        if tuple(maps.shape[-2:]) != self.map_shape:
            raise ValueError(
                f"rate maps of {list(maps.shape[-2:])} do not match the selector's "
                f"{list(self.map_shape)}; use forward_maps for other frame sizes"
            )
        p_type = torch.softmax(self.type_logits, dim=-1)  # [C, K]
        p_loc = torch.softmax(self.loc_logits, dim=-1)  # [C, h*w]
        flat = maps.flatten(2)  # [B, K, h*w]
        per_type = torch.einsum("bkl,cl->bck", flat, p_loc)
        return (per_type * p_type.unsqueeze(0)).sum(-1)

    def semantic_loss(self) -> Tensor:
        return _softmax_semantic_loss(self.type_logits) + _softmax_semantic_loss(self.loc_logits)

    @torch.no_grad()
    def init_locations(
        self, ys: NDArray[np.float64], xs: NDArray[np.float64], sigma: float
    ) -> None:
        """Start each cell's location distribution as a Gaussian bump at (ys[c], xs[c]) map px."""
        h, w = self.map_shape
        gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        for c, (y, x) in enumerate(zip(ys, xs, strict=True)):
            if not (math.isfinite(float(y)) and math.isfinite(float(x))):
                continue
            d2 = (gy - y) ** 2 + (gx - x) ** 2
            self.loc_logits[c] = torch.from_numpy((-d2 / (2 * sigma**2)).ravel()).float()

    @torch.no_grad()
    def init_types(self, type_index: NDArray[np.int64], strength: float = 4.0) -> None:
        """Start cell c on map type_index[c] (from the recording's cell types) instead of a
        near-uniform mixture, which otherwise lets ON and OFF cells pull every map both ways
        and slows the symmetry breaking down badly. Still learnable (soft logits)."""
        self.type_logits.zero_()
        for c, k in enumerate(type_index.tolist()):
            if 0 <= k < self.type_logits.shape[1]:
                self.type_logits[c, k] = strength

    def assignments(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(type index [n_cells], flat location index [n_cells]) of each cell's argmax."""
        return (
            self.type_logits.argmax(-1).cpu().numpy().astype(np.int64),
            self.loc_logits.argmax(-1).cpu().numpy().astype(np.int64),
        )


def polarity_of(label: str) -> int:
    """+1 for ON types, -1 for OFF types, 0 when the label says neither."""
    words = label.upper().replace("-", " ").split()
    if "OFF" in words:
        return -1
    if "ON" in words:
        return 1
    return 0


class RateMapMixin:
    """Shared rate-map bookkeeping for `fullyconv` and `streaming`.

    Map pixel (i, j) is centred on input pixel (i·s, j·s) with s the readout stride, in
    input-pixel index coordinates (pixel k's centre is k). Degrees follow as
    x_deg = (x_px − (W − 1)/2)·pixel_size_deg, y_deg = −(y_px − (H − 1)/2)·pixel_size_deg.
    """

    config: Any
    selector: CellSelector

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
