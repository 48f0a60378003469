"""A simulated patient with known thresholds, brightness curves and phosphene map.

It answers every procedure automatically (`--simulated-patient SEED`), which is how the
procedures are tested and benchmarked: the truth is known, so recovered values can be
scored. Numbers follow the human Utah-array work (REFERENCES.md, Fernández et al. 2021):
thresholds around 40-90 µA (mean 66.8 ± 36.5 µA reported; we keep the simulated ones
below the 100 µA stimulator limit so that they are measurable), brightness rising to ~1
within a few tens of µA above threshold, and phosphene positions from the wedge-dipole map
reported with a scatter of a few degrees (sighted ~2°, blind ~4° with tactile references)
plus occasional wild reports.

Thresholds depend smoothly on the electrode's depth and impedance and its neighbours, so
threshold *prediction* has something to learn, as in real arrays.

Responses are drawn from a generator seeded by (seed, trial index), so a session that is
interrupted and resumed gets the same answers it would have got uninterrupted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from calibration.psychometric import detection_probability
from calibration.visual_map import ArrayPlacement
from hardware.arrays import ElectrodeArray


@dataclass(frozen=True)
class PatientTruth:
    """Ground truth of one simulated patient; every array is [n_electrodes].

    Attributes:
        electrode_ids: ids in array order.
        positions_mm: [n, 2] array-local electrode positions (mm).
        depth_mm, impedance_kohm: per-electrode features a clinic would know.
        threshold_ua, sd_ua, guess, lapse: psychometric function (see psychometric.py).
        brightness_scale_ua, brightness_max: saturating brightness curve above threshold.
        phosphene_deg: [n, 2] true phosphene positions (x, y) in degrees.
        phosphene_size_deg: [n] phosphene diameter at 1.5× threshold.
        placement: where the array sits on the wedge-dipole map.
        report_sd_deg: scatter of location reports; outlier_rate: wild-report probability.
        rating_noise: multiplicative (log-normal σ) noise of brightness ratings.
    """

    electrode_ids: tuple[str, ...]
    positions_mm: NDArray[np.float64]
    depth_mm: NDArray[np.float64]
    impedance_kohm: NDArray[np.float64]
    threshold_ua: NDArray[np.float64]
    sd_ua: NDArray[np.float64]
    guess: NDArray[np.float64]
    lapse: NDArray[np.float64]
    brightness_scale_ua: NDArray[np.float64]
    brightness_max: NDArray[np.float64]
    phosphene_deg: NDArray[np.float64]
    phosphene_size_deg: NDArray[np.float64]
    placement: ArrayPlacement
    report_sd_deg: float
    outlier_rate: float
    rating_noise: float

    def index(self, electrode_id: str) -> int:
        try:
            return self.electrode_ids.index(electrode_id)
        except ValueError as exc:
            raise KeyError(f"simulated patient has no electrode {electrode_id!r}") from exc

    def brightness(self, electrode_id: str, current_ua: float) -> float:
        """True brightness: max · (1 - exp(-(I - thr) / scale)) above threshold, else 0."""
        i = self.index(electrode_id)
        above = max(current_ua - self.threshold_ua[i], 0.0)
        return float(self.brightness_max[i] * (1.0 - np.exp(-above / self.brightness_scale_ua[i])))


def make_truth(
    seed: int,
    electrode_ids: tuple[str, ...],
    positions_mm: NDArray[np.float64],
    report_sd_deg: float = 2.0,
    outlier_rate: float = 0.05,
    rating_noise: float = 0.2,
    nominal_center_deg: tuple[float, float] = (-3.0, -2.0),
    nominal_rotation_deg: float = 0.0,
) -> PatientTruth:
    """Draw a patient.

    Args:
        positions_mm: [n, 2] array-local electrode positions (mm).
        nominal_center_deg, nominal_rotation_deg: the array file's placement (where the
            surgeon meant it to be); the patient's true placement scatters around it.
    """
    rng = np.random.default_rng(seed)
    pos = np.asarray(positions_mm, dtype=np.float64)
    n = pos.shape[0]
    if pos.shape != (n, 2) or len(electrode_ids) != n:
        raise ValueError(
            f"make_truth: {len(electrode_ids)} ids but positions of shape {list(pos.shape)}"
        )
    centred = pos - pos.mean(axis=0)
    span = max(float(np.abs(centred).max()), 1e-6)
    # Shanks enter at a slight tilt, so tip depth varies linearly across the array.
    tilt = rng.normal(0.0, 0.12, size=2)
    depth = 1.5 + centred @ tilt + rng.normal(0.0, 0.05, size=n)
    impedance = np.exp(rng.normal(np.log(50.0), 0.35, size=n))
    # Smooth spatial field (a few random Gaussian bumps) plus electrode-specific noise.
    field = np.zeros(n)
    for _ in range(3):
        c = rng.uniform(-span, span, size=2)
        field += rng.normal(0.0, 0.3) * np.exp(-np.sum((centred - c) ** 2, axis=1) / span**2)
    log_thr = (
        np.log(55.0)
        + 1.2 * (depth - 1.5)
        + 0.4 * (np.log(impedance) - np.log(50.0))
        + field
        + rng.normal(0.0, 0.1, size=n)
    )
    threshold = np.clip(np.exp(log_thr), 18.0, 90.0)
    sd = threshold * rng.uniform(0.08, 0.2, size=n)
    guess = np.asarray(rng.uniform(0.0, 0.04, size=n), dtype=np.float64)
    lapse = np.asarray(rng.uniform(0.0, 0.04, size=n), dtype=np.float64)

    # The surgeon's placement is known only roughly: the true one is off by ~1° and ~15°.
    cx, cy = nominal_center_deg
    placement = ArrayPlacement(
        center_deg=(cx + float(rng.normal(0.0, 1.0)), cy + float(rng.normal(0.0, 1.0))),
        rotation_deg=nominal_rotation_deg + float(rng.normal(0.0, 15.0)),
        k_mm=17.3 * float(np.exp(rng.normal(0.0, 0.1))),
    )
    phos = placement.visual_deg(pos)
    size = placement.phosphene_size_deg(1.5 * threshold, phos)
    return PatientTruth(
        electrode_ids=tuple(electrode_ids),
        positions_mm=pos,
        depth_mm=depth,
        impedance_kohm=impedance,
        threshold_ua=threshold,
        sd_ua=sd,
        guess=guess,
        lapse=lapse,
        brightness_scale_ua=np.asarray(rng.uniform(15.0, 40.0, size=n), dtype=np.float64),
        brightness_max=np.asarray(rng.uniform(0.8, 1.2, size=n), dtype=np.float64),
        phosphene_deg=phos,
        phosphene_size_deg=size,
        placement=placement,
        report_sd_deg=report_sd_deg,
        outlier_rate=outlier_rate,
        rating_noise=rating_noise,
    )


class SimulatedPatient:
    """Answers detection, brightness and location questions from a PatientTruth.

    Every answer uses a generator seeded by (seed, trial_index): pass the session's trial
    index so that a resumed session hears exactly the answers it would have heard.
    """

    def __init__(self, truth: PatientTruth, seed: int) -> None:
        self.truth = truth
        self.seed = seed

    def _rng(self, trial_index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 7919, trial_index])

    def detects(self, electrode_id: str, current_ua: float, trial_index: int) -> bool:
        """Yes/no: did a phosphene appear? Includes false alarms and lapses."""
        t = self.truth
        i = t.index(electrode_id)
        p = detection_probability(current_ua, t.threshold_ua[i], t.sd_ua[i], t.guess[i], t.lapse[i])
        return bool(self._rng(trial_index).random() < float(p))

    def rates_brightness(self, electrode_id: str, current_ua: float, trial_index: int) -> float:
        """Magnitude estimate (0 = nothing, ~1 = brightest typical phosphene)."""
        rng = self._rng(trial_index)
        true = self.truth.brightness(electrode_id, current_ua)
        if true <= 0.0:
            return 0.0
        noisy = true * float(np.exp(rng.normal(0.0, self.truth.rating_noise)))
        return round(max(noisy + float(rng.normal(0.0, 0.02)), 0.0), 2)

    def reports_location(
        self, electrode_id: str, current_ua: float, trial_index: int
    ) -> tuple[float, float] | None:
        """Where the phosphene appeared (x, y degrees), or None when nothing was seen."""
        t = self.truth
        i = t.index(electrode_id)
        rng = self._rng(trial_index)
        if current_ua < t.threshold_ua[i]:
            return None
        if rng.random() < t.outlier_rate:
            x, y = t.phosphene_deg[i] + rng.uniform(-15.0, 15.0, size=2)
        else:
            x, y = t.phosphene_deg[i] + rng.normal(0.0, t.report_sd_deg, size=2)
        return round(float(x), 2), round(float(y), 2)


def simulated_patient_for_array(array: ElectrodeArray, seed: int) -> SimulatedPatient:
    """A simulated patient implanted with `array` at (about) the array file's placement."""
    truth = make_truth(
        seed,
        array.electrode_ids,
        array.positions_mm,
        nominal_center_deg=array.placement_deg,
        nominal_rotation_deg=array.rotation_deg,
    )
    return SimulatedPatient(truth, seed)
