"""Training losses on expected spike counts per bin: Poisson, binary cross-entropy, MSE.

pred, target: [..., n_cells] (same shape), pred ≥ 0. Each returns the mean over all entries.
BCE treats a bin as "spike" when its count is ≥ 1 (the single-cell CNN's spike/no-spike
target in YADLRetina) and needs predictions in (0, 1) (clamped).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6

LossFn = Callable[[Tensor, Tensor], Tensor]


def poisson_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Poisson negative log-likelihood without the log(k!) constant: mean(λ − k·log λ)."""
    return (pred - target * torch.log(pred + EPS)).mean()


def bce_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of p(spike in bin) against (count ≥ 1)."""
    return F.binary_cross_entropy(pred.clamp(EPS, 1 - EPS), (target >= 1).to(pred.dtype))


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(pred, target)


LOSSES: dict[str, LossFn] = {"poisson": poisson_loss, "bce": bce_loss, "mse": mse_loss}


def get_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
