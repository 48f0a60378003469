"""Mapping a rate field onto electrodes: phosphene positions, sampling, ON/OFF rule, currents.

Steps, per bin:
1. Each electrode has a phosphene position in degrees: the patient's calibration
   (`phosphene_deg`) when there is one, otherwise the wedge-dipole map of V1 applied to the
   electrode's cortical position (`ElectrodeArray.phosphene_positions_deg`).
2. The rate field is sampled at those positions, per polarity group: a Gaussian-weighted mean
   of the entries within 3σ (σ = `sigma_deg`), or the nearest entry when none lies that
   close (and within `max_distance_deg`; farther than that the electrode gets no drive).
   ``sampling="nearest"`` always takes the nearest entry.
3. **ON/OFF rule.** Each group's rate is normalised, r / `rate_max_hz` clipped to [0, 1], and
   the electrode's drive is the larger of the ON and OFF values (entries of unknown polarity
   count as ON). Why: V1 phosphenes are bright whatever the sign of the contrast that caused
   them; ON cells signal increments and OFF cells decrements, so an edge of either sign should
   light the electrode, while a uniform region (weak drive in both) should not. Taking the
   maximum instead of the sum keeps an electrode that sees both from being driven twice.
4. Drive below `min_drive` → electrode off. Otherwise the target brightness is
   drive × brightness(max comfortable current), and the current is the inverse of the
   electrode's calibrated brightness curve (`BrightnessCurve`), clipped to
   [threshold, max comfortable]. Without a calibration, every electrode uses
   `MappingConfig`'s uncalibrated curve (threshold 20 µA, no phosphenes at ≤ 20 µA; scale
   25 µA so brightness ≈ 0.8 at 60 µA; max comfortable 90 µA, where brightness ≈ 1 —
   REFERENCES.md, Fernández 2021).
5. Pulse parameters: cathodic-first biphasic, 170 µs per phase at 300 Hz (REFERENCES.md),
   `n_pulses = round(rate × frame duration)` per frame.

Bad rates (NaN, inf, negative) in any entry an electrode samples make that electrode's drive
NaN; the pipeline turns those into zero stimulation with a safety event.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from scipy import sparse
from scipy.spatial import cKDTree

from hardware.arrays import ElectrodeArray
from hardware.calibration_file import PatientCalibration
from hardware.retinotopy import DEFAULT_MAP, WedgeDipoleMap
from hardware.types import POLARITY_OFF


class MappingConfig(BaseModel):
    """How rates become currents (see the module docstring for the rules)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sampling: Literal["gaussian", "nearest"] = "gaussian"
    sigma_deg: float = Field(default=0.5, gt=0.0, le=20.0)
    max_distance_deg: float = Field(default=3.0, gt=0.0, le=180.0)
    rate_max_hz: float = Field(default=100.0, gt=0.0, allow_inf_nan=False)
    min_drive: float = Field(default=0.1, ge=0.0, lt=1.0)
    phase_width_us: float = Field(default=170.0, gt=0.0, le=1000.0)
    interphase_gap_us: float = Field(default=50.0, ge=0.0, le=1000.0)
    pulse_rate_hz: float = Field(default=300.0, gt=0.0, le=10000.0)
    frame_duration_ms: float = Field(default=10.0, gt=0.0, le=1000.0)
    uncalibrated_threshold_ua: float = Field(default=20.0, gt=0.0)
    uncalibrated_scale_ua: float = Field(default=25.0, gt=0.0)
    uncalibrated_max_comfortable_ua: float = Field(default=90.0, gt=0.0)

    @property
    def n_pulses(self) -> int:
        return max(1, round(self.pulse_rate_hz * self.frame_duration_ms / 1000.0))


