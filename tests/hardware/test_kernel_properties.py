"""Property test: the optimised kernel (hardware.kernel) equals the general path, bit for bit.

Hypothesis draws limits (total current, simultaneous electrodes including 0, charge, disabled
electrodes), a mapping (sampling, σ, minimum drive including 0, rate ceiling), optionally a
calibration (thresholds down to below the deliverable floor, brightness curves, disabled
electrodes), a rate-field geometry and a batch of rate fields with saturated entries (ties
in the drive), zeros, -0.0, and at drawn rates NaN, ±inf and negative values. On every bin the
kernel serves, its five frame fields must equal the general path's (`currents` →
`_reference`) exactly and the general path must report no event; every bin it declines must
carry an event or a bad rate. The same for the 1,024-electrode implant (16 × Utah-64, one
fused kernel), array by array. `check_frame` re-checks every served frame independently.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware.arrays import load_array
from hardware.calibration_file import BrightnessCurve, ElectrodeCalibration, PatientCalibration
from hardware.implant import ImplantLimits, ImplantPipeline, load_implant
from hardware.mapping import MappingConfig
from hardware.pipeline import StimulationPipeline
from hardware.safety import SafetyLimits, check_frame
from hardware.types import RateField

#: Every test here runs in both forms of the per-bin work (compiled and numpy; conftest).
pytestmark = pytest.mark.usefixtures("form")

FIELDS = ("amplitude_ua", "phase_width_us", "interphase_gap_us", "pulse_rate_hz", "n_pulses")
UTAH = load_array("utah96")
IMPLANT = load_implant("utah16x64")


def _calibration(array, rng, tiny: bool) -> PatientCalibration:
    electrodes = []
    for eid in array.electrode_ids:
        if rng.random() < 0.1:
            continue  # not listed: disabled
        thr = (
            float(rng.uniform(1e-4, 2e-3))
            if tiny and rng.random() < 0.2
            else float(rng.uniform(5, 60))
        )
        electrodes.append(
            ElectrodeCalibration(
                electrode_id=eid,
                enabled=bool(rng.random() > 0.05),
                threshold_ua=thr,
                max_comfortable_ua=min(float(thr + rng.uniform(0, 60)), 100.0),
                brightness=BrightnessCurve(
                    scale_ua=float(rng.uniform(1, 50)),
                    max_brightness=float(rng.choice([1.0, rng.uniform(0.5, 2)])),
                ),
                phosphene_deg=(float(rng.normal(3, 2)), float(rng.normal(0, 2))),
            )
        )
    return PatientCalibration(
        version=1, patient_id="p1", arrays=(array.name,), electrodes=tuple(electrodes)
    )


def _rates(rng, n_bins: int, n: int, p_bad: float) -> np.ndarray:
    rates = rng.gamma(1.0, float(10 ** rng.uniform(0, 3)), (n_bins, n)).astype(np.float32)
    rates[rng.random(rates.shape) < 0.3] = 0.0
    rates[rng.random(rates.shape) < 0.05] = np.float32(-0.0)
    rates[::5] = np.float32(1e4)  # saturated rows: equal drives (ties), caps bind
    for value in (np.nan, np.inf, -np.inf, -1.0):
        hit = rng.random(rates.shape) < p_bad / 4
        rates[hit] = value
    return rates


limits_st = st.fixed_dictionaries(
    {
        "max_total_current_ua": st.sampled_from([1600.0, 700.0, 300.0, 60.0]),
        "max_active_electrodes": st.sampled_from([16, 5, 1, 0]),
        "max_charge_per_phase_nc": st.sampled_from([20.0, 5.0]),
    }
)
mapping_st = st.fixed_dictionaries(
    {
        "sampling": st.sampled_from(["gaussian", "nearest"]),
        "sigma_deg": st.sampled_from([0.5, 0.2, 1.5]),
        "min_drive": st.sampled_from([0.1, 0.0, 0.5]),
        "rate_max_hz": st.sampled_from([100.0, 37.5]),
    }
)


def _assert_served_equal(kernel_fields, want, b, row=0, n=None):
    for name, ref in zip(FIELDS, want, strict=True):
        got = kernel_fields[name][row, :n] if n is not None else kernel_fields[name][row]
        assert got.dtype == ref.dtype, name
        np.testing.assert_array_equal(got, ref[b], err_msg=name)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    limits=limits_st,
    mapping=mapping_st,
    calibrated=st.sampled_from([False, True, "tiny"]),
    disabled=st.sampled_from([(), ("utah96-01", "utah96-40")]),
    n_entries=st.sampled_from([64, 2048, 3000]),
    p_bad=st.sampled_from([0.0, 0.0, 0.002]),
    seed=st.integers(0, 2**32 - 1),
)
def test_single_array_kernel_equals_the_general_path(
    limits, mapping, calibrated, disabled, n_entries, p_bad, seed
):
    rng = np.random.default_rng(seed)
    lim = SafetyLimits(**limits, disabled_electrodes=frozenset(disabled))
    cal = _calibration(UTAH, rng, calibrated == "tiny") if calibrated else None
    pipe = StimulationPipeline(UTAH, cal, lim, MappingConfig(**mapping))
    centre = pipe.model.phosphene_deg.mean(axis=0)
    pos = (centre + rng.normal(0, rng.uniform(0.5, 6.0), (n_entries, 2))).astype(np.float32)
    pol = rng.integers(-1, 2, n_entries).astype(np.int8)
    rates = _rates(rng, 24, n_entries, p_bad)
    field = RateField(rates[0], pos, pol)
    kernel = pipe.kernel_for(field)
    (a, pw, gap, rate, pulses), events = pipe._reference(
        pipe.currents(rates.astype(np.float64), field)
    )
    want = (a, pw, gap, rate, pulses)
    for b in range(rates.shape[0]):
        if kernel.run(rates[b]):
            assert events[b] == [], events[b]
            got = {name: getattr(kernel, name) for name in FIELDS}
            _assert_served_equal(got, want, b)
            frame = pipe.process(RateField(rates[b], pos, pol, timestamp_ns=b + 1))
            assert check_frame(frame, lim, UTAH) == []
        else:
            bad = ~np.isfinite(rates[b]) | (rates[b] < 0)
            assert events[b] or bad.any() or not kernel.eligible, b


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    limits=limits_st,
    mapping=mapping_st,
    p_bad=st.sampled_from([0.0, 0.001]),
    seed=st.integers(0, 2**32 - 1),
)
@pytest.mark.slow
def test_implant_kernel_equals_each_arrays_general_path(limits, mapping, p_bad, seed):
    rng = np.random.default_rng(seed)
    imp = type(IMPLANT)(
        IMPLANT.name,
        IMPLANT.arrays,
        ImplantLimits(max_active_electrodes=4096, max_total_current_ua=1e6),
    )
    lim = SafetyLimits(**limits)
    cfg = MappingConfig(**mapping)
    cals = {a.label: _calibration(a.array, rng, False) for a in imp.arrays[1::4]}
    pipe = ImplantPipeline(imp, lim, cfg, calibrations=cals)
    ref = [StimulationPipeline(a.array, cals.get(a.label), lim, cfg) for a in imp.arrays]
    ph = np.concatenate([p.model.phosphene_deg for p in ref])
    n = 4096
    pos = (ph[rng.integers(0, len(ph), n)] + rng.normal(0, 0.7, (n, 2))).astype(np.float32)
    pol = rng.integers(-1, 2, n).astype(np.int8)
    rates = _rates(rng, 12, n, p_bad)
    field = RateField(rates[0], pos, pol)
    kernel = pipe.kernel_for(field)
    want = [r._reference(r.currents(rates.astype(np.float64), field)) for r in ref]
    for b in range(rates.shape[0]):
        if kernel.run(rates[b]):
            got = {name: getattr(kernel, name) for name in FIELDS}
            for row, (fields, events) in enumerate(want):
                assert events[b] == [], (row, events[b])
                _assert_served_equal(got, fields, b, row, ref[row].array.n)
        else:
            bad = ~np.isfinite(rates[b]) | (rates[b] < 0)
            assert any(ev[b] for _, ev in want) or bad.any() or not kernel.eligible, b


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    max_active=st.sampled_from([64, 20, 1]),
    max_total=st.sampled_from([6400.0, 900.0]),
    seed=st.integers(0, 2**32 - 1),
)
@pytest.mark.slow
def test_implant_caps_on_served_bins_equal_the_general_implant_path(max_active, max_total, seed):
    """With binding implant-wide caps, a bin the fused kernel serves (then
    `ImplantPipeline._limit_served`) gives the same frames and implant events as the same bin
    through every array's own pipeline and the general `_limit_implant`."""
    rng = np.random.default_rng(seed)
    imp = type(IMPLANT)(
        IMPLANT.name,
        IMPLANT.arrays,
        ImplantLimits(max_active_electrodes=max_active, max_total_current_ua=max_total),
    )
    lim = SafetyLimits()
    fast = ImplantPipeline(imp, lim)
    slow = ImplantPipeline(imp, lim)
    ph = np.concatenate([p.model.phosphene_deg for p in fast.pipelines.values()])
    n = 4096
    pos = (ph[rng.integers(0, len(ph), n)] + rng.normal(0, 0.7, (n, 2))).astype(np.float32)
    pol = rng.integers(-1, 2, n).astype(np.int8)
    rates = _rates(rng, 10, n, 0.0)
    field = RateField(rates[0], pos, pol)
    slow.kernel_for(field).eligible = False  # every bin array by array, then _limit_implant
    served = 0
    for b in range(rates.shape[0]):
        f = RateField(rates[b], pos, pol, timestamp_ns=b + 1)
        before = fast.kernel_bins
        got = fast.process(f)
        want = slow.process(f)
        served += fast.kernel_bins - before
        assert [e.kind for e in fast.last_events] == [e.kind for e in slow.last_events]
        for g, w in zip(got, want, strict=True):
            for name in FIELDS:
                np.testing.assert_array_equal(getattr(g, name), getattr(w, name), err_msg=name)
    assert served > 0 and slow.kernel_bins == 0
    assert sum(fast.events.values()) > 0  # the implant caps did bind
