"""Evaluation behind `npe evaluate`: accuracy on the test split and the repeated clip.

Metrics (per cell, then the mean over cells):
* `pcc`: Pearson r of the prediction with the trial-averaged repeat response.
* `fev`: fraction of explainable variance explained, noise-corrected with the repeats
  (Cadena et al. 2019): FEV = 1 − (MSE − σ²_noise) / (Var[y] − σ²_noise), where MSE is the mean
  squared error of the prediction against every single trial, Var[y] the variance of all
  single-trial responses and σ²_noise the mean across-trial variance per time bin.
* `feve`: FEV restricted to reliable cells, as openretina reports it: cells whose noise
  variance is more than `max_noise_ratio` of their total variance are excluded (NaN).
* `gain`: least-squares slope of the trial average on the prediction (1 = right level; a
  prediction at half the true rate has gain 2 and PCC 1). `mean_rate_error`: relative error of
  the mean predicted rate, (mean pred − mean obs) / mean obs. Why: PCC ignores scale and
  offset, so a right-shape, wrong-level model (rates off 20× on a novel scene) looked good.
* `ceiling`: Pearson r of the noise-free true rates with the trial average (synthetic data
  only): the best any model can do against a trial average of this many repeats.
* `split_half`, `oracle`: noise ceilings from the repeats alone (real data has no truth):
  the Spearman–Brown-corrected correlation of two half-averages (mean over random splits), and
  the leave-one-out oracle correlation (each trial with the mean of the others).
* `test_pcc`: Pearson r with the single-trial counts of the test split (noisy, no repeats needed).

Responses are compared after a boxcar smoothing of `smooth_ms` (default 50 ms, 5 bins at
100 Hz), applied identically to predictions, single trials, trial averages and true rates, so
the ceiling is measured on the same footing. Why: the prosthesis acts on rates over tens of
milliseconds (stimulation trains of ~166 ms in Fernández et al. 2021, REFERENCES), not on
10 ms spike-count jitter; and a 10-repeat trial average is noisy per 10 ms bin (on the
default synthetic natural recording the ceiling is r = 0.91 at 10 ms and 0.98 at 50 ms).
`--smooth-ms 0` gives raw bins.

A multi-session checkpoint is evaluated per session (each session's view on its own
recording, `evaluate_sessions`) and pooled: every cell of every session counts once in the
pooled means and medians, so a session with more cells weighs more, as in openretina's
per-neuron averages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict
from scipy.ndimage import uniform_filter1d

from encoder.batching import predict_frames
from encoder.checkpoint import LoadedCheckpoint, LoadedMultiSessionCheckpoint
from encoder.errors import EncoderError
from encoder.recording import Recording

DEFAULT_SMOOTH_MS = 50.0
#: FEVE excludes cells whose noise variance exceeds this fraction of their total variance.
DEFAULT_MAX_NOISE_RATIO = 0.5
SPLIT_HALF_DRAWS = 20


class EvaluationError(EncoderError, ValueError):
    """A recording that cannot be used to evaluate a checkpoint."""


def pearson(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Pearson r per column of two [n, n_cells] arrays; NaN for a constant column."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    da, db = a - a.mean(0), b - b.mean(0)
    denom = np.sqrt((da**2).sum(0) * (db**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (da * db).sum(0) / denom
    return np.where(denom > 0, r, np.nan)


def fev(pred: NDArray[np.floating], trials: NDArray[np.floating]) -> NDArray[np.float64]:
    """Noise-corrected fraction of explainable variance explained per cell.

    pred: [n, n_cells]; trials: [R, n, n_cells] single-trial responses (R ≥ 2).
    NaN where the cell has no explainable variance (Var[y] ≤ σ²_noise).
    """
    trials = np.asarray(trials, np.float64)
    if trials.ndim != 3 or trials.shape[0] < 2:
        raise EvaluationError(f"fev: need trials [R ≥ 2, n, n_cells], got {list(trials.shape)}")
    pred = np.asarray(pred, np.float64)
    mse = ((trials - pred[None]) ** 2).mean((0, 1))
    var_y = trials.reshape(-1, trials.shape[2]).var(0)
    noise = trials.var(0, ddof=1).mean(0)
    explainable = var_y - noise
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 1.0 - (mse - noise) / explainable
    return np.where(explainable > 0, value, np.nan)


def noise_ratio(trials: NDArray[np.floating]) -> NDArray[np.float64]:
    """Per cell: mean across-trial variance / variance of all single trials (1 = pure noise)."""
    trials = np.asarray(trials, np.float64)
    var_y = trials.reshape(-1, trials.shape[2]).var(0)
    noise = trials.var(0, ddof=1).mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var_y > 0, noise / var_y, np.nan)


def feve(
    pred: NDArray[np.floating],
    trials: NDArray[np.floating],
    max_noise_ratio: float = DEFAULT_MAX_NOISE_RATIO,
) -> NDArray[np.float64]:
    """FEV of the reliable cells only: NaN where noise / total variance > `max_noise_ratio`."""
    ratio = noise_ratio(trials)
    return np.where(ratio <= max_noise_ratio, fev(pred, trials), np.nan)


def gain(pred: NDArray[np.floating], obs: NDArray[np.floating]) -> NDArray[np.float64]:
    """Least-squares slope of `obs` on `pred` per column; NaN for a constant prediction."""
    p = np.asarray(pred, np.float64)
    o = np.asarray(obs, np.float64)
    dp = p - p.mean(0)
    var = (dp**2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (dp * (o - o.mean(0))).sum(0) / var
    return np.where(var > 0, slope, np.nan)


def mean_rate_error(pred: NDArray[np.floating], obs: NDArray[np.floating]) -> NDArray[np.float64]:
    """(mean predicted − mean observed) / mean observed per column; NaN for a silent cell."""
    mp = np.asarray(pred, np.float64).mean(0)
    mo = np.asarray(obs, np.float64).mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mo > 0, (mp - mo) / mo, np.nan)


def _column_nanmean(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean over axis 0 ignoring NaN; NaN (no warning) for a column without finite values."""
    finite = np.isfinite(x)
    count = finite.sum(0)
    total = np.where(finite, x, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(count > 0, total / count, np.nan), np.float64)