@dataclass(frozen=True)
class ElectrodeModel:
    """Per-electrode mapping parameters, all [n] in the array's order.

    enabled: bool; threshold_ua / max_comfortable_ua / scale_ua / max_brightness: the
    brightness curve b(I) = B·(1 − exp(−(I − thr)/scale)) for I ≥ thr; phosphene_deg [n, 2];
    source: "calibration" or "retinotopy".
    """

    enabled: NDArray[np.bool_]
    threshold_ua: NDArray[np.float64]
    max_comfortable_ua: NDArray[np.float64]
    scale_ua: NDArray[np.float64]
    max_brightness: NDArray[np.float64]
    phosphene_deg: NDArray[np.float64]
    source: str

    def brightness(self, current_ua: NDArray[np.floating]) -> NDArray[np.float64]:
        """[..., n] brightness in [0, max_brightness] of each electrode at `current_ua` [..., n]."""
        i = np.asarray(current_ua, dtype=np.float64)
        b = self.max_brightness * (1.0 - np.exp(-(i - self.threshold_ua) / self.scale_ua))
        return np.where(i >= self.threshold_ua, np.maximum(b, 0.0), 0.0)

    def current_for(self, drive: NDArray[np.float64]) -> NDArray[np.float64]:
        """[..., n] current for a drive in [0, 1]: inverse brightness curve, clipped.

        drive 1 → max comfortable current; drive → 0 → threshold.
        """
        # np.minimum/np.maximum instead of np.clip: same values (NaN propagates in both),
        # without np.clip's Python-level overhead on this per-bin path.
        target = np.minimum(np.maximum(drive, 0.0), 1.0) * self._top_brightness
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.minimum(np.maximum(target / self.max_brightness, 0.0), 1.0 - 1e-12)
            i = self.threshold_ua - self.scale_ua * np.log1p(-ratio)
        return np.minimum(np.maximum(i, self.threshold_ua), self.max_comfortable_ua)

    @cached_property
    def _top_brightness(self) -> NDArray[np.float64]:
        """[n] brightness at the max comfortable current (computed once: it never changes)."""
        return self.brightness(self.max_comfortable_ua)


def electrode_model(
    array: ElectrodeArray,
    calibration: PatientCalibration | None,
    config: MappingConfig,
    retinotopy: WedgeDipoleMap = DEFAULT_MAP,
) -> ElectrodeModel:
    """Per-electrode parameters from the calibration, or the uncalibrated defaults.

    With a calibration, an electrode of the array that the calibration does not list is
    disabled: an electrode nobody has tested never stimulates.
    """
    n = array.n
    if calibration is None:
        return ElectrodeModel(
            enabled=np.ones(n, dtype=bool),
            threshold_ua=np.full(n, config.uncalibrated_threshold_ua),
            max_comfortable_ua=np.full(
                n, max(config.uncalibrated_max_comfortable_ua, config.uncalibrated_threshold_ua)
            ),
            scale_ua=np.full(n, config.uncalibrated_scale_ua),
            max_brightness=np.ones(n),
            phosphene_deg=array.phosphene_positions_deg(retinotopy),
            source="retinotopy",
        )
    by_id = calibration.by_id()
    fallback = array.phosphene_positions_deg(retinotopy)
    enabled = np.zeros(n, dtype=bool)
    thr = np.full(n, config.uncalibrated_threshold_ua)
    top = np.full(n, config.uncalibrated_max_comfortable_ua)
    scale = np.full(n, config.uncalibrated_scale_ua)
    bmax = np.ones(n)
    pos = fallback.copy()
    for i, eid in enumerate(array.electrode_ids):
        e = by_id.get(eid)
        if e is None:
            continue
        enabled[i] = e.enabled
        thr[i] = e.threshold_ua
        top[i] = e.max_comfortable_ua
        scale[i] = e.brightness.scale_ua
        bmax[i] = e.brightness.max_brightness
        pos[i] = e.phosphene_deg
    return ElectrodeModel(enabled, thr, top, scale, bmax, pos, "calibration")


