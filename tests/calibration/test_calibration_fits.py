"""Fits recover known parameters and refuse bad input."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.brightness import brightness_curve, brightness_levels, fit_brightness
from calibration.patient import simulated_patient_for_array
from calibration.phosphene_map import fit_phosphene_map
from calibration.prediction import ElectrodeFeatures, cross_validate, predict_thresholds
from calibration.psychometric import detection_probability, fit_psychometric
from calibration.visual_map import ArrayPlacement
from hardware.arrays import ElectrodeArray


def test_psychometric_fit_recovers_known_function() -> None:
    rng = np.random.default_rng(0)
    x = np.repeat(np.arange(10.0, 100.0, 5.0), 20)
    p = detection_probability(x, 55.0, 8.0, guess=0.02, lapse=0.03)
    r = (rng.random(x.size) < p).astype(int)
    fit = fit_psychometric(x, r, 100.0)
    assert fit.found
    assert abs(fit.threshold_ua - 55.0) < 3.0
    lo, hi = fit.threshold_ci_ua
    assert lo < 55.0 < hi and hi - lo < 8.0
    assert fit.slope_ci[0] < 1 / 8.0 < fit.slope_ci[1]


def test_psychometric_threshold_above_range_is_not_found() -> None:
    x = np.linspace(5.0, 60.0, 30)
    fit = fit_psychometric(x, np.zeros(30, dtype=int), 60.0)
    assert not fit.found
    assert fit.threshold_ci_ua[1] >= 60.0


@pytest.mark.parametrize(
    ("x", "r", "match"),
    [([], [], "no trials"), ([10.0, 20.0], [1], "equal-length"), ([10.0], [2], "0 or 1")],
)
def test_psychometric_refuses_bad_input(x: list[float], r: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_psychometric(x, r, 100.0)


def test_brightness_fit_recovers_curve() -> None:
    rng = np.random.default_rng(1)
    x = np.array(brightness_levels(40.0, 100.0, n_levels=6, repeats=4, seed=0))
    y = brightness_curve(x, 40.0, 25.0, 1.1) * np.exp(rng.normal(0, 0.1, x.size))
    fit = fit_brightness(x, y, 40.0)
    assert abs(fit.scale_ua - 25.0) < 6.0
    assert fit.scale_ci_ua[0] < 25.0 < fit.scale_ci_ua[1]
    assert abs(fit.max_brightness - 1.1) < 0.15


def test_brightness_refuses_max_below_threshold() -> None:
    with pytest.raises(ValueError, match="not above threshold"):
        brightness_levels(80.0, 60.0)


def test_map_fit_predicts_untested_and_flags_outliers(utah: ElectrodeArray) -> None:
    truth = simulated_patient_for_array(utah, 4).truth
    rng = np.random.default_rng(2)
    tested = utah.electrode_ids[::2]
    reports = {
        e: [tuple(truth.phosphene_deg[truth.index(e)] + rng.normal(0, 1.5, 2)) for _ in range(2)]
        for e in tested
    }
    bad = tested[5]
    reports[bad] = [tuple(truth.phosphene_deg[truth.index(bad)] + 12.0)] * 2
    nominal = ArrayPlacement(utah.placement_deg, utah.rotation_deg)
    fit = fit_phosphene_map(utah.electrode_ids, utah.positions_mm, reports, nominal)
    err = np.hypot(*(fit.predicted_deg - truth.phosphene_deg).T)
    untested = np.array([e not in reports for e in utah.electrode_ids])
    raw_err = np.hypot(*(fit.report_mean_deg[~untested] - truth.phosphene_deg[~untested]).T)
    assert err[untested].mean() < 0.5  # predicted without a single report
    assert err.mean() < np.median(raw_err)  # the model beats each electrode's own reports
    assert fit.outlier[utah.electrode_ids.index(bad)]
    assert fit.outlier.sum() <= 3


def test_threshold_prediction_beats_the_mean(utah: ElectrodeArray) -> None:
    truth = simulated_patient_for_array(utah, 6).truth
    feats = ElectrodeFeatures(
        utah.electrode_ids, utah.positions_mm, truth.depth_mm, truth.impedance_kohm
    )
    tested = np.arange(0, 96, 2)
    thr = truth.threshold_ua[tested]
    score = cross_validate(feats, tested, thr, "ridge", n_repeats=3)
    baseline = float(np.sqrt(np.mean((thr - thr.mean()) ** 2)))
    assert score.rmse_mean_ua < 0.8 * baseline
    measured = {utah.electrode_ids[i]: float(truth.threshold_ua[i]) for i in tested}
    pred = predict_thresholds(feats, measured, models=("ridge", "knn"), n_repeats=2)
    assert len(pred.predicted_ids) == 48
    idx = [utah.electrode_ids.index(e) for e in pred.predicted_ids]
    err = np.sqrt(np.mean((pred.predicted_ua - truth.threshold_ua[idx]) ** 2))
    assert err < baseline
    assert pred.chosen in ("ridge", "knn")


def test_prediction_refuses_unknown_electrodes(utah: ElectrodeArray) -> None:
    feats = ElectrodeFeatures(
        utah.electrode_ids, utah.positions_mm, np.full(96, np.nan), np.full(96, np.nan)
    )
    with pytest.raises(ValueError, match="not in the array"):
        predict_thresholds(feats, {"nope": 40.0, **{e: 40.0 for e in utah.electrode_ids[:5]}})
