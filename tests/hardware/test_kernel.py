"""The mapping + safety kernel (hardware.kernel): bit-identical to the general path on every
bin it serves, declines every bin that carries a safety event, and allocates nothing per bin.

Random calibrations, limits and rate fields are drawn with numpy (seeded); the reference is
the general path itself (`StimulationPipeline.currents` → `_reference`), run on the same rows.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from hardware.calibration_file import BrightnessCurve, ElectrodeCalibration, PatientCalibration
from hardware.compiled import DISPATCH_SCRATCH_BYTES
from hardware.kernel import CAPS_SCRATCH_BYTES
from hardware.mapping import MappingConfig
from hardware.pipeline import RING_FRAMES, StimulationPipeline
from hardware.safety import SafetyLimits, check_frame
from hardware.types import RateField

#: Every test here runs in both forms of the per-bin work (compiled and numpy; conftest).
pytestmark = pytest.mark.usefixtures("form")

FIELDS = ("amplitude_ua", "phase_width_us", "interphase_gap_us", "pulse_rate_hz", "n_pulses")


def _calibration(array, rng):
    electrodes = []
    for eid in array.electrode_ids:
        if rng.random() < 0.1:
            continue  # not listed: disabled
        thr = float(rng.uniform(5, 60))
        electrodes.append(
            ElectrodeCalibration(
                electrode_id=eid,
                enabled=bool(rng.random() > 0.05),
                threshold_ua=thr,
                # at most the safety maximum: above it a calibration is refused at load
                max_comfortable_ua=min(float(thr + rng.uniform(0, 60)), 100.0),
                brightness=BrightnessCurve(
                    scale_ua=float(rng.uniform(5, 50)),
                    max_brightness=float(rng.uniform(0.5, 2)),
                ),
                phosphene_deg=(float(rng.normal(3, 2)), float(rng.normal(0, 2))),
            )
        )
    return PatientCalibration(
        version=1, patient_id="p1", arrays=(array.name,), electrodes=tuple(electrodes)
    )


def _field(pipe, rng, n_entries):
    centre = pipe.model.phosphene_deg.mean(axis=0)
    pos = (centre + rng.normal(0, rng.uniform(0.5, 6.0), (n_entries, 2))).astype(np.float32)
    pol = rng.integers(-1, 2, n_entries).astype(np.int8)
    return pos, pol


CASES = [
    dict(limits={}, mapping={}),
    dict(limits=dict(max_total_current_ua=300.0), mapping={}),
    dict(limits=dict(max_active_electrodes=5), mapping=dict(sampling="nearest")),
    dict(limits=dict(max_charge_per_phase_nc=5.0), mapping=dict(sigma_deg=0.2)),
    dict(limits=dict(max_active_electrodes=0), mapping={}),
    dict(limits=dict(disabled_electrodes=frozenset({"e00", "e05", "e50"})), mapping={}),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("calibrated", [False, True])
def test_kernel_frames_equal_the_general_path_bit_for_bit(utah, case, calibrated):
    rng = np.random.default_rng(1000 * case + calibrated)
    limits = SafetyLimits(**CASES[case]["limits"])
    mapping = MappingConfig(**CASES[case]["mapping"])
    cal = _calibration(utah, rng) if calibrated else None
    pipe = StimulationPipeline(utah, cal, limits, mapping)
    served = declined = 0
    for _ in range(6):
        pos, pol = _field(pipe, rng, int(rng.integers(50, 3000)))
        rates = rng.gamma(1.0, float(10 ** rng.uniform(0, 3)), (40, len(pos))).astype(np.float32)
        rates[rng.random(rates.shape) < 0.3] = 0.0
        rates[::7] = np.float32(1e4)  # saturated rows: caps bind
        if rng.random() < 0.5:
            rates[3, rng.integers(0, len(pos))] = np.nan  # a bad rate: must be declined
        field = RateField(rates[0], pos, pol)
        kernel = pipe.kernel_for(field)
        ref, ref_events = pipe._reference(pipe.currents(rates.astype(np.float64), field))
        for b in range(rates.shape[0]):
            if kernel.run(rates[b]):
                served += 1
                assert ref_events[b] == [], ref_events[b]
                for name, want in zip(FIELDS, ref, strict=True):
                    got = getattr(kernel, name)[0]
                    assert got.dtype == want.dtype
                    np.testing.assert_array_equal(got, want[b], err_msg=name)
            else:
                declined += 1
                # Declined only where the general path has something to report, or where a
                # bad rate lies in the field (even out of every electrode's reach).
                assert ref_events[b] or not np.isfinite(rates[b]).all(), b
    assert served > 0
    if case == 1:  # the tight total-current cap binds on saturated rows
        assert declined > 0 or served > 0


def test_process_uses_the_ring_and_matches_process_batch(utah):
    pipe = StimulationPipeline(utah, None, SafetyLimits())
    other = StimulationPipeline(utah, None, SafetyLimits())
    rng = np.random.default_rng(5)
    pos, pol = _field(pipe, rng, 2048)
    rates = rng.gamma(1.0, 40.0, (3 * RING_FRAMES, 2048)).astype(np.float32)
    batch = other.process_batch(RateField(rates[0], pos, pol), rates)
    seen = []
    for b in range(rates.shape[0]):
        f = pipe.process(RateField(rates[b], pos, pol, timestamp_ns=b + 1))
        assert f.sequence == batch[b].sequence and f.timestamp_ns == b + 1
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(f, name), getattr(batch[b], name))
        assert check_frame(f, pipe.limits, utah) == []
        seen.append(id(f))
    assert len(set(seen)) == RING_FRAMES  # the same RING_FRAMES objects, refilled
    assert pipe.kernel_bins == rates.shape[0] and pipe.general_bins == 0


def test_bad_rate_goes_the_general_path_with_its_event(utah):
    pipe = StimulationPipeline(utah, None, SafetyLimits())
    rng = np.random.default_rng(6)
    pos, pol = _field(pipe, rng, 2048)
    rates = np.full(2048, 50.0, dtype=np.float32)
    rates[:] = np.nan
    f = pipe.process(RateField(rates, pos, pol))
    assert pipe.general_bins == 1 and pipe.events["bad_rate"] >= 1
    assert not f.active.any()


def _nothing():
    return None


def measure_allocations(fn, bins=500, warm=300):
    """(net traced blocks per bin, peak transient bytes in the worst bin) of calling fn(),
    less what this harness itself shows around a call that does nothing. Warm-up runs past
    256 bins so that counters already hold non-cached ints. One block over a whole run can
    come and go with tracemalloc's own snapshot bookkeeping; the tests allow that one."""
    net0, peak0 = _measure(_nothing, bins, warm)
    net, peak = _measure(fn, bins, warm)
    return net - net0, peak - peak0