class RateSampler:
    """Samples [B, n_entries] rates at electrode positions → [B, n_electrodes] drive.

    Sparse weights are built once per distinct set of entry positions/polarities and reused
    while the rate field's geometry stays the same (it does, frame after frame).
    """

    def __init__(self, phosphene_deg: NDArray[np.float64], config: MappingConfig) -> None:
        self.phosphene_deg = phosphene_deg
        self.config = config
        self._key: tuple[bytes, bytes] | None = None
        # [2·n_electrodes, n_entries]: the ON group's weights stacked over the OFF group's,
        # so one sparse product per bin serves both.
        self._weights: sparse.csr_matrix | None = None

    def _build(self, positions: NDArray[np.float64], polarity: NDArray[np.int8]) -> None:
        cfg = self.config
        n_el = self.phosphene_deg.shape[0]
        n = positions.shape[0]
        weights = []
        for group in (polarity != POLARITY_OFF, polarity == POLARITY_OFF):
            idx = np.nonzero(group)[0]
            rows = np.zeros(0, dtype=np.int64)
            cols = np.zeros(0, dtype=np.int64)
            vals = np.zeros(0)
            if len(idx) > 0:
                tree = cKDTree(positions[idx])
                near_d, near_j = tree.query(self.phosphene_deg, k=1)
                has_ball = np.zeros(n_el, dtype=bool)
                if cfg.sampling == "gaussian":
                    balls = tree.query_ball_point(self.phosphene_deg, r=3.0 * cfg.sigma_deg)
                    lens = np.fromiter((len(b) for b in balls), dtype=np.int64, count=n_el)
                    has_ball = lens > 0
                    if has_ball.any():
                        rows = np.repeat(np.arange(n_el), lens)
                        cols = idx[np.concatenate([b for b in balls if b]).astype(np.int64)]
                        d2 = np.sum((positions[cols] - self.phosphene_deg[rows]) ** 2, axis=1)
                        w = np.exp(-d2 / (2.0 * cfg.sigma_deg**2))
                        vals = w / np.bincount(rows, weights=w, minlength=n_el)[rows]
                # No entry within 3σ (or nearest sampling): the nearest one, if close enough.
                fallback = ~has_ball & (near_d <= cfg.max_distance_deg)
                rows = np.r_[rows, np.nonzero(fallback)[0]]
                cols = np.r_[cols, idx[near_j[fallback]]]
                vals = np.r_[vals, np.ones(int(fallback.sum()))]
            weights.append(sparse.csr_matrix((vals, (rows, cols)), shape=(n_el, n)))
        self._weights = sparse.vstack(weights, format="csr")

    def weights(
        self, positions_deg: NDArray[np.float64], polarity: NDArray[np.int8]
    ) -> sparse.csr_matrix:
        """[2·n_electrodes, n_entries] sampling weights for this geometry (ON rows, then OFF)."""
        pos = np.ascontiguousarray(positions_deg, dtype=np.float64)
        pol = np.ascontiguousarray(polarity, dtype=np.int8)
        key = (pos.tobytes(), pol.tobytes())
        if key != self._key:
            self._build(pos, pol)
            self._key = key
        assert self._weights is not None
        return self._weights

    def drive(
        self,
        rates_hz: NDArray[np.floating],
        positions_deg: NDArray[np.floating],
        polarity: NDArray[np.integer],
    ) -> NDArray[np.float64]:
        """Args: rates_hz [B, n], positions_deg [n, 2], polarity [n].

        Returns [B, n_electrodes] drive in [0, 1], NaN where a sampled entry was NaN, inf or
        negative. Electrodes with nothing in reach get 0.
        """
        pos = np.ascontiguousarray(positions_deg, dtype=np.float64)
        pol = np.ascontiguousarray(polarity, dtype=np.int8)
        key = (pos.tobytes(), pol.tobytes())
        if key != self._key:
            self._build(pos, pol)
            self._key = key
        r = np.asarray(rates_hz, dtype=np.float64)
        bad = ~np.isfinite(r) | (r < 0)
        clean = np.where(bad, 0.0, np.minimum(r, self.config.rate_max_hz))
        n_el = self.phosphene_deg.shape[0]
        w = self._weights
        assert w is not None  # built by _build above
        both = (w @ clean.T).T  # [B, 2·n_el]: ON group's drive, then OFF's
        out = np.maximum(both[:, :n_el], both[:, n_el:]) / self.config.rate_max_hz
        out = np.minimum(np.maximum(out, 0.0), 1.0)
        if not bad.any():  # the live path's usual case: skip the fault bookkeeping
            return out
        # Weights are positive wherever an entry is sampled, so w @ bad > 0 exactly when an
        # electrode samples a bad entry.
        bad_f = bad.T.astype(np.float64)
        hits = (w @ bad_f).T
        bad_hits = hits[:, :n_el] + hits[:, n_el:]
        return np.where(bad_hits > 0, np.nan, out)