def split_half_ceiling(
    trials: NDArray[np.floating], draws: int = SPLIT_HALF_DRAWS, seed: int = 0
) -> NDArray[np.float64]:
    """Spearman–Brown-corrected split-half correlation per cell, mean over random splits.

    trials: [R ≥ 2, n, n_cells]. r of the two half-averages, corrected to R repeats with
    2r / (1 + r): the reliability of the full trial average, from the repeats alone.
    """
    trials = np.asarray(trials, np.float64)
    n_rep = trials.shape[0]
    if n_rep < 2:
        raise EvaluationError(f"split-half ceiling: need ≥ 2 repeats, got {n_rep}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        order = rng.permutation(n_rep)
        a, b = order[: n_rep // 2], order[n_rep // 2 :]
        r = pearson(trials[a].mean(0), trials[b].mean(0))
        values.append(2 * r / (1 + r))
    return _column_nanmean(np.stack(values))


def oracle_correlation(trials: NDArray[np.floating]) -> NDArray[np.float64]:
    """Leave-one-out oracle per cell: mean over trials of r(trial, mean of the other trials)."""
    trials = np.asarray(trials, np.float64)
    n_rep = trials.shape[0]
    if n_rep < 2:
        raise EvaluationError(f"oracle correlation: need ≥ 2 repeats, got {n_rep}")
    total = trials.sum(0)
    rs = np.stack([pearson(trials[i], (total - trials[i]) / (n_rep - 1)) for i in range(n_rep)])
    return _column_nanmean(rs)


def smooth(x: NDArray[np.floating], bins: int, axis: int = 0) -> NDArray[np.float64]:
    """Centred boxcar of `bins` bins along `axis` (identity for bins ≤ 1)."""
    arr: NDArray[np.float64] = np.asarray(x, np.float64)
    if bins <= 1:
        return arr
    return np.asarray(uniform_filter1d(arr, bins, axis=axis, mode="nearest"), np.float64)


def _nanmean(x: NDArray[np.floating]) -> float | None:
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


def _nanmedian(x: NDArray[np.floating]) -> float | None:
    return float(np.nanmedian(x)) if np.isfinite(x).any() else None


class EvaluationResult(BaseModel):
    """Everything `npe evaluate` reports (JSON keys = field names; NaN written as null)."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model: str
    data: str
    smooth_ms: float
    n_cells: int
    n_repeats: int
    session: str | None = None  # the session of a multi-session checkpoint, else None
    mean_pcc: float | None
    per_cell_pcc: list[float | None]
    mean_fev: float | None
    per_cell_fev: list[float | None]
    max_noise_ratio: float
    mean_feve: float | None
    per_cell_feve: list[float | None]
    n_cells_feve: int
    per_cell_noise_ratio: list[float | None]
    median_gain: float | None
    per_cell_gain: list[float | None]
    median_abs_mean_rate_error: float | None
    per_cell_mean_rate_error: list[float | None]
    ceiling_pcc: float | None
    per_cell_ceiling: list[float | None] | None
    fraction_of_ceiling: float | None
    split_half_ceiling: float | None
    per_cell_split_half: list[float | None]
    oracle_ceiling: float | None
    per_cell_oracle: list[float | None]
    test_pcc: float | None
    per_cell_test_pcc: list[float | None]
    cell_ids: list[str]
    cell_types: list[str]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


@dataclass(frozen=True)
class Predictions:
    """Arrays behind the metrics (for figures): all [n, n_cells], smoothed."""

    repeat_pred: NDArray[np.float64] | None
    repeat_avg: NDArray[np.float64] | None
    repeat_truth: NDArray[np.float64] | None
    test_pred: NDArray[np.float64]
    test_obs: NDArray[np.float64]


def _listify(x: NDArray[np.floating]) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, np.float64)]


def cell_indices(ckpt: LoadedCheckpoint, recording: Recording) -> NDArray[np.int64]:
    """Recording column of each checkpoint cell (matched by id); refuses a mismatch."""
    meta = ckpt.meta
    problems = []
    if tuple(meta.frame_shape) != recording.frame_shape:
        problems.append(
            f"frames of {list(recording.frame_shape)} px, model needs {list(meta.frame_shape)}"
        )
    if abs(meta.frame_rate_hz - recording.frame_rate_hz) > 1e-6:
        problems.append(f"{recording.frame_rate_hz} Hz, model trained at {meta.frame_rate_hz} Hz")
    index = {cid: i for i, cid in enumerate(recording.cells.ids)}
    missing = [cid for cid in meta.cells.ids if cid not in index]
    if missing:
        problems.append(f"cells {missing[:5]} of the model are not in the recording")
    if problems:
        raise EvaluationError("recording does not fit the model: " + "; ".join(problems))
    return np.asarray([index[cid] for cid in meta.cells.ids], dtype=np.int64)


def evaluate(
    ckpt: LoadedCheckpoint,
    recording: Recording,
    data_name: str = "",
    smooth_ms: float = DEFAULT_SMOOTH_MS,
    device: str = "cpu",
    max_noise_ratio: float = DEFAULT_MAX_NOISE_RATIO,
) -> tuple[EvaluationResult, Predictions]:
    """Evaluate a loaded checkpoint on `recording` (test split + repeats)."""
    import torch

    if smooth_ms < 0:
        raise EvaluationError(f"--smooth-ms must be ≥ 0, got {smooth_ms}")
    if not 0.0 < max_noise_ratio <= 1.0:
        raise EvaluationError(f"--max-noise-ratio must lie in (0, 1], got {max_noise_ratio}")
    cells = cell_indices(ckpt, recording)
    model = ckpt.model.to(device).eval()
    window = model.window_frames
    bins = max(1, round(smooth_ms / 1000.0 * recording.frame_rate_hz))
    with torch.no_grad():
        frames, pred = predict_frames(
            model, recording.stimulus, recording.splits["test"], window, device=device
        )
    obs = recording.responses[frames][:, cells].astype(np.float64)
    test_pred, test_obs = smooth(pred, bins), smooth(obs, bins)
    test_r = pearson(test_pred, test_obs)

    rep_pred = rep_avg = rep_truth = None
    nan = np.full(len(cells), np.nan)
    pcc_r = fev_r = feve_r = ratio_r = gain_r = err_r = ceil_r = half_r = oracle_r = nan
    n_repeats = 0
    reps = recording.repeats
    if reps is not None:
        n_rep = reps.stimulus.shape[0]
        if n_rep < window:
            raise EvaluationError(
                f"repeat clip of {n_rep} frames is shorter than the window ({window})"
            )
        with torch.no_grad():
            rframes, rpred = predict_frames(
                model,
                reps.stimulus,
                np.asarray([[0, n_rep]], dtype=np.int64),
                window,
                device=device,
            )
        trials = reps.responses[:, rframes][:, :, cells].astype(np.float64)
        n_repeats = int(trials.shape[0])
        trials_s = smooth(trials, bins, axis=1)
        rep_pred = smooth(rpred, bins)
        rep_avg = trials_s.mean(0)
        pcc_r = pearson(rep_pred, rep_avg)
        gain_r = gain(rep_pred, rep_avg)
        err_r = mean_rate_error(rep_pred, rep_avg)
        if n_repeats >= 2:
            fev_r = fev(rep_pred, trials_s)
            ratio_r = noise_ratio(trials_s)
            feve_r = feve(rep_pred, trials_s, max_noise_ratio)
            half_r = split_half_ceiling(trials_s)
            oracle_r = oracle_correlation(trials_s)
        if reps.truth_rates_hz is not None:
            truth = reps.truth_rates_hz[rframes][:, cells] / recording.frame_rate_hz
            rep_truth = smooth(truth, bins)
            ceil_r = pearson(rep_truth, rep_avg)
    mean_pcc, ceiling = _nanmean(pcc_r), _nanmean(ceil_r)
    result = EvaluationResult(
        model=ckpt.meta.model_name,
        data=data_name,
        smooth_ms=bins * 1000.0 / recording.frame_rate_hz,
        n_cells=len(cells),
        n_repeats=n_repeats,
        mean_pcc=mean_pcc,
        per_cell_pcc=_listify(pcc_r),
        mean_fev=_nanmean(fev_r),
        per_cell_fev=_listify(fev_r),
        max_noise_ratio=max_noise_ratio,
        mean_feve=_nanmean(feve_r),
        per_cell_feve=_listify(feve_r),
        n_cells_feve=int(np.isfinite(feve_r).sum()),
        per_cell_noise_ratio=_listify(ratio_r),
        median_gain=_nanmedian(gain_r),
        per_cell_gain=_listify(gain_r),
        median_abs_mean_rate_error=_nanmedian(np.abs(err_r)),
        per_cell_mean_rate_error=_listify(err_r),
        ceiling_pcc=ceiling,
        per_cell_ceiling=_listify(ceil_r) if rep_truth is not None else None,
        fraction_of_ceiling=(mean_pcc / ceiling) if mean_pcc is not None and ceiling else None,
        split_half_ceiling=_nanmean(half_r),
        per_cell_split_half=_listify(half_r),
        oracle_ceiling=_nanmean(oracle_r),
        per_cell_oracle=_listify(oracle_r),
        test_pcc=_nanmean(test_r),
        per_cell_test_pcc=_listify(test_r),
        cell_ids=list(ckpt.meta.cells.ids),
        cell_types=list(ckpt.meta.cells.types),
        session=ckpt.session or None,
    )
    return result, Predictions(rep_pred, rep_avg, rep_truth, test_pred, test_obs)


class PooledEvaluation(BaseModel):
    """Metrics over every cell of every evaluated session (each cell counts once)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_sessions: int
    n_cells: int
    mean_pcc: float | None
    mean_fev: float | None
    mean_feve: float | None
    n_cells_feve: int
    median_gain: float | None
    median_abs_mean_rate_error: float | None
    ceiling_pcc: float | None
    fraction_of_ceiling: float | None
    split_half_ceiling: float | None
    oracle_ceiling: float | None
    test_pcc: float | None


class MultiSessionEvaluationResult(BaseModel):
    """What `npe evaluate` reports for a multi-session checkpoint: per session and pooled."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model: str
    smooth_ms: float
    sessions: list[EvaluationResult]
    pooled: PooledEvaluation

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def _values(results: Sequence[EvaluationResult], field: str) -> NDArray[np.float64]:
    """The per-cell list `field` of every result, concatenated (None → NaN)."""
    out: list[float] = []
    for r in results:
        values = getattr(r, field)
        if values is None:
            values = [None] * r.n_cells
        out.extend(np.nan if v is None else float(v) for v in values)
    return np.asarray(out, np.float64)


def pool(results: Sequence[EvaluationResult]) -> PooledEvaluation:
    """Pooled metrics of per-session results: means and medians over all their cells."""
    if not results:
        raise EvaluationError("nothing to pool: no session was evaluated")
    mean_pcc = _nanmean(_values(results, "per_cell_pcc"))
    ceiling = _nanmean(_values(results, "per_cell_ceiling"))
    feve_values = _values(results, "per_cell_feve")
    return PooledEvaluation(
        n_sessions=len(results),
        n_cells=sum(r.n_cells for r in results),
        mean_pcc=mean_pcc,
        mean_fev=_nanmean(_values(results, "per_cell_fev")),
        mean_feve=_nanmean(feve_values),
        n_cells_feve=int(np.isfinite(feve_values).sum()),
        median_gain=_nanmedian(_values(results, "per_cell_gain")),
        median_abs_mean_rate_error=_nanmedian(np.abs(_values(results, "per_cell_mean_rate_error"))),
        ceiling_pcc=ceiling,
        fraction_of_ceiling=(mean_pcc / ceiling) if mean_pcc is not None and ceiling else None,
        split_half_ceiling=_nanmean(_values(results, "per_cell_split_half")),
        oracle_ceiling=_nanmean(_values(results, "per_cell_oracle")),
        test_pcc=_nanmean(_values(results, "per_cell_test_pcc")),
    )


def recording_session_name(path: str | Path, recording: Recording) -> str:
    """The session a recording holds: its `session` attribute if it has one, else its file stem."""
    value = recording.extra_attrs.get("session")
    if isinstance(value, bytes):
        value = value.decode()
    return str(value) if value else Path(path).stem


def match_sessions(
    sessions: Sequence[str], recordings: Sequence[tuple[str, Recording]]
) -> dict[str, tuple[str, Recording]]:
    """Session → (data name, recording): by the recordings' session names, else by order.

    By name when every recording names a distinct session of the checkpoint (any subset may
    be given); by order when there is exactly one recording per session. Refuses anything
    else with the sessions and names it saw.
    """
    names = [recording_session_name(path, rec) for path, rec in recordings]
    if names and len(set(names)) == len(names) and set(names) <= set(sessions):
        by_name = dict(zip(names, recordings, strict=True))
        return {s: by_name[s] for s in sessions if s in by_name}
    if len(recordings) == len(sessions):
        return dict(zip(sessions, recordings, strict=True))
    raise EvaluationError(
        f"--data: {len(recordings)} recording(s) named {', '.join(names) or '(none)'} match "
        f"neither the checkpoint's sessions ({', '.join(sessions)}) by name nor one per "
        "session by order"
    )


def evaluate_sessions(
    ckpt: LoadedMultiSessionCheckpoint,
    recordings: Mapping[str, tuple[str, Recording]],
    smooth_ms: float = DEFAULT_SMOOTH_MS,
    device: str = "cpu",
    max_noise_ratio: float = DEFAULT_MAX_NOISE_RATIO,
) -> tuple[MultiSessionEvaluationResult, dict[str, Predictions]]:
    """Evaluate each session's view on its recording (`match_sessions`), then pool.

    recordings: session → (data name, recording). A recording that does not fit its session
    (frame size, frame rate, cells) is refused with the session named.
    """
    results: list[EvaluationResult] = []
    predictions: dict[str, Predictions] = {}
    for session, (data_name, recording) in recordings.items():
        view = LoadedCheckpoint(
            model=ckpt.model.session_model(session),
            meta=ckpt.meta.for_session(session),
            run_dir=ckpt.run_dir,
            session=session,
        )
        try:
            result, preds = evaluate(view, recording, data_name, smooth_ms, device, max_noise_ratio)
        except EvaluationError as exc:
            raise EvaluationError(f"session {session!r} ({data_name}): {exc}") from exc
        results.append(result)
        predictions[session] = preds
    if not results:
        raise EvaluationError("nothing to evaluate: no recording was given for any session")
    combined = MultiSessionEvaluationResult(
        model=ckpt.meta.model_name,
        smooth_ms=results[0].smooth_ms,
        sessions=results,
        pooled=pool(results),
    )
    return combined, predictions


def write_result(result: EvaluationResult | MultiSessionEvaluationResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.to_json())
    return path
