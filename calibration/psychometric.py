"""Psychometric function for phosphene detection and its maximum-likelihood fit.

Model (yes/no detection of a phosphene after one pulse train):

    p(yes | I) = guess + (1 - guess - lapse) * Phi((I - threshold) / sd)

`threshold` (µA) is the current at which the underlying function reaches 50 %; `guess`
is the false-alarm rate (the patient says "yes" with no phosphene), `lapse` the rate of
missed trains at any current. Slope is reported as 1 / sd (µA⁻¹): larger is steeper.

Why a grid fit: a session yields 20-80 binary trials per electrode, where the likelihood
surface is lopsided and gradient optimisers can stall on the guess/lapse boundaries. A dense
grid over (threshold, sd, guess, lapse) gives the ML estimate and the profile likelihood of
each parameter in one pass (a few ms with numpy), and profile-likelihood intervals are
what we report as confidence intervals (likelihood-ratio test, χ²₁).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

#: Nuisance grids: false-alarm and lapse rates a patient plausibly has. Clinical detection
#: tasks report a few percent of each; the grid is profiled out of every estimate.
GUESS_GRID: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1)
LAPSE_GRID: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1)
#: Weak priors over those grids (most patients have a few percent of each).
GUESS_PRIOR: tuple[float, ...] = (0.3, 0.35, 0.22, 0.13)
LAPSE_PRIOR: tuple[float, ...] = (0.3, 0.35, 0.22, 0.13)
#: Prior of sd / threshold: median 0.15, log-SD 0.8 (a factor 2.2 either way is one SD).
SD_RATIO_PRIOR = 0.15
SD_RATIO_LOG_SD = 0.8


def detection_probability(
    current_ua: NDArray[np.float64] | float,
    threshold_ua: float,
    sd_ua: float,
    guess: float = 0.0,
    lapse: float = 0.0,
) -> NDArray[np.float64]:
    """p(yes) at each current. current_ua: [n] µA → [n] probabilities."""
    x = np.asarray(current_ua, dtype=np.float64)
    return guess + (1.0 - guess - lapse) * ndtr((x - threshold_ua) / sd_ua)


@dataclass(frozen=True)
class PsychometricFit:
    """Result of the ML fit of one electrode's detection trials.

    Attributes:
        threshold_ua: ML threshold (50 % point of the underlying function), µA.
        threshold_ci_ua: (low, high) profile-likelihood confidence interval, µA.
        slope: 1 / sd in µA⁻¹ at the ML estimate.
        slope_ci: (low, high) profile-likelihood interval of the slope.
        guess, lapse: ML nuisance rates.
        n_trials: trials the fit used.
        found: False when the interval reaches the top of the tested range (the threshold
            lies at or above the highest current the session could test).
        level: confidence level of the intervals.
    """

    threshold_ua: float
    threshold_ci_ua: tuple[float, float]
    slope: float
    slope_ci: tuple[float, float]
    guess: float
    lapse: float
    n_trials: int
    found: bool
    level: float

    @property
    def ci_width_ua(self) -> float:
        return self.threshold_ci_ua[1] - self.threshold_ci_ua[0]


def _interval(
    grid: NDArray[np.float64], profile: NDArray[np.float64], cutoff: float
) -> tuple[float, float]:
    """Where the profile log-likelihood stays within `cutoff` of its maximum.

    grid: [m] ascending values; profile: [m] max log-likelihood at each value. Edges are
    interpolated linearly between grid points so the interval does not snap to the grid.
    """
    inside = profile >= profile.max() - cutoff
    idx = np.flatnonzero(inside)
    lo_i, hi_i = int(idx[0]), int(idx[-1])
    level = profile.max() - cutoff

    def cross(i_in: int, i_out: int) -> float:
        p_in, p_out = profile[i_in], profile[i_out]
        t = (p_in - level) / (p_in - p_out) if p_in != p_out else 0.0
        return float(grid[i_in] + t * (grid[i_out] - grid[i_in]))

    lo = cross(lo_i, lo_i - 1) if lo_i > 0 else float(grid[0])
    hi = cross(hi_i, hi_i + 1) if hi_i < len(grid) - 1 else float(grid[-1])
    return lo, hi


def _central(
    grid: NDArray[np.float64], mass: NDArray[np.float64], level: float
) -> tuple[float, float]:
    """Central interval holding `level` of the probability mass on an ascending grid."""
    cdf = np.cumsum(mass) / mass.sum()
    tail = (1.0 - level) / 2.0
    return float(np.interp(tail, cdf, grid)), float(np.interp(1.0 - tail, cdf, grid))


def fit_psychometric(
    currents_ua: Sequence[float] | NDArray[np.float64],
    responses: Sequence[int] | NDArray[np.int64],
    max_current_ua: float,
    level: float = 0.95,
    threshold_step_ua: float = 1.0,
) -> PsychometricFit:
    """Maximum-likelihood fit with profile-likelihood intervals.

    Args:
        currents_ua: [n] delivered current of each trial (µA).
        responses: [n] 1 if the patient reported a phosphene, else 0.
        max_current_ua: highest current the session could deliver; the threshold grid
            extends to 1.5× it so that "not found" shows as an interval touching the top.
        level: confidence level of the intervals.
        threshold_step_ua: grid resolution of the threshold.
    """
    x = np.asarray(currents_ua, dtype=np.float64)
    r = np.asarray(responses, dtype=np.int64)
    if x.ndim != 1 or x.shape != r.shape:
        raise ValueError(
            f"fit_psychometric: currents {list(x.shape)} and responses {list(r.shape)} "
            "must be equal-length 1-D"
        )
    if x.size == 0:
        raise ValueError("fit_psychometric: no trials to fit")
    if not set(np.unique(r).tolist()) <= {0, 1}:
        raise ValueError("fit_psychometric: responses must be 0 or 1")
    if max_current_ua <= 0:
        raise ValueError(f"fit_psychometric: max_current_ua must be > 0, got {max_current_ua}")

    # Aggregate identical currents: k yes out of n at each unique level.
    levels, inverse = np.unique(x, return_inverse=True)
    n = np.bincount(inverse).astype(np.float64)
    k = np.bincount(inverse, weights=r).astype(np.float64)

    top = 1.5 * max_current_ua
    mu = np.arange(0.0, top + threshold_step_ua / 2, threshold_step_ua)
    sd = np.geomspace(max(0.5, 0.01 * max_current_ua), 0.6 * max_current_ua, 32)
    cdf = ndtr((levels[None, None, :] - mu[:, None, None]) / sd[None, :, None])  # [m, s, L]

    ll = np.full((mu.size, sd.size, len(GUESS_GRID), len(LAPSE_GRID)), -np.inf)
    for gi, g in enumerate(GUESS_GRID):
        for li, lam in enumerate(LAPSE_GRID):
            p = np.clip(g + (1.0 - g - lam) * cdf, 1e-12, 1.0 - 1e-12)
            ll[:, :, gi, li] = (k * np.log(p) + (n - k) * np.log1p(-p)).sum(axis=-1)

    # Weak priors (log-uniform sd; guess and lapse favour a few percent) turn the
    # likelihood into a posterior; integrating the nuisance parameters out, rather than
    # maximising over them, keeps the threshold interval honest with few trials (a
    # profile over sd picks implausibly steep functions and intervals that are too narrow).
    # The spread is a fraction of the threshold (Weber-like; ~0.05-0.4 in detection data):
    # a broad log-normal prior on sd / threshold stops very shallow functions with tiny
    # thresholds from explaining a few "no" answers at low currents.
    ratio = sd[None, :] / np.maximum(mu[:, None], 1.0)
    log_ratio_prior = -0.5 * ((np.log(ratio) - np.log(SD_RATIO_PRIOR)) / SD_RATIO_LOG_SD) ** 2
    log_prior = (
        log_ratio_prior[:, :, None, None]
        + np.log(np.asarray(GUESS_PRIOR))[None, None, :, None]
        + np.log(np.asarray(LAPSE_PRIOR))[None, None, None, :]
    )
    log_post = ll + log_prior
    best = np.unravel_index(int(np.argmax(log_post)), ll.shape)
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    thr_ci = _central(mu, post.sum(axis=(1, 2, 3)), level)
    sd_lo, sd_hi = _central(sd, post.sum(axis=(0, 2, 3)), level)
    found = thr_ci[1] < max_current_ua
    return PsychometricFit(
        threshold_ua=float(mu[best[0]]),
        threshold_ci_ua=thr_ci,
        slope=float(1.0 / sd[best[1]]),
        slope_ci=(float(1.0 / sd_hi), float(1.0 / sd_lo)),
        guess=float(GUESS_GRID[best[2]]),
        lapse=float(LAPSE_GRID[best[3]]),
        n_trials=int(x.size),
        found=bool(found),
        level=level,
    )
