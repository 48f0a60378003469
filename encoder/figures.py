"""Evaluation figures (PNG): traces, correlation histogram, first-layer filters, RFs vs STAs.

Model receptive fields are measured the way a physiologist would: show the model binary
white noise and compute the spike-triggered average of its *predicted* rates, so any model
(also ones without an explicit linear filter) gets an RF comparable to the data's STA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from encoder.evaluate import EvaluationResult, Predictions


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def traces_figure(
    result: EvaluationResult, preds: Predictions, path: Path, frame_rate_hz: float
) -> Path:
    """Predicted vs trial-averaged (or single-trial test) traces of the best, median, worst cell."""
    plt = _plt()
    use_repeats = preds.repeat_pred is not None and preds.repeat_avg is not None
    scores = np.array(
        [
            np.nan if v is None else v
            for v in (result.per_cell_pcc if use_repeats else result.per_cell_test_pcc)
        ]
    )
    order = np.argsort(np.where(np.isfinite(scores), scores, -np.inf))[::-1]
    finite = order[np.isfinite(scores[order])]
    picks = (
        [("best", finite[0]), ("median", finite[len(finite) // 2]), ("worst", finite[-1])]
        if len(finite)
        else []
    )
    pred = preds.repeat_pred if use_repeats else preds.test_pred
    obs = preds.repeat_avg if use_repeats else preds.test_obs
    assert pred is not None and obs is not None
    n = min(pred.shape[0], int(10 * frame_rate_hz))
    t = np.arange(n) / frame_rate_hz
    fig, axes = plt.subplots(
        max(1, len(picks)), 1, figsize=(10, 2.4 * max(1, len(picks))), squeeze=False
    )
    for ax, (label, c) in zip(axes[:, 0], picks, strict=False):
        ax.plot(
            t,
            obs[:n, c] * frame_rate_hz,
            color="0.3",
            lw=1,
            label="trial average" if use_repeats else "test counts",
        )
        if preds.repeat_truth is not None and use_repeats:
            ax.plot(
                t,
                preds.repeat_truth[:n, c] * frame_rate_hz,
                color="tab:green",
                lw=0.8,
                alpha=0.7,
                label="true rate",
            )
        ax.plot(t, pred[:n, c] * frame_rate_hz, color="tab:red", lw=1, label="model")
        ax.set_title(
            f"{label}: cell {result.cell_ids[c]} ({result.cell_types[c]}), r = {scores[c]:.2f}",
            fontsize=9,
        )
        ax.set_ylabel("spikes/s")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def histogram_figure(result: EvaluationResult, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    values = [v for v in result.per_cell_pcc if v is not None] or [
        v for v in result.per_cell_test_pcc if v is not None
    ]
    ax.hist(values, bins=np.linspace(-0.2, 1.0, 25), color="tab:blue", alpha=0.8, label="model")
    if result.per_cell_ceiling:
        ax.hist(
            [v for v in result.per_cell_ceiling if v is not None],
            bins=np.linspace(-0.2, 1.0, 25),
            histtype="step",
            color="k",
            label="ceiling",
        )
    ax.set_xlabel("Pearson r")
    ax.set_ylabel("cells")
    ax.set_title(
        f"{result.model}: mean r = {result.mean_pcc if result.mean_pcc is not None else float('nan'):.3f}"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def filters_figure(filters: NDArray[np.floating], path: Path, title: str) -> Path:
    """filters: [n, kh, kw] spatial profiles of the first-layer filters."""
    plt = _plt()
    n = filters.shape[0]
    cols = min(n, 8)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            lim = float(np.abs(filters[i]).max()) or 1.0
            ax.imshow(filters[i], cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def model_white_noise_sta(
    model: Any, frame_shape: tuple[int, int], n_frames: int = 8000, seed: int = 0
) -> NDArray[np.float32]:
    """Model RFs: STA of the model's predicted rates to binary white noise, [n_cells, T, H, W]."""
    import torch

    from encoder.batching import predict_frames
    from encoder.models.ln import spike_triggered_average

    rng = np.random.default_rng(seed)
    stim = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n_frames, *frame_shape))
    with torch.no_grad():
        frames, pred = predict_frames(
            model, stim, np.asarray([[0, n_frames]], dtype=np.int64), model.window_frames
        )
    rates = np.zeros((n_frames, pred.shape[1]), dtype=np.float32)
    rates[frames] = pred
    return spike_triggered_average(
        stim, rates, np.asarray([[0, n_frames]], dtype=np.int64), model.window_frames
    )


def _peak_frame(sta: NDArray[np.floating]) -> NDArray[np.floating]:
    """[n, T, H, W] → [n, H, W] at each cell's lag of largest energy."""
    lag = (sta**2).sum((2, 3)).argmax(1)
    return sta[np.arange(sta.shape[0]), lag]


def rf_figure(
    model_sta: NDArray[np.floating],
    data_sta: NDArray[np.floating],
    cell_ids: list[str],
    cell_types: list[str],
    path: Path,
    max_cells: int = 12,
) -> Path:
    """Model RF (white-noise STA of predictions) beside the data STA for up to `max_cells` cells."""
    plt = _plt()
    m, d = _peak_frame(model_sta), _peak_frame(data_sta)
    n = min(max_cells, m.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3.0), squeeze=False)
    for c in range(n):
        for row, img in ((0, m[c]), (1, d[c])):
            ax = axes[row, c]
            lim = float(np.abs(img).max()) or 1.0
            ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, c].set_title(f"{cell_ids[c]}\n{cell_types[c]}", fontsize=6)
    axes[0, 0].set_ylabel("model", fontsize=8)
    axes[1, 0].set_ylabel("data STA", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
