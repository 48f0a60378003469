"""Readouts: features of a core → each recorded cell's expected count in the newest bin.

The readout is the per-recording part of a model (which cells, where they sit, their gain and
baseline); a multi-session model has one per session on a shared core. Each readout records
the regularisers of its latest training forward (`penalty()`) and can start its output at the
cells' mean counts (`init_output_bias`), which matters for readouts that end in a bias.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from encoder.models.config import ModelConfigError, sum_penalties


class Readout(nn.Module):
    """`forward(features [B, *feature_shape]) -> [B, n_cells]` expected counts (or p(spike)).

    `feature_shape` is the core output it expects; composing it with a core of another shape
    is refused (`RetinaModel`), so a readout can never silently read the wrong features.
    """

    def __init__(self, n_cells: int, feature_shape: tuple[int, ...]) -> None:
        super().__init__()
        if n_cells < 1:
            raise ModelConfigError(f"n_cells must be ≥ 1, got {n_cells}")
        self.n_cells = int(n_cells)
        self.feature_shape = tuple(int(v) for v in feature_shape)
        self._penalty: Tensor | None = None

    def forward(self, features: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_chunk(self, features: Tensor) -> Tensor:
        """features: [B, N, *feature_shape] → [B, N, n_cells] (all N as one batch)."""
        b, n = features.shape[:2]
        out = self.forward(features.reshape(b * n, *features.shape[2:]))
        return out.reshape(b, n, -1)

    def penalty(self) -> Tensor:
        """The readout's regularisation terms from its latest training forward (0 when none)."""
        return sum_penalties([self._penalty])

    def clear_penalty(self) -> None:
        """Forget the recorded terms (their graph may be gone after a backward pass)."""
        self._penalty = None

    def check_mean_counts(self, mean_counts: NDArray[np.floating]) -> NDArray[np.float64]:
        mu = np.asarray(mean_counts, dtype=np.float64).reshape(-1)
        if mu.shape != (self.n_cells,) or not np.all(np.isfinite(mu)) or np.any(mu < 0):
            raise ValueError(
                f"init_output_bias: need {self.n_cells} finite non-negative mean counts, "
                f"got shape {list(mu.shape)}"
            )
        return mu

    def init_output_bias(self, mean_counts: NDArray[np.floating]) -> None:
        """Start each cell's output at its mean count per bin: mean_counts [n_cells] ≥ 0.

        The base checks the counts and changes nothing: readouts without an output bias
        (the cell selector, the LN readout fitted in closed form) have nothing to set.
        """
        self.check_mean_counts(mean_counts)

    def reset_parameters(self) -> None:
        """Apply the model's initialisation (called by the builder after the core's)."""


class DenseReadout(Readout):
    """Flattened features → linear → softplus (counts) or sigmoid (p(≥ 1 spike)).

    The readout of the seed CNNs (YADLRetina, Deep Retina) and of the CNN-LSTM's hidden state.
    Optional L2 on its weights and L1 on its output activity (Deep Retina's regularisers).
    """

    def __init__(
        self,
        n_cells: int,
        feature_shape: tuple[int, ...],
        nonlinearity: Literal["softplus", "sigmoid"] = "softplus",
        *,
        init_std: float | None = None,
        init_bias: float = -2.0,
        l2_weight: float = 0.0,
        l1_activity: float = 0.0,
    ) -> None:
        super().__init__(n_cells, feature_shape)
        self.nonlinearity = nonlinearity
        self.init_std = init_std
        self.init_bias = init_bias
        self.l2_weight = l2_weight
        self.l1_activity = l1_activity
        self.linear = nn.Linear(math.prod(self.feature_shape), n_cells)

    def reset_parameters(self) -> None:
        if self.init_std is not None:
            nn.init.normal_(self.linear.weight, std=self.init_std)
        nn.init.constant_(self.linear.bias, self.init_bias)

    def forward(self, features: Tensor) -> Tensor:
        z = self.linear(features.flatten(1))
        out = torch.sigmoid(z) if self.nonlinearity == "sigmoid" else F.softplus(z)
        if self.training and (self.l2_weight or self.l1_activity):
            self._penalty = (
                self.l2_weight * self.linear.weight.pow(2).sum()
                + self.l1_activity * out.abs().mean()
            )
        return out

    def init_output_bias(self, mean_counts: NDArray[np.floating]) -> None:
        """Set the bias so that the output starts at each cell's mean count.

        softplus: bias = softplus⁻¹(mean). sigmoid (the output is p(≥ 1 spike)): bias =
        logit(1 − e^(−mean)), the Poisson probability of at least one spike at that mean.
        """
        mu = np.clip(self.check_mean_counts(mean_counts), 1e-3, None)
        if self.nonlinearity == "sigmoid":
            p = np.clip(-np.expm1(-mu), 1e-6, 1 - 1e-6)
            bias = np.log(p) - np.log1p(-p)
        else:
            bias = mu + np.log(-np.expm1(-mu))  # softplus⁻¹, stable for small and large mu
        with torch.no_grad():
            self.linear.bias.copy_(torch.as_tensor(bias, dtype=self.linear.bias.dtype))


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


