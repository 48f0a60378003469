"""Property tests: ≥ 100,000 random and adversarial rate fields, calibrations and limits thrown
at the whole chain (mapping → safety); no frame that leaves it may break any limit.

Each hypothesis example draws limits, an array, optionally a calibration and a mapping, and a
seed for a batch of 100 rate fields (numpy arrays with NaN, ±inf, negative, huge, tiny and
denormal values injected at drawn rates), plus 40 raw adversarial frames for the enforcer
alone. 1,000 examples → 100,000 rate fields (set NPE_PROP_EXAMPLES for a longer soak). Every output is verified by `violations`, a
vectorised oracle written independently of the enforcer, and a sample by `check_frame`.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware.arrays import load_array
from hardware.calibration_file import (
    BrightnessCurve,
    CalibrationError,
    ElectrodeCalibration,
    PatientCalibration,
)
from hardware.mapping import MappingConfig
from hardware.pipeline import PipelineConfigError, StimulationPipeline
from hardware.safety import SafetyEnforcer, SafetyLimits, check_frame
from hardware.types import RateField, StimulationFrame

ARRAYS = {name: load_array(name) for name in ("utah96", "orion60")}
BATCH = 100
RAW_BATCH = 40
EXAMPLES = int(__import__("os").environ.get("NPE_PROP_EXAMPLES", "1000"))
COUNT = {"fields": 0, "frames_checked": 0, "raw_frames": 0}


def violations(amp, pw, gap, rate, pulses, area_um2, limits, disabled):
    """[B] number of limit violations per frame ([B, n] float32/uint16 inputs). Independent oracle."""
    a = amp.astype(np.float64)
    t = pw.astype(np.float64)
    g = gap.astype(np.float64)
    r = rate.astype(np.float64)
    stack = np.stack([a, t, g, r])
    bad_vals = ~np.all(np.isfinite(stack), axis=0) | np.any(stack < 0, axis=0)
    act = (a > 0) & (pulses > 0)
    q = a * t * 1e-6  # µC
    area = area_um2[None, :] * 1e-8
    with np.errstate(divide="ignore", invalid="ignore"):
        d = q / area
        shannon = np.log10(d) + np.log10(q)
        period = np.where(r > 0, 1e6 / r, -np.inf)
    per_el = act & (
        (a > limits.max_amplitude_ua)
        | (t <= 0)
        | (t > limits.max_phase_width_us)
        | (g > limits.max_interphase_gap_us)
        | (r < limits.min_pulse_rate_hz)
        | (r > limits.max_pulse_rate_hz)
        | (2 * t + g > period)
        | (pulses > limits.max_pulses_per_frame)
        | (q * 1e3 > limits.max_charge_per_phase_nc)
        | (d > limits.max_charge_density_uc_cm2)
        | (shannon > limits.shannon_k)
        | disabled[None, :]
    )
    n = (per_el | bad_vals).sum(axis=1)
    n += act.sum(axis=1) > limits.max_active_electrodes
    n += np.where(act, a, 0.0).sum(axis=1) > limits.max_total_current_ua
    return n


def _frame(array, a, t, g, r, n, i):
    return StimulationFrame(0, 0, array.electrode_ids, a[i], t[i], g[i], r[i], n[i])


@st.composite
def limits_st(draw):
    def f(lo, hi):
        return draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))

    lo_rate = f(0.01, 1000.0)
    return SafetyLimits(
        max_amplitude_ua=draw(st.sampled_from([100.0, 1e-3]))
        if draw(st.booleans())
        else f(1e-3, 100.0),
        max_phase_width_us=f(1.0, 300.0),
        max_interphase_gap_us=f(0.0, 1000.0),
        max_charge_per_phase_nc=f(1e-4, 30.0),
        max_charge_density_uc_cm2=f(1e-2, 1e5),
        shannon_k=f(-4.0, 1.85),
        min_pulse_rate_hz=lo_rate,
        max_pulse_rate_hz=f(lo_rate, 1000.0),
        max_pulses_per_frame=draw(st.integers(1, 1000)),
        max_active_electrodes=draw(st.integers(0, 16)),
        max_total_current_ua=f(0.0, 2000.0),
    )


@st.composite
def calibration_st(draw, array):
    if draw(st.booleans()):
        return None
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    electrodes = []
    for eid in array.electrode_ids:
        if rng.random() < 0.1:
            continue  # not calibrated → disabled
        thr = float(rng.uniform(0.5, 199.0))
        electrodes.append(
            ElectrodeCalibration(
                electrode_id=eid,
                enabled=bool(rng.random() < 0.85),
                threshold_ua=thr,
                max_comfortable_ua=float(rng.uniform(thr, 200.0)),
                brightness=BrightnessCurve(
                    scale_ua=float(rng.uniform(0.01, 200.0)),
                    max_brightness=float(rng.uniform(0.01, 10.0)),
                ),
                phosphene_deg=(float(rng.uniform(-30, 30)), float(rng.uniform(-30, 30))),
            )
        )
    return PatientCalibration(
        version=1, patient_id="prop", arrays=(array.name,), electrodes=tuple(electrodes)
    )


@st.composite
def mapping_st(draw, limits):
    """(as drawn: often inconsistent with the limits, consistent version of it)."""
    pw = draw(st.floats(0.5, 1000.0))
    gap = draw(st.floats(0.0, 1000.0))
    rate = draw(st.floats(0.1, 3000.0))
    frame_ms = draw(st.floats(1e-3, 50.0))
    common = {
        "sampling": draw(st.sampled_from(["gaussian", "nearest"])),
        "sigma_deg": draw(st.floats(0.01, 5.0)),
        "max_distance_deg": draw(st.floats(0.01, 50.0)),
        "rate_max_hz": draw(st.floats(1e-3, 1e4)),
        "min_drive": draw(st.floats(0.0, 0.99)),
    }
    drawn = MappingConfig(
        phase_width_us=pw,
        interphase_gap_us=gap,
        pulse_rate_hz=rate,
        frame_duration_ms=frame_ms,
        **common,
    )
    pw = min(pw, limits.max_phase_width_us)
    gap = min(gap, limits.max_interphase_gap_us)
    top = min(limits.max_pulse_rate_hz, 1e6 / (2 * pw + gap))
    if top < limits.min_pulse_rate_hz:
        pw, gap = 0.5, 0.0
        top = min(limits.max_pulse_rate_hz, 1e6 / (2 * pw + gap))
    rate = min(max(rate, limits.min_pulse_rate_hz), top)
    frame_ms = min(frame_ms, 1000.0 * (limits.max_pulses_per_frame + 0.49) / rate)
    consistent = MappingConfig(
        phase_width_us=pw,
        interphase_gap_us=gap,
        pulse_rate_hz=rate,
        frame_duration_ms=frame_ms,
        **common,
    )
    return drawn, consistent


def adversarial(rng, shape, scale):
    """Random values with a drawn share of NaN, ±inf, negatives, huge, tiny and denormals."""
    x = rng.gamma(1.0, scale, size=shape)
    p = rng.choice([0.0, 0.001, 0.05, 0.5, 1.0])
    if p > 0:
        m = rng.random(shape) < p
        specials = np.array([np.nan, np.inf, -np.inf, -1.0, -1e30, 1e38, 1e-45, 0.0, 3e38])
        x[m] = rng.choice(specials, size=int(m.sum()))
    if rng.random() < 0.05:
        x[:] = rng.choice([0.0, 1e38, np.nan, -5.0])
    return x.astype(np.float32)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def _chain_never_breaks_limits(data):
    array = ARRAYS[data.draw(st.sampled_from(sorted(ARRAYS)))]
    limits = data.draw(limits_st())
    calibration = data.draw(calibration_st(array))
    drawn_mapping, mapping = data.draw(mapping_st(limits))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    area = array.area_um2

    # 1. The enforcer alone on raw adversarial frames.
    enforcer = SafetyEnforcer(limits, array)
    raw = [adversarial(rng, (RAW_BATCH, array.n), s) for s in (60.0, 200.0, 100.0, 400.0)]
    pulses = adversarial(rng, (RAW_BATCH, array.n), 5.0)
    (a, t, g, r, n), _ = enforcer.enforce_arrays(*raw, pulses)
    bad = violations(a, t, g, r, n, area, limits, np.zeros(array.n, bool))
    assert not bad.any(), (
        limits,
        [
            check_frame(_frame(array, a, t, g, r, n, i), limits, array)
            for i in np.nonzero(bad)[0][:2]
        ],
    )
    COUNT["raw_frames"] += RAW_BATCH

    # 2. The whole chain on rate fields. A calibration above the safety maximum is refused
    # when it meets the limits (issue 16); the chain then runs on it clipped to the maximum.
    if calibration is not None:
        top = limits.max_amplitude_ua
        if any(e.max_comfortable_ua > top for e in calibration.electrodes):
            with pytest.raises(CalibrationError, match="above the safety maximum"):
                StimulationPipeline(array, calibration, limits, mapping)
        clipped = tuple(
            e.model_copy(
                update={
                    "threshold_ua": min(e.threshold_ua, top),
                    "max_comfortable_ua": min(e.max_comfortable_ua, top),
                }
            )
            for e in calibration.electrodes
        )
        calibration = calibration.model_copy(update={"electrodes": clipped})
    try:
        StimulationPipeline(array, calibration, limits, drawn_mapping)
    except PipelineConfigError as exc:  # a mapping the limits would clamp: refused at start
        assert "refused by the safety limits" in str(exc)
    pipe = StimulationPipeline(array, calibration, limits, mapping)
    n_entries = int(rng.integers(1, 400))
    centre = pipe.model.phosphene_deg.mean(axis=0)
    positions = (centre + rng.normal(0, rng.uniform(0.1, 20.0), (n_entries, 2))).astype(np.float32)
    polarity = rng.integers(-1, 2, n_entries).astype(np.int8)
    rates = adversarial(rng, (BATCH, n_entries), float(10 ** rng.uniform(-2, 4)))
    field = RateField(rates[0], positions, polarity)
    frames = pipe.process_batch(field, rates)
    frames[0] = pipe.process(field)
    assert len(frames) == BATCH
    stack = [
        np.stack([getattr(f, k) for f in frames])
        for k in (
            "amplitude_ua",
            "phase_width_us",
            "interphase_gap_us",
            "pulse_rate_hz",
            "n_pulses",
        )
    ]
    disabled = ~pipe.model.enabled
    bad = violations(*stack, area, limits, disabled)
    assert not bad.any(), [check_frame(frames[i], limits, array) for i in np.nonzero(bad)[0][:2]]
    for f in frames[:2]:
        assert (
            check_frame(
                f,
                limits,
                array,
                [e for e, d in zip(array.electrode_ids, disabled, strict=True) if d],
            )
            == []
        )
    assert all(f.electrode_ids == array.electrode_ids for f in frames)
    COUNT["fields"] += BATCH
    COUNT["frames_checked"] += len(frames)


def test_chain_never_breaks_limits_on_100k_fields():
    _chain_never_breaks_limits()
    assert COUNT["fields"] >= EXAMPLES * BATCH, COUNT  # 100,000 rate fields by default
    assert COUNT["raw_frames"] >= EXAMPLES * RAW_BATCH, COUNT
