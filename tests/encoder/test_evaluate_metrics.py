"""Evaluation metrics against hand-computed values on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from encoder.evaluate import EvaluationError, fev, pearson, smooth


def test_pearson_matches_hand_computation() -> None:
    # column 0: x = [1, 2, 3], y = [2, 4, 7]: dx = [-1, 0, 1], dy = [-7/3, -1/3, 8/3]
    # r = (7/3 + 8/3) / sqrt(2 · (49 + 1 + 64)/9) = 5 / sqrt(228/9)
    pred = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    obs = np.array([[2.0, 1.0], [4.0, 2.0], [7.0, 3.0]])
    r = pearson(pred, obs)
    assert r[0] == pytest.approx(5 / math.sqrt(228 / 9))
    assert math.isnan(r[1])  # constant prediction: undefined, not 0


def test_fev_matches_hand_computation() -> None:
    # two trials, three bins, one cell
    trials = np.array([[[1.0], [3.0], [5.0]], [[3.0], [3.0], [7.0]]])  # [R=2, n=3, 1]
    pred = np.array([[2.0], [3.0], [5.0]])
    # MSE over trials: ((1-2)² + 0 + 0 + (3-2)² + 0 + (7-5)²) / 6 = 6/6 = 1
    # Var of all six single-trial values: mean = 22/6, var = (Σx²)/6 − mean² = 102/6 − (22/6)²
    var_y = 102 / 6 - (22 / 6) ** 2
    # noise: per-bin sample variance (ddof 1) = [2, 0, 2] → mean 4/3
    noise = 4 / 3
    expected = 1 - (1 - noise) / (var_y - noise)
    assert fev(pred, trials)[0] == pytest.approx(expected)
    # a perfect prediction of the trial average explains all explainable variance… minus nothing
    avg = trials.mean(0)
    mse_avg = ((trials - avg[None]) ** 2).mean()
    assert fev(avg, trials)[0] == pytest.approx(1 - (mse_avg - noise) / (var_y - noise))


def test_fev_is_nan_without_explainable_variance_and_refuses_single_trial() -> None:
    trials = np.array([[[1.0], [0.0]], [[0.0], [1.0]]])  # all variance is noise
    assert math.isnan(fev(np.array([[0.5], [0.5]]), trials)[0])
    with pytest.raises(EvaluationError, match="R ≥ 2"):
        fev(np.zeros((2, 1)), np.zeros((1, 2, 1)))


def test_smooth_is_a_centred_boxcar() -> None:
    x = np.array([0.0, 0.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(smooth(x, 3), [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(smooth(x, 1), x)
