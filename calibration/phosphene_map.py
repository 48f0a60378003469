"""Fitting a smooth retinotopic model of the whole array to phosphene location reports.

Location reports are noisy (blind participants scatter ~4-16°, sighted ~2°, REFERENCES.md)
and some are wild. Instead of trusting each electrode's own reports, we fit *one* smooth
model to every report of every electrode: the wedge-dipole map with the array's placement
(visual-field point under its centre, rotation) and the map scale k free. Four parameters
from dozens of reports average the scatter away, the model predicts electrodes that were
never tested, and electrodes whose reports disagree with it are flagged as outliers.

Robust least squares (soft-L1 loss) keeps wild reports from dragging the fit; weak priors
hold the parameters near the surgical placement when few electrodes were tested.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares
from scipy.stats import chi2

from calibration.visual_map import ArrayPlacement

#: Prior widths around the nominal placement (surgical placement is known to about this).
PRIOR_CENTER_DEG = 3.0
PRIOR_ROTATION_DEG = 45.0
PRIOR_LOG_K = 0.3


@dataclass(frozen=True)
class MapFit:
    """The fitted map and what it says about each electrode.

    Attributes:
        placement: fitted placement (centre, rotation, k).
        predicted_deg: [n, 2] model position of every electrode (tested or not).
        ci_deg: [n] radius of the 95 % confidence region of each predicted position.
        report_mean_deg: [n, 2] mean reported position (NaN where untested).
        n_reports: [n] number of reports per electrode.
        outlier: [n] True where the reports disagree with the model beyond chance.
        report_sd_deg: robust estimate of the report scatter (per coordinate).
    """

    placement: ArrayPlacement
    predicted_deg: NDArray[np.float64]
    ci_deg: NDArray[np.float64]
    report_mean_deg: NDArray[np.float64]
    n_reports: NDArray[np.int64]
    outlier: NDArray[np.bool_]
    report_sd_deg: float


def _params_to_placement(p: NDArray[np.float64]) -> ArrayPlacement:
    return ArrayPlacement(
        center_deg=(float(p[0]), float(p[1])),
        rotation_deg=float(p[2]),
        k_mm=float(17.3 * np.exp(p[3])),
    )


def fit_phosphene_map(
    electrode_ids: Sequence[str],
    positions_mm: NDArray[np.float64],
    reports: Mapping[str, Sequence[tuple[float, float]]],
    nominal: ArrayPlacement,
    outlier_p: float = 0.001,
) -> MapFit:
    """Fit the map to reports {electrode id: [(x, y)° ...]}; positions_mm: [n, 2] array-local."""
    ids = list(electrode_ids)
    pos = np.asarray(positions_mm, dtype=np.float64)
    if pos.shape != (len(ids), 2):
        raise ValueError(f"fit_phosphene_map: {len(ids)} ids but positions {list(pos.shape)}")
    unknown = sorted(set(reports) - set(ids))
    if unknown:
        raise ValueError(f"fit_phosphene_map: reports for unknown electrodes {unknown[:5]}")
    idx_list: list[int] = []
    pts: list[tuple[float, float]] = []
    for eid, rs in reports.items():
        for r in rs:
            idx_list.append(ids.index(eid))
            pts.append((float(r[0]), float(r[1])))
    if len({i for i in idx_list}) < 3:
        raise ValueError("fit_phosphene_map: need reports from at least 3 electrodes")
    idx = np.asarray(idx_list)
    obs = np.asarray(pts, dtype=np.float64)
    p0 = np.array([nominal.center_deg[0], nominal.center_deg[1], nominal.rotation_deg, 0.0])
    prior_sd = np.array([PRIOR_CENTER_DEG, PRIOR_CENTER_DEG, PRIOR_ROTATION_DEG, PRIOR_LOG_K])

    # Scatter scale for the robust loss: start at 2°, then refit with the robust estimate.
    scale = 2.0
    res = None
    for _ in range(2):

        def residuals(p: NDArray[np.float64], s: float = scale) -> NDArray[np.float64]:
            pred = _params_to_placement(p).visual_deg(pos[idx])
            return np.concatenate([((pred - obs) / s).ravel(), (p - p0) / prior_sd])

        res = least_squares(residuals, p0 if res is None else res.x, loss="soft_l1")
        pred = _params_to_placement(res.x).visual_deg(pos[idx])
        scale = max(1.4826 * float(np.median(np.abs(pred - obs))), 0.05)
    assert res is not None
    placement = _params_to_placement(res.x)
    predicted = placement.visual_deg(pos)

    # Parameter covariance (Gauss-Newton) propagated to every electrode's position.
    jac = res.jac
    try:
        cov = np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        cov = np.full((4, 4), np.inf)
    eps = np.array([1e-3, 1e-3, 1e-2, 1e-4])
    dpos = np.stack(
        [
            (
                _params_to_placement(res.x + np.eye(4)[j] * eps[j]).visual_deg(pos)
                - _params_to_placement(res.x - np.eye(4)[j] * eps[j]).visual_deg(pos)
            )
            / (2 * eps[j])
            for j in range(4)
        ],
        axis=-1,
    )  # [n, 2, 4]
    pcov = np.einsum("nip,pq,njq->nij", dpos, cov, dpos)  # [n, 2, 2]
    ci = np.sqrt(chi2.ppf(0.95, 2) * np.linalg.eigvalsh(pcov).max(axis=-1).clip(min=0.0))

    n = len(ids)
    counts = np.bincount(idx, minlength=n).astype(np.int64)
    sums = np.zeros((n, 2))
    np.add.at(sums, idx, obs)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts[:, None]
    d2 = np.sum((mean - predicted) ** 2, axis=1) * counts / scale**2
    outlier = (counts > 0) & (d2 > chi2.ppf(1.0 - outlier_p, 2))
    return MapFit(
        placement=placement,
        predicted_deg=predicted,
        ci_deg=ci,
        report_mean_deg=mean,
        n_reports=counts,
        outlier=outlier,
        report_sd_deg=scale,
    )