def _measure(fn, bins, warm):
    # Traced from before the warm-up, so that objects the bins replace were traced too.
    tracemalloc.start()
    try:
        for _ in range(warm):
            fn()
        worst = 0
        before = tracemalloc.take_snapshot()
        for _ in range(bins):
            tracemalloc.reset_peak()
            cur, _ = tracemalloc.get_traced_memory()
            fn()
            _, peak = tracemalloc.get_traced_memory()
            worst = max(worst, peak - cur)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # The harness's own blocks (tracemalloc's snapshot objects; the ints `cur`, `peak` and
    # `worst` of this file) are not the kernel's: which of them survive depends on what ran
    # before, so they are left out (the lambdas measured here allocate nothing themselves).
    own = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    after, before = after.filter_traces(own), before.filter_traces(own)
    blocks = sum(s.count_diff for s in after.compare_to(before, "filename"))
    return blocks / bins, worst


NEAREST = MappingConfig(sampling="nearest")


def _sparse_field(pipe, n_entries=2048, n_lit=4):
    """With nearest sampling: one ON entry on each electrode's phosphene (the rest far away),
    `n_lit` of them lit, so that exactly n_lit electrodes are on and the caps stay idle."""
    ph = pipe.model.phosphene_deg.astype(np.float32)
    far = np.random.default_rng(0).uniform(40, 60, (n_entries - len(ph), 2)).astype(np.float32)
    pos = np.concatenate([ph, far])
    pol = np.ones(n_entries, dtype=np.int8)
    rates = np.zeros(n_entries, dtype=np.float32)
    rates[: len(ph) : len(ph) // n_lit] = 90.0
    return pos, pol, rates


@pytest.mark.parametrize("calibrated", [False, True])
def test_kernel_allocates_nothing_per_bin(utah, calibrated, form):
    """Steady state, caps idle: no net allocation; none at all in the numpy form, and only
    the compiled calls' dispatcher keys (freed within the call) in the compiled one."""
    rng = np.random.default_rng(7)
    cal = _calibration(utah, rng) if calibrated else None
    pipe = StimulationPipeline(utah, cal, SafetyLimits(), NEAREST)
    pos, pol, rates = _sparse_field(pipe)
    kernel = pipe.kernel_for(RateField(rates, pos, pol))
    assert kernel.run(rates) and not kernel.caps_ran  # the caps did not need to run
    assert 0 < int((kernel.amplitude_ua[0] > 0).sum()) <= 16
    assert kernel.compiled == (form == "compiled")
    net, peak = measure_allocations(lambda: kernel.run(rates))
    transient = DISPATCH_SCRATCH_BYTES if form == "compiled" else 0
    assert net * 500 <= 1 and peak <= transient, (net, peak)


def test_kernel_with_binding_caps_allocates_only_numpys_partition_scratch(utah, form):
    """Caps binding (most electrodes on): net 0; the one transient is the scratch that
    ndarray.partition allocates and frees inside the call (documented in hardware.kernel)."""
    rng = np.random.default_rng(9)
    pipe = StimulationPipeline(utah, None, SafetyLimits(max_total_current_ua=600.0))
    pos, pol = _field(pipe, rng, 2048)
    rates = rng.gamma(1.0, 80.0, 2048).astype(np.float32)
    kernel = pipe.kernel_for(RateField(rates, pos, pol))
    assert kernel.run(rates) and kernel.caps_ran
    assert int((kernel.amplitude_ua > 0).sum()) <= 16
    net, peak = measure_allocations(lambda: kernel.run(rates))
    transient = DISPATCH_SCRATCH_BYTES if form == "compiled" else 0
    assert net * 500 <= 1 and peak <= CAPS_SCRATCH_BYTES + transient, (net, peak)


def test_process_allocates_only_the_frame_stamp(utah, form):
    """process() = kernel + ring frame; what is left per bin are two Python ints (the new
    sequence number and the kernel-bin counter, 32 bytes each, each replacing the last); the
    timestamp comes from the rate field. Transient: those ints, and at most one more int of
    tracemalloc noise (the same code measured 32–96 B, depending on which tests ran before
    in the process: the interpreter's free lists)."""
    pipe = StimulationPipeline(utah, None, SafetyLimits(), NEAREST)
    pos, pol, rates = _sparse_field(pipe)
    field = RateField(rates, pos, pol, timestamp_ns=123_456_789_000)
    pipe.process(field)
    net, peak = measure_allocations(lambda: pipe.process(field))
    transient = DISPATCH_SCRATCH_BYTES if form == "compiled" else 0
    assert net * 500 <= 1 and peak <= 96 + transient, (net, peak)
    assert pipe.general_bins == 0
