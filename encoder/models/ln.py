"""`ln`: the classic linear-nonlinear baseline (STA filter + fitted static nonlinearity).

Fitted in closed form, not by gradient descent: each cell's linear filter is its
spike-triggered average (the cross-covariance of the window with the spike count), scaled to
unit norm; the nonlinearity is softplus(a·g + b) of the standardised generator signal g,
fitted per cell by Poisson maximum likelihood. This is the reference every CNN must beat
(issue 3); a purely LN model cannot explain the nonlinear subunits of the synthetic cells.

Core: none to share (`WindowCore` passes the window through); readout: `LNReadout`, the
per-cell filters and nonlinearity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from encoder.models.base import ModelConfig, RetinaModel
from encoder.models.core import Core, WindowCore
from encoder.models.readout import Readout


class LNConfig(ModelConfig):
    fit_iterations: int = 200  # LBFGS iterations of the nonlinearity fit


def _valid_segments(ranges: NDArray[np.int64], window: int) -> list[tuple[int, int]]:
    """Per range [a, b): the newest-frame indices [a + T − 1, b) whose window lies inside it."""
    return [(int(a) + window - 1, int(b)) for a, b in ranges if int(b) - int(a) >= window]


def spike_triggered_average(
    stimulus: NDArray[np.float32],
    responses: NDArray[Any],
    ranges: NDArray[np.int64],
    window: int,
) -> NDArray[np.float32]:
    """Cross-covariance of window and spike count: [n_cells, T, H, W] (index T − 1 = newest).

    stimulus: [N, H, W] contrast; responses: [N, n_cells] counts; ranges: [k, 2] frame ranges.
    Computed lag by lag as matrix products over contiguous slices (views, no window copies).
    """
    n, h, w = stimulus.shape
    n_cells = responses.shape[1]
    flat = stimulus.reshape(n, h * w)
    segments = _valid_segments(ranges, window)
    total = sum(b - a for a, b in segments)
    if total == 0:
        raise ValueError(f"no window of {window} frames fits inside the given ranges")
    r_mean = sum(responses[a:b].astype(np.float64).sum(0) for a, b in segments) / total
    sta = np.zeros((n_cells, window, h * w), dtype=np.float64)
    s_mean = np.zeros((window, h * w), dtype=np.float64)
    for a, b in segments:
        r = responses[a:b].astype(np.float32) - r_mean.astype(np.float32)
        for lag in range(window):
            seg = flat[a - lag : b - lag]
            sta[:, window - 1 - lag] += (r.T @ seg).astype(np.float64)
            s_mean[window - 1 - lag] += seg.sum(0)
    return (sta / total).reshape(n_cells, window, h, w).astype(np.float32)


def generator_signal(
    stimulus: NDArray[np.float32], filters: NDArray[np.float32], start: int, stop: int
) -> NDArray[np.float32]:
    """Filter output for newest frames [start, stop): [stop − start, n_cells]; needs start ≥ T − 1."""
    n_cells, window, h, w = filters.shape
    flat = stimulus.reshape(stimulus.shape[0], h * w)
    k = filters.reshape(n_cells, window, h * w)
    g = np.zeros((stop - start, n_cells), dtype=np.float32)
    for lag in range(window):
        g += flat[start - lag : stop - lag] @ k[:, window - 1 - lag].T
    return g


class LNCore(WindowCore):
    model_name = "ln"


class LNReadout(Readout):
    """Window [B, T, H, W] → softplus(gain·(g − mean)/std + offset), g = ⟨filter_c, window⟩.

    All parameters are fitted in closed form (`fit`), none by gradient descent.
    """

    def __init__(self, n_cells: int, feature_shape: tuple[int, ...], fit_iterations: int) -> None:
        super().__init__(n_cells, feature_shape)
        self.fit_iterations = fit_iterations
        self.filters = nn.Parameter(torch.zeros(n_cells, *feature_shape), requires_grad=False)
        self.g_mean = nn.Parameter(torch.zeros(n_cells), requires_grad=False)
        self.g_std = nn.Parameter(torch.ones(n_cells), requires_grad=False)
        self.gain = nn.Parameter(torch.ones(n_cells), requires_grad=False)
        self.offset = nn.Parameter(torch.full((n_cells,), -2.0), requires_grad=False)

    def forward(self, features: Tensor) -> Tensor:
        g = torch.einsum("bthw,cthw->bc", features, self.filters)
        z = (g - self.g_mean) / self.g_std
        return F.softplus(self.gain * z + self.offset)

    def fit(
        self,
        stimulus: NDArray[np.float32],
        responses: NDArray[Any],
        ranges: NDArray[np.int64],
    ) -> None:
        """Fit filters (STA) and the nonlinearity on the frames of `ranges` (the train split)."""
        t = self.feature_shape[0]
        sta = spike_triggered_average(stimulus, responses, ranges, t)
        norm = np.sqrt((sta.reshape(sta.shape[0], -1) ** 2).sum(1)).clip(min=1e-12)
        filters = (sta / norm[:, None, None, None]).astype(np.float32)
        g_parts, r_parts = [], []
        for a, b in _valid_segments(ranges, t):
            g_parts.append(generator_signal(stimulus, filters, a, b))
            r_parts.append(responses[a:b].astype(np.float32))
        g = np.concatenate(g_parts)
        r = np.concatenate(r_parts)
        mean, std = g.mean(0), g.std(0).clip(min=1e-8)
        z = torch.from_numpy((g - mean) / std)
        y = torch.from_numpy(r)
        gain = torch.ones(self.n_cells, requires_grad=True)
        offset = torch.full((self.n_cells,), float(np.log(np.expm1(max(r.mean(), 1e-3)))))
        offset.requires_grad_(True)
        opt = torch.optim.LBFGS([gain, offset], max_iter=self.fit_iterations)

        def closure() -> Tensor:
            opt.zero_grad()
            pred = F.softplus(gain * z + offset)
            loss = (pred - y * torch.log(pred + 1e-8)).mean()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            self.filters.copy_(torch.from_numpy(filters))
            self.g_mean.copy_(torch.from_numpy(mean))
            self.g_std.copy_(torch.from_numpy(std))
            self.gain.copy_(gain.detach())
            self.offset.copy_(offset.detach())

    def first_layer_filters(self) -> Tensor:
        """Each cell's filter at its lag of largest energy: [n_cells, H, W]."""
        w = self.filters.detach()
        lag = w.pow(2).sum((2, 3)).argmax(1)
        return w[torch.arange(w.shape[0]), lag]


class LNModel(RetinaModel):
    name = "ln"
    default_loss = "poisson"
    fitted_in_closed_form = True
    config: LNConfig
    readout: LNReadout

    @classmethod
    def build_core(
        cls, config: ModelConfig, frame_shape: tuple[int, int], frame_rate_hz: float
    ) -> Core:
        return LNCore(config, frame_shape, frame_rate_hz)

    @classmethod
    def build_readout(cls, core: Core, n_cells: int) -> Readout:
        assert isinstance(core.config, LNConfig)
        return LNReadout(n_cells, core.feature_shape, core.config.fit_iterations)

    def fit(
        self,
        stimulus: NDArray[np.float32],
        responses: NDArray[Any],
        ranges: NDArray[np.int64],
    ) -> None:
        """Fit the readout on the frames of `ranges` (the train split)."""
        self.readout.fit(stimulus, responses, ranges)

    def first_layer_filters(self) -> Tensor:
        """Each cell's filter at its lag of largest energy: [n_cells, H, W]."""
        return self.readout.first_layer_filters()
