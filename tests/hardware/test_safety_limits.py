"""Each safety limit on its own and in combination; NaN/inf/negative; refused configurations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hardware.safety import (
    HARDWARE_LIMITS,
    SafetyConfigError,
    SafetyEnforcer,
    SafetyLimits,
    check_frame,
)


def kinds(events):
    return {e.kind for e in events}


def enforce(limits, array, frame):
    out, events = SafetyEnforcer(limits, array).enforce(frame)
    assert check_frame(out, limits, array) == []
    return out, events


def test_safe_frame_passes_untouched(utah, make_frame):
    amp = np.zeros(utah.n)
    amp[:5] = [30, 40, 50, 60, 70]
    frame = make_frame(utah, amp=amp)
    out, events = enforce(SafetyLimits(), utah, frame)
    assert events == []
    np.testing.assert_array_equal(out.amplitude_ua, frame.amplitude_ua)
    act = frame.active
    for name in ("phase_width_us", "interphase_gap_us", "pulse_rate_hz", "n_pulses"):
        np.testing.assert_array_equal(getattr(out, name)[act], getattr(frame, name)[act])
        assert not getattr(out, name)[~act].any()  # inactive electrodes leave all-zero


def test_amplitude_cap_alone(utah, make_frame):
    lim = SafetyLimits(max_amplitude_ua=50.0)
    out, events = enforce(lim, utah, make_frame(utah, amp=np.r_[80.0, np.zeros(utah.n - 1)]))
    assert kinds(events) == {"amplitude_cap"}
    assert 49.99 < out.amplitude_ua[0] <= 50.0
    assert events[0].electrode_id == utah.electrode_ids[0] and events[0].value == 80.0


def test_charge_per_phase_cap_alone(utah, make_frame):
    # 10 nC at 200 µs → 50 µA; amplitude cap (100) and density (1000 µC/cm² → 20 nC) do not bind.
    lim = SafetyLimits(max_charge_per_phase_nc=10.0)
    out, events = enforce(
        lim, utah, make_frame(utah, amp=np.r_[90.0, np.zeros(utah.n - 1)], pw=200)
    )
    assert kinds(events) == {"charge_cap"}
    assert out.amplitude_ua[0] * out.phase_width_us[0] / 1000 <= 10.0
    assert out.amplitude_ua[0] > 49.99


def test_charge_density_cap_alone(utah, make_frame):
    # 200 µC/cm² on 2000 µm² → 4 nC → 23.5 µA at 170 µs (McCreery's figure).
    lim = SafetyLimits(max_charge_density_uc_cm2=200.0)
    out, events = enforce(lim, utah, make_frame(utah, amp=np.r_[60.0, np.zeros(utah.n - 1)]))
    assert kinds(events) == {"density_cap"}
    q_uc = out.amplitude_ua[0] * 170e-6
    assert q_uc / (2000e-8) <= 200.0
    assert out.amplitude_ua[0] == pytest.approx(4000 / 170, rel=1e-5)


def test_shannon_criterion_alone(utah, make_frame):
    # k = 1.0 on a 2000 µm² tip allows Q = √(10^k · A) = 14.1 nC; 95 µA × 170 µs = 16.2 nC is
    # below the charge (20 nC), density (1000 µC/cm²) and amplitude (100 µA) caps.
    lim = SafetyLimits(shannon_k=1.0)
    q_max_uc = np.sqrt(10**1.0 * 2000e-8)
    out, events = enforce(lim, utah, make_frame(utah, amp=np.r_[95.0, np.zeros(utah.n - 1)]))
    assert kinds(events) == {"shannon_cap"}
    q = out.amplitude_ua[0] * 170e-6
    assert q <= q_max_uc and q == pytest.approx(q_max_uc, rel=1e-5)
    d = q / 2000e-8
    assert np.log10(d) + np.log10(q) <= 1.0


def test_pulse_rate_range_alone(utah, make_frame):
    lim = SafetyLimits(min_pulse_rate_hz=50.0, max_pulse_rate_hz=400.0)
    rate = np.full(utah.n, 300.0)
    rate[0], rate[1] = 900.0, 5.0
    amp = np.zeros(utah.n)
    amp[:2] = 40
    out, events = enforce(lim, utah, make_frame(utah, amp=amp, rate=rate))
    assert kinds(events) == {"pulse_rate_high", "pulse_rate_low"}
    assert out.pulse_rate_hz[0] <= 400.0 and out.pulse_rate_hz[1] >= 50.0
    assert out.amplitude_ua[0] == 40 and out.amplitude_ua[1] == 40


def test_charge_balance_period(utah, make_frame):
    # 2 × 300 µs phases + 600 µs gap = 1200 µs > the 1000 µs period at 1 kHz: the anodic
    # phase would be cut short, so the rate is lowered until both phases fit (≤ 833 Hz).
    lim = SafetyLimits(max_pulse_rate_hz=1000.0, max_interphase_gap_us=1000.0)
    amp = np.r_[30.0, np.zeros(utah.n - 1)]
    out, events = enforce(lim, utah, make_frame(utah, amp=amp, pw=300, gap=600, rate=1000))
    assert kinds(events) == {"charge_balance_period"}
    assert 2 * 300 + 600 <= 1e6 / out.pulse_rate_hz[0]
    assert out.pulse_rate_hz[0] > 833.0 and out.amplitude_ua[0] == 30
    # If even the minimum rate cannot fit both phases, the electrode is zeroed.
    lim = SafetyLimits(
        max_pulse_rate_hz=1000.0, min_pulse_rate_hz=900.0, max_interphase_gap_us=1000.0
    )
    out, events = enforce(lim, utah, make_frame(utah, amp=amp, pw=300, gap=600, rate=1000))
    assert "charge_balance_period" in kinds(events) and not out.active.any()


def test_phase_width_and_gap_caps(utah, make_frame):
    lim = SafetyLimits(max_phase_width_us=200.0, max_interphase_gap_us=60.0)
    amp = np.r_[30.0, np.zeros(utah.n - 1)]
    out, events = enforce(lim, utah, make_frame(utah, amp=amp, pw=250, gap=90))
    assert kinds(events) == {"phase_width_cap", "gap_cap"}
    assert out.phase_width_us[0] <= 200 and out.interphase_gap_us[0] <= 60


def test_pulses_per_frame_cap(utah, make_frame):
    amp = np.r_[30.0, np.zeros(utah.n - 1)]
    out, events = enforce(
        SafetyLimits(max_pulses_per_frame=5), utah, make_frame(utah, amp=amp, pulses=40)
    )
    assert kinds(events) == {"pulses_cap"} and out.n_pulses[0] == 5


def test_active_electrode_cap_keeps_strongest(utah, make_frame):
    amp = np.linspace(10, 60, utah.n)
    out, events = enforce(SafetyLimits(max_active_electrodes=4), utah, make_frame(utah, amp=amp))
    assert kinds(events) == {"active_cap"}
    assert out.active.sum() == 4
    assert set(np.nonzero(out.active)[0]) == set(range(utah.n - 4, utah.n))


def test_total_current_cap_scales(utah, make_frame):
    amp = np.zeros(utah.n)
    amp[:10] = 50.0
    out, events = enforce(SafetyLimits(max_total_current_ua=200.0), utah, make_frame(utah, amp=amp))
    assert kinds(events) == {"total_current_cap"}
    assert out.amplitude_ua.astype(np.float64).sum() <= 200.0
    np.testing.assert_allclose(out.amplitude_ua[:10], 20.0, rtol=1e-5)


@pytest.mark.parametrize("cap", [4.43e-42, 1e-30, 1e-6, 5e-3])
def test_tiny_total_current_cap_never_rounds_above_it(utah, make_frame, cap):
    """A near-zero cap scales currents below what float32 resolves; they must become zero,
    not denormals whose rounding pushes the sum over the cap (found by the property test)."""
    amp = np.zeros(utah.n)
    amp[:2] = 100.0
    out, events = enforce(SafetyLimits(max_total_current_ua=cap), utah, make_frame(utah, amp=amp))
    assert "total_current_cap" in kinds(events)
    assert out.amplitude_ua.astype(np.float64).sum() <= cap


def test_disabled_electrodes_never_stimulate(utah, make_frame):
    lim = SafetyLimits(disabled_electrodes=frozenset({utah.electrode_ids[3]}))
    amp = np.full(utah.n, 0.0)
    amp[3] = amp[4] = 40
    out, events = enforce(lim, utah, make_frame(utah, amp=amp))
    assert kinds(events) == {"disabled"}
    assert out.amplitude_ua[3] == 0 and out.amplitude_ua[4] == 40
    out2, _ = SafetyEnforcer(SafetyLimits(), utah, disabled=[utah.electrode_ids[4]]).enforce(
        make_frame(utah, amp=amp)
    )
    assert out2.amplitude_ua[4] == 0 and out2.amplitude_ua[3] == 40


def test_limits_in_combination(utah, make_frame):
    lim = SafetyLimits(
        max_amplitude_ua=60,
        max_charge_per_phase_nc=8,
        max_phase_width_us=150,
        max_active_electrodes=3,
        max_total_current_ua=120,
        max_pulse_rate_hz=350,
    )
    amp = np.zeros(utah.n)
    amp[:6] = [99, 80, 70, 65, 20, 10]
    out, events = enforce(lim, utah, make_frame(utah, amp=amp, pw=200, rate=600))
    got = kinds(events)
    assert {
        "phase_width_cap",
        "pulse_rate_high",
        "charge_cap",
        "active_cap",
        "total_current_cap",
    } <= got
    assert out.active.sum() == 3
    assert out.amplitude_ua.astype(np.float64).sum() <= 120
    assert np.all(out.amplitude_ua * out.phase_width_us / 1000 <= 8)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -5.0])
@pytest.mark.parametrize("field", ["amp", "pw", "gap", "rate"])
def test_nonfinite_and_negative_zero_only_that_electrode(utah, make_frame, bad, field):
    values = {"amp": np.full(utah.n, 30.0), "pw": 170.0, "gap": 50.0, "rate": 300.0}
    arr = np.full(utah.n, values[field] if field != "amp" else 30.0)
    arr[7] = bad
    values[field] = arr
    out, events = enforce(SafetyLimits(max_active_electrodes=16), utah, make_frame(utah, **values))
    assert out.amplitude_ua[7] == 0 and not out.active[7]
    expected = "negative" if bad == -5.0 else "nonfinite"
    assert any(e.kind == expected and e.electrode_id == utah.electrode_ids[7] for e in events)
    assert out.active.sum() == 16  # the others still stimulate (cap of 16)


def test_nonfinite_pulses_and_array_mismatch(utah, orion, make_frame):
    out, events = enforce(SafetyLimits(), utah, make_frame(utah, amp=30.0, pulses=0))
    assert not out.active.any() and events == []
    out, events = SafetyEnforcer(SafetyLimits(), utah).enforce(make_frame(orion, amp=30.0))
    assert kinds(events) == {"array_mismatch"}
    assert out.electrode_ids == utah.electrode_ids and not out.active.any()


def test_events_are_counted(utah, make_frame):
    enf = SafetyEnforcer(SafetyLimits(max_amplitude_ua=20), utah)
    for _ in range(3):
        enf.enforce(make_frame(utah, amp=np.r_[30.0, 30.0, np.zeros(utah.n - 2)]))
    assert enf.counts["amplitude_cap"] == 6


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_amplitude_ua", 150.0, "hardware's absolute limit 100.0"),
        ("max_phase_width_us", 400.0, "absolute limit 300.0"),
        ("max_charge_per_phase_nc", 31.0, "absolute limit 30.0"),
        ("max_active_electrodes", 17, "absolute limit 16"),
        ("shannon_k", 2.0, "absolute limit 1.85"),
        ("max_pulse_rate_hz", 5000.0, "absolute limit 1000.0"),
        ("max_amplitude_ua", float("nan"), "finite"),
        ("max_amplitude_ua", -1.0, "greater than 0"),
        ("min_pulse_rate_hz", 600.0, "above max_pulse_rate_hz"),
    ],
)
def test_refused_configurations_name_the_reason(field, value, words):
    with pytest.raises(SafetyConfigError) as exc:
        SafetyLimits.create(**{field: value})
    assert field in str(exc.value) or "min_pulse_rate_hz" in str(exc.value)
    assert words in str(exc.value)


def test_stricter_shannon_allowed_and_limits_file(tmp_path):
    assert SafetyLimits.create(shannon_k=1.5).shannon_k == 1.5
    p = tmp_path / "limits.json"
    p.write_text(json.dumps({"max_amplitude_ua": 120}))
    with pytest.raises(
        SafetyConfigError, match=r"limits.json: refused: .*max_amplitude_ua = 120.0 µA is beyond"
    ):
        SafetyLimits.load(p)
    p.write_text(json.dumps({"max_amplitude_ua": 80, "surprise": 1}))
    with pytest.raises(SafetyConfigError, match="surprise"):
        SafetyLimits.load(p)
    assert HARDWARE_LIMITS.max_active_electrodes == 16


def test_charge_ceiling_matches_enforcer(utah, make_frame):
    lim = SafetyLimits(max_charge_density_uc_cm2=300)
    ceiling = lim.charge_ceiling_ua(np.full(utah.n, 170.0), utah.area_um2)
    out, _ = enforce(lim, utah, make_frame(utah, amp=np.r_[100.0, np.zeros(utah.n - 1)]))
    assert out.amplitude_ua[0] == pytest.approx(ceiling[0], rel=1e-5)
