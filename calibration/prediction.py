"""Predicting detection thresholds of untested electrodes, so a session can test fewer.

Features of an electrode (what a clinic knows without testing it): its position on the
array (mm), tip depth (mm), impedance (log kΩ) and the mean measured threshold of its
nearest *tested* neighbours. Three regressors from scikit-learn compete — ridge regression
(α = 0.5), k-nearest neighbours and a small neural network — and are judged, as in the
parameter-estimation work among our references (Arco López / Martínez-Cañada: linear, ridge
α 0.5, KNN and NN regressors over 100 repetitions of 10-fold cross-validation), by repeated
k-fold CV; the one with the lowest mean error predicts the untested electrodes.

The neighbour feature is rebuilt inside every CV fold from that fold's training electrodes
only, otherwise a held-out electrode's own threshold would leak into its neighbours'.
Targets are log thresholds (thresholds scale multiplicatively); errors are reported in µA.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MODEL_NAMES: tuple[str, ...] = ("ridge", "knn", "mlp")
N_NEIGHBOURS = 4


@dataclass(frozen=True)
class ElectrodeFeatures:
    """What is known about every electrode of an array, tested or not.

    Attributes:
        electrode_ids: [n] ids.
        positions_mm: [n, 2] array-local positions (mm).
        depth_mm: [n] tip depth (mm), NaN if unknown.
        impedance_kohm: [n] impedance at 1 kHz (kΩ), NaN if unknown.
    """

    electrode_ids: tuple[str, ...]
    positions_mm: NDArray[np.float64]
    depth_mm: NDArray[np.float64]
    impedance_kohm: NDArray[np.float64]

    def __post_init__(self) -> None:
        n = len(self.electrode_ids)
        for name, shape in (
            ("positions_mm", (n, 2)),
            ("depth_mm", (n,)),
            ("impedance_kohm", (n,)),
        ):
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(
                    f"ElectrodeFeatures.{name}: expected {list(shape)}, got {list(got)}"
                )


def design_matrix(
    feats: ElectrodeFeatures,
    rows: NDArray[np.int64],
    known: NDArray[np.int64],
    known_log_thr: NDArray[np.float64],
) -> NDArray[np.float64]:
    """[len(rows), 6] features: x, y, depth, log impedance, neighbour mean log threshold,
    distance to those neighbours. Neighbours come from `known` (indices with measured
    log thresholds known_log_thr), never including the row itself."""
    pos = feats.positions_mm
    depth = np.nan_to_num(
        feats.depth_mm,
        nan=float(np.nanmean(feats.depth_mm)) if np.isfinite(feats.depth_mm).any() else 0.0,
    )
    imp = np.log(np.where(np.isfinite(feats.impedance_kohm), feats.impedance_kohm, np.nan))
    imp = np.nan_to_num(imp, nan=float(np.nanmean(imp)) if np.isfinite(imp).any() else 0.0)
    d = np.hypot(*(pos[rows][:, None, :] - pos[known][None, :, :]).transpose(2, 0, 1))
    d[rows[:, None] == known[None, :]] = np.inf
    k = min(N_NEIGHBOURS, max(len(known) - 1, 1))
    nearest = np.argsort(d, axis=1)[:, :k]
    nb = known_log_thr[nearest].mean(axis=1)
    nd = np.take_along_axis(d, nearest, axis=1).mean(axis=1)
    return np.column_stack([pos[rows], depth[rows], imp[rows], nb, nd])


def make_model(name: str, seed: int = 0) -> object:
    """A fresh scikit-learn pipeline (standardise → regressor) by name."""
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "ridge":
        reg: object = Ridge(alpha=0.5)
    elif name == "knn":
        reg = KNeighborsRegressor(n_neighbors=5, weights="distance")
    elif name == "mlp":
        # Small on purpose: ~100 electrodes cannot support more than a few dozen weights.
        reg = MLPRegressor(
            hidden_layer_sizes=(8,), solver="lbfgs", alpha=1.0, max_iter=300, random_state=seed
        )
    else:
        raise ValueError(f"unknown prediction model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return make_pipeline(StandardScaler(), reg)


@dataclass(frozen=True)
class CVScore:
    """Repeated k-fold CV of one model: RMSE (µA) per repetition, summarised.

    Attributes:
        model: model name.
        rmse_mean_ua, rmse_sd_ua: mean and spread (SD) of the per-repetition RMSE.
        mae_mean_ua: mean absolute error averaged over repetitions.
        n_repeats, n_splits: the CV design.
    """

    model: str
    rmse_mean_ua: float
    rmse_sd_ua: float
    mae_mean_ua: float
    n_repeats: int
    n_splits: int


def cross_validate(
    feats: ElectrodeFeatures,
    tested: NDArray[np.int64],
    thresholds_ua: NDArray[np.float64],
    model: str,
    n_repeats: int = 100,
    n_splits: int = 10,
    seed: int = 0,
) -> CVScore:
    """Repeated k-fold CV over the tested electrodes (indices `tested`, thresholds [len])."""
    from sklearn.model_selection import RepeatedKFold
    from threadpoolctl import threadpool_limits

    # Tiny fits: BLAS threads only add contention (measured ~10× slower on 2 busy cores).
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        return _cross_validate(
            feats, tested, thresholds_ua, model, n_repeats, n_splits, seed, RepeatedKFold
        )


def _cross_validate(
    feats: ElectrodeFeatures,
    tested: NDArray[np.int64],
    thresholds_ua: NDArray[np.float64],
    model: str,
    n_repeats: int,
    n_splits: int,
    seed: int,
    splitter: type,
) -> CVScore:
    y = np.log(np.asarray(thresholds_ua, dtype=np.float64))
    n_splits = min(n_splits, len(tested))
    if n_splits < 2:
        raise ValueError("threshold prediction needs at least 2 tested electrodes")
    rkf = splitter(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    sq = np.zeros((n_repeats, len(tested)))
    ab = np.zeros((n_repeats, len(tested)))
    for fold_i, (tr, te) in enumerate(rkf.split(tested)):
        rep = fold_i // n_splits
        x_tr = design_matrix(feats, tested[tr], tested[tr], y[tr])
        x_te = design_matrix(feats, tested[te], tested[tr], y[tr])
        m = make_model(model, seed)
        m.fit(x_tr, y[tr])  # type: ignore[attr-defined]
        pred = np.exp(m.predict(x_te))  # type: ignore[attr-defined]
        err = pred - np.exp(y[te])
        sq[rep, te] = err**2
        ab[rep, te] = np.abs(err)
    rmse = np.sqrt(sq.mean(axis=1))
    return CVScore(
        model=model,
        rmse_mean_ua=float(rmse.mean()),
        rmse_sd_ua=float(rmse.std(ddof=1)) if n_repeats > 1 else 0.0,
        mae_mean_ua=float(ab.mean()),
        n_repeats=n_repeats,
        n_splits=n_splits,
    )


@dataclass(frozen=True)
class ThresholdPrediction:
    """Chosen model, every model's CV score, and predictions for the untested electrodes.

    Attributes:
        chosen: name of the model with the lowest mean CV RMSE.
        scores: CV score of every candidate.
        predicted_ids: ids of the untested electrodes.
        predicted_ua: [len(predicted_ids)] predicted thresholds (µA).
        interval_ua: [len, 2] rough 95 % interval: prediction × exp(±1.96 · CV log-RMSE).
    """

    chosen: str
    scores: tuple[CVScore, ...]
    predicted_ids: tuple[str, ...]
    predicted_ua: NDArray[np.float64]
    interval_ua: NDArray[np.float64]


def predict_thresholds(
    feats: ElectrodeFeatures,
    measured: dict[str, float],
    models: Sequence[str] = MODEL_NAMES,
    n_repeats: int = 100,
    n_splits: int = 10,
    seed: int = 0,
) -> ThresholdPrediction:
    """Choose a model by repeated k-fold CV on the measured electrodes; predict the rest."""
    ids = list(feats.electrode_ids)
    unknown = sorted(set(measured) - set(ids))
    if unknown:
        raise ValueError(f"measured thresholds for electrodes not in the array: {unknown[:5]}")
    if len(measured) < 5:
        raise ValueError(f"need ≥ 5 measured electrodes to predict the rest, have {len(measured)}")
    tested = np.array([ids.index(e) for e in measured], dtype=np.int64)
    thr = np.array(list(measured.values()), dtype=np.float64)
    if np.any(thr <= 0) or not np.all(np.isfinite(thr)):
        raise ValueError("measured thresholds must be finite and > 0")
    scores = tuple(cross_validate(feats, tested, thr, m, n_repeats, n_splits, seed) for m in models)
    best = min(scores, key=lambda s: s.rmse_mean_ua)
    rest = np.array([i for i in range(len(ids)) if i not in set(tested.tolist())], dtype=np.int64)
    y = np.log(thr)
    if rest.size:
        model = make_model(best.model, seed)
        model.fit(design_matrix(feats, tested, tested, y), y)  # type: ignore[attr-defined]
        pred = np.exp(model.predict(design_matrix(feats, rest, tested, y)))  # type: ignore[attr-defined]
    else:
        pred = np.zeros(0)
    log_rmse = best.rmse_mean_ua / max(float(np.exp(y).mean()), 1e-9)
    interval = np.column_stack([pred * np.exp(-1.96 * log_rmse), pred * np.exp(1.96 * log_rmse)])
    return ThresholdPrediction(
        chosen=best.model,
        scores=scores,
        predicted_ids=tuple(ids[i] for i in rest),
        predicted_ua=pred,
        interval_ua=interval,
    )
