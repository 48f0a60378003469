"""Evaluation metrics against hand-computed values on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from encoder.evaluate import (
    EvaluationError,
    EvaluationResult,
    fev,
    feve,
    gain,
    mean_rate_error,
    noise_ratio,
    oracle_correlation,
    pearson,
    smooth,
    split_half_ceiling,
)


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


def _signal_and_trials(n_rep: int, noise_sd: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Truth [n, 2 cells] (unit-variance signals around 5) and Gaussian-noise trials [R, n, 2]."""
    rng = np.random.default_rng(seed)
    n = 4000
    truth = 5.0 + rng.standard_normal((n, 2))
    trials = truth[None] + noise_sd * rng.standard_normal((n_rep, n, 2))
    return truth, trials


def test_half_the_true_rate_has_gain_2_pcc_1_and_fev_below_1() -> None:
    """Right shape, wrong level: PCC cannot see it, gain, rate error and FEV do."""
    truth, trials = _signal_and_trials(10, 0.5)
    pred = 0.5 * truth
    np.testing.assert_allclose(pearson(pred, truth), 1.0)
    np.testing.assert_allclose(gain(pred, truth), 2.0)
    np.testing.assert_allclose(mean_rate_error(pred, truth), -0.5)
    assert np.all(fev(pred, trials) < 0.5)
    # the truth itself explains all explainable variance (up to sampling)
    np.testing.assert_allclose(fev(truth, trials), 1.0, atol=0.03)
    np.testing.assert_allclose(gain(truth, truth), 1.0)
    assert math.isnan(gain(np.ones((5, 1)), np.arange(5.0)[:, None])[0])
    assert math.isnan(mean_rate_error(np.ones((3, 1)), np.zeros((3, 1)))[0])


def test_pure_noise_repeats_have_a_ceiling_near_zero() -> None:
    rng = np.random.default_rng(1)
    trials = rng.standard_normal((10, 4000, 3))
    assert np.all(np.abs(split_half_ceiling(trials)) < 0.1)
    assert np.all(np.abs(oracle_correlation(trials)) < 0.05)
    np.testing.assert_allclose(noise_ratio(trials), 1.0, atol=0.05)


def test_repeat_ceilings_match_the_analytic_reliability() -> None:
    """Signal variance 1, noise variance σ², R repeats: the R-trial average's reliability is
    1 / (1 + σ²/R) (what Spearman–Brown estimates); the leave-one-out oracle r is
    1 / sqrt((1 + σ²)(1 + σ²/(R − 1)))."""
    n_rep, sd = 10, 1.5
    _, trials = _signal_and_trials(n_rep, sd, seed=2)
    s2 = sd**2
    np.testing.assert_allclose(split_half_ceiling(trials), 1 / (1 + s2 / n_rep), atol=0.03)
    expected_oracle = 1 / math.sqrt((1 + s2) * (1 + s2 / (n_rep - 1)))
    np.testing.assert_allclose(oracle_correlation(trials), expected_oracle, atol=0.03)
    with pytest.raises(EvaluationError, match="≥ 2 repeats"):
        oracle_correlation(trials[:1])


def test_feve_leaves_out_cells_dominated_by_noise() -> None:
    truth, trials = _signal_and_trials(10, 0.5)
    trials[:, :, 1] = np.random.default_rng(3).standard_normal(trials.shape[:2])  # noise only
    ratio = noise_ratio(trials)
    assert ratio[0] == pytest.approx(0.25 / 1.25, abs=0.03) and ratio[1] > 0.9
    values = feve(truth, trials, max_noise_ratio=0.5)
    assert values[0] == pytest.approx(fev(truth, trials)[0]) and math.isnan(values[1])
    assert np.all(np.isnan(feve(truth, trials, max_noise_ratio=0.1)))


def test_evaluation_result_is_a_typed_model_with_its_own_json() -> None:
    import json

    fields = {name: None for name in EvaluationResult.model_fields}
    fields.update(
        model="ln",
        data="x.h5",
        smooth_ms=50.0,
        n_cells=1,
        n_repeats=0,
        max_noise_ratio=0.5,
        n_cells_feve=0,
        cell_ids=["a"],
        cell_types=["ON"],
    )
    for name in EvaluationResult.model_fields:
        if name.startswith("per_cell_") and name != "per_cell_ceiling":
            fields[name] = [None]
    result = EvaluationResult.model_validate(fields)
    raw = json.loads(result.to_json())
    assert raw["per_cell_gain"] == [None] and raw["model"] == "ln"
    assert EvaluationResult.model_validate(raw) == result
    with pytest.raises(ValueError):
        EvaluationResult.model_validate({**fields, "unexpected": 1})


def test_repeat_ceilings_are_nan_for_a_silent_cell_without_warnings() -> None:
    import warnings

    trials = np.random.default_rng(4).standard_normal((4, 200, 2))
    trials[:, :, 1] = 0.0  # a cell that never fires: correlation undefined
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        half, oracle = split_half_ceiling(trials), oracle_correlation(trials)
    assert math.isnan(half[1]) and math.isnan(oracle[1])
    assert np.isfinite(half[0]) and np.isfinite(oracle[0])