class CellSelector(Readout):
    """The rate-map readout: which type map and which location explain each cell.

    Each cell has a softmax over types and a softmax over map locations; its prediction is the
    map value under those distributions. The semantic loss (weight `semantic_weight`, recorded
    in training) pushes both towards one-hot, so after training each cell is one type at one
    place and the maps can be tiled over any frame.

    maps: [B, n_types, h, w] → [B, n_cells].
    """

    def __init__(
        self,
        n_cells: int,
        n_types: int,
        map_shape: tuple[int, int],
        semantic_weight: float = 0.0,
        cell_affine: bool = False,
    ) -> None:
        super().__init__(n_cells, (n_types, *map_shape))
        self.map_shape = map_shape
        self.semantic_weight = semantic_weight
        self.type_logits = nn.Parameter(0.01 * torch.randn(n_cells, n_types))
        self.loc_logits = nn.Parameter(torch.zeros(n_cells, map_shape[0] * map_shape[1]))
        # Per-cell gain and offset of the generator (see `cell_output`); None: each cell is
        # its map's value, as the maps are deployed.
        self.log_gain = nn.Parameter(torch.zeros(n_cells)) if cell_affine else None
        self.offset = nn.Parameter(torch.zeros(n_cells)) if cell_affine else None

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
        out = self.cell_output((per_type * p_type.unsqueeze(0)).sum(-1))
        if self.training:
            self._penalty = self.semantic_weight * self.semantic_loss()
        return out

    def cell_output(self, selected: Tensor) -> Tensor:
        """Map values at the cells' places [B, n_cells] → the cells' expected counts.

        Without the per-cell affine: the values themselves. With it: softplus(g_c·u + o_c),
        u = softplus⁻¹(value) the map's generator, g_c = exp(log_gain_c) > 0 and o_c start at
        1 and 0 (the identity). Why: cells of one type in a real retina differ in threshold and
        gain (the LN-LN benchmark's cells have their own baseline and maximum rate), and a
        shared map with one output nonlinearity cannot fit them all; a gain *after* the
        nonlinearity would fix the level only, an offset *before* it moves the threshold, which
        changes the response's shape. The maps stay the type's own (deployment tiles them
        without the selector). The generator is recovered from the map's rate so that cores
        keep one output (rates): u = r + log(−expm1(−r)), with r floored at 1e-20 (u ≥ −46) so
        that a map pixel on the softplus floor stays finite.
        """
        if self.log_gain is None or self.offset is None:
            return selected
        r = selected.clamp(min=1e-20)
        generator = r + torch.log(-torch.expm1(-r))
        return F.softplus(torch.exp(self.log_gain) * generator + self.offset)

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


class SpatialReadout(Readout):
    """Each cell reads the feature map at its own place: a spatial mask times feature weights.

    features [B, C, h, w] → softplus(Σ_l p_c(l) Σ_k w_ck · f_k(l) + b_c) [B, n_cells], with
    p_c a softmax over the h·w map locations (a probability mask, so its scale cannot trade
    against the weights) and w_c one weight per feature channel: Klindt et al. 2017's
    factorised readout, the form `streaming`'s selector and openretina's Gaussian readouts
    share. Why: a dense readout from one population-wide state (YADLRetina) learns each
    cell's place as part of a 1.5 M-weight projection and on the synthetic retina's unseen
    scenes reached 0.79 of the ceiling; here a cell's place is a few hundred numbers and its
    response is the shared features *at* that place, which is what carries over to scenes
    never seen in training. `init_locations` starts the mask at a cell's STA peak.
    """

    def __init__(self, n_cells: int, feature_shape: tuple[int, int, int]) -> None:
        super().__init__(n_cells, feature_shape)
        channels, h, w = self.feature_shape
        self.map_shape = (h, w)
        self.loc_logits = nn.Parameter(torch.zeros(n_cells, h * w))
        self.weight = nn.Parameter(torch.empty(n_cells, channels))
        self.bias = nn.Parameter(torch.zeros(n_cells))

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.weight.shape[1]))
        nn.init.zeros_(self.bias)

    def forward(self, features: Tensor) -> Tensor:
        p_loc = torch.softmax(self.loc_logits, dim=-1)  # [C, h·w]
        at_place = torch.einsum("bkl,cl->bck", features.flatten(2), p_loc)  # [B, C, K]
        return F.softplus((at_place * self.weight).sum(-1) + self.bias)

    def init_output_bias(self, mean_counts: NDArray[np.floating]) -> None:
        """bias = softplus⁻¹(mean count): the output starts at each cell's mean (the weighted
        features start near zero), as the dense readout does."""
        mu = np.clip(self.check_mean_counts(mean_counts), 1e-3, None)
        with torch.no_grad():
            self.bias.copy_(torch.as_tensor(mu + np.log(-np.expm1(-mu)), dtype=self.bias.dtype))

    @torch.no_grad()
    def init_locations(
        self, ys: NDArray[np.float64], xs: NDArray[np.float64], sigma: float
    ) -> None:
        """Start cell c's mask as a Gaussian bump at (ys[c], xs[c]) in map pixels (clipped to
        the map: a cell centred outside it reads the nearest place that sees it)."""
        h, w = self.map_shape
        gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        for c, (y, x) in enumerate(zip(ys, xs, strict=True)):
            if not (math.isfinite(float(y)) and math.isfinite(float(x))):
                continue
            y, x = float(np.clip(y, 0, h - 1)), float(np.clip(x, 0, w - 1))
            d2 = (gy - y) ** 2 + (gx - x) ** 2
            self.loc_logits[c] = torch.from_numpy((-d2 / (2 * sigma**2)).ravel()).float()
