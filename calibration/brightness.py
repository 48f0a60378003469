"""Brightness magnitude estimation: which currents to test, and the saturating-curve fit.

The patient rates each phosphene's brightness (0 = nothing; 1 = a typical bright phosphene)
at several currents between threshold and the maximum comfortable current. The curve is the
calibration schema's (hardware.calibration_file.BrightnessCurve):

    b(I) = max_brightness · (1 − exp(−(I − threshold) / scale))   for I ≥ threshold, else 0

Human Utah-array data rise from ~0.04 at 10 µA to ~0.8 at 60 µA and ~1.0 near 90 µA
(REFERENCES.md), i.e. saturating within a few tens of µA, which is what this form captures
with two parameters that a 15-trial session can pin down. Threshold is held at the value the
threshold procedure measured (it is far better determined there than from ratings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

#: Typical scatter of one rating (used to weigh the prior on the maximum against the data).
RATING_SD = 0.15
#: Prior on the maximum brightness: ratings are relative to a typical bright phosphene.
MAX_PRIOR_SD = 0.5


def brightness_curve(
    current_ua: NDArray[np.float64], threshold_ua: float, scale_ua: float, max_brightness: float
) -> NDArray[np.float64]:
    """current_ua: [n] µA → [n] brightness."""
    above = np.maximum(np.asarray(current_ua, dtype=np.float64) - threshold_ua, 0.0)
    return max_brightness * (1.0 - np.exp(-above / scale_ua))


def brightness_levels(
    threshold_ua: float, max_current_ua: float, n_levels: int = 5, repeats: int = 3, seed: int = 0
) -> list[float]:
    """Currents for one electrode, in a shuffled order: n_levels evenly spaced from just
    above threshold to the maximum, each `repeats` times (shuffled so that ratings are not
    anchored to the previous, nearby current)."""
    if max_current_ua <= threshold_ua:
        raise ValueError(
            f"brightness: maximum {max_current_ua:.1f} µA is not above threshold {threshold_ua:.1f} µA"
        )
    lo = threshold_ua + 0.1 * (max_current_ua - threshold_ua)
    levels = np.round(np.linspace(lo, max_current_ua, n_levels), 1)
    order = np.repeat(levels, repeats)
    np.random.default_rng(seed).shuffle(order)
    return [float(x) for x in order]


@dataclass(frozen=True)
class BrightnessFit:
    """Least-squares fit of the saturating curve with 95 % intervals from the covariance.

    Attributes:
        scale_ua, max_brightness: curve parameters (see module docstring).
        scale_ci_ua, max_ci: (low, high) 95 % intervals.
        rmse: root-mean-square residual of the ratings.
        n_trials: ratings used.
    """

    scale_ua: float
    max_brightness: float
    scale_ci_ua: tuple[float, float]
    max_ci: tuple[float, float]
    rmse: float
    n_trials: int


def fit_brightness(
    currents_ua: Sequence[float] | NDArray[np.float64],
    ratings: Sequence[float] | NDArray[np.float64],
    threshold_ua: float,
) -> BrightnessFit:
    """Fit scale and maximum to ratings [n] at currents [n] (threshold fixed)."""
    x = np.asarray(currents_ua, dtype=np.float64)
    y = np.asarray(ratings, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError(
            f"fit_brightness: need ≥ 3 ratings with matching currents, got {x.size} and {y.size}"
        )
    if not np.all(np.isfinite(y)) or np.any(y < 0):
        raise ValueError("fit_brightness: ratings must be finite and ≥ 0")

    # When threshold sits close to the maximum, the ratings cover only the foot of the
    # curve and scale and maximum trade off freely (a straight line fits). A weak prior on
    # the maximum (≈ 1 ± 0.5: ratings are anchored to a "typical bright phosphene") keeps the
    # fit in the physiological range; with a well-covered range the data dominate it.
    def resid(p: NDArray[np.float64]) -> NDArray[np.float64]:
        fit = brightness_curve(x, threshold_ua, float(np.exp(p[0])), float(p[1]))
        return np.concatenate([(fit - y) / RATING_SD, [(p[1] - 1.0) / MAX_PRIOR_SD]])

    p0 = np.array([np.log(30.0), 1.0])
    res = least_squares(resid, p0, bounds=([np.log(1.0), 0.01], [np.log(200.0), 10.0]))
    scale, top = float(np.exp(res.x[0])), float(res.x[1])
    resid_y = y - brightness_curve(x, threshold_ua, scale, top)
    dof = max(x.size - 2, 1)
    s2 = max(float(np.sum(resid_y**2)) / dof / RATING_SD**2, 1.0)
    try:
        cov = np.linalg.inv(res.jac.T @ res.jac) * s2
        err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    except np.linalg.LinAlgError:
        err = np.array([np.inf, np.inf])
    return BrightnessFit(
        scale_ua=scale,
        max_brightness=top,
        scale_ci_ua=(scale * float(np.exp(-1.96 * err[0])), scale * float(np.exp(1.96 * err[0]))),
        max_ci=(max(top - 1.96 * err[1], 0.0), top + 1.96 * err[1]),
        rmse=float(np.sqrt(np.mean(resid_y**2))),
        n_trials=int(x.size),
    )
