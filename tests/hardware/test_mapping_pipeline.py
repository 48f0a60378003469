"""Arrays from their data files, and the rates → stimulation chain: sampling, the ON/OFF rule,
brightness curve, disabled electrodes, pulse defaults, zero frames and events."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hardware.arrays import ArrayError, list_arrays, load_array, parse_array
from hardware.audit import AuditLog, inspect_log
from hardware.calibration_file import (
    BrightnessCurve,
    CalibrationError,
    ElectrodeCalibration,
    PatientCalibration,
)
from hardware.mapping import MappingConfig
from hardware.pipeline import PipelineConfigError, StimulationPipeline
from hardware.safety import SafetyLimits, check_frame
from hardware.types import POLARITY_OFF, POLARITY_ON, RateField


def test_shipped_arrays_match_their_specification(utah, orion):
    assert {"utah96", "orion60"} <= set(list_arrays())
    assert utah.n == 96 and utah.shank_length_mm == 1.5 and utah.kind == "penetrating"
    grid = np.round(utah.positions_mm / 0.4 + 4.5).astype(int)
    assert set(map(tuple, grid)) == {(c, r) for r in range(10) for c in range(10)} - {
        (0, 0),
        (0, 9),
        (9, 0),
        (9, 9),
    }
    np.testing.assert_allclose(utah.positions_mm, (grid - 4.5) * 0.4, atol=1e-9)
    assert np.all(utah.area_um2 == 2000.0)
    assert orion.n == 60 and orion.kind == "surface" and orion.shank_length_mm == 0
    d = np.hypot(*(orion.positions_mm[:, None] - orion.positions_mm[None]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(d.min(axis=1), 4.2, atol=1e-3)  # hexagonal lattice, 4.2 mm
    assert np.sum(np.isclose(d, 4.2, atol=1e-3), axis=1).max() == 6
    np.testing.assert_allclose(orion.area_um2, np.pi * 1000**2, rtol=1e-6)


def test_array_files_are_validated(tmp_path):
    raw = json.loads(load_array("utah96").to_json())
    assert parse_array(raw).electrode_ids == load_array("utah96").electrode_ids
    bad = dict(raw, electrodes=[*raw["electrodes"], raw["electrodes"][0]])
    with pytest.raises(ArrayError, match="listed twice"):
        parse_array(bad)
    bad = json.loads(json.dumps(raw))
    bad["electrodes"][3]["area_um2"] = -1
    with pytest.raises(ArrayError, match=r"electrodes\.3\.area_um2"):
        parse_array(bad)
    with pytest.raises(ArrayError, match="unknown array 'utah97'"):
        load_array("utah97")
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(ArrayError, match="not valid JSON"):
        load_array(p)
    p.write_text(json.dumps(dict(raw, name="utah96-left")))
    assert load_array(p).name == "utah96-left"


def grid_field(centre, half=3.0, n=41, rates_on=None, rates_off=None):
    xs = np.linspace(centre[0] - half, centre[0] + half, n)
    ys = np.linspace(centre[1] - half, centre[1] + half, n)
    gx, gy = np.meshgrid(xs, ys)
    pos = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    m = len(pos)
    on = np.zeros(m) if rates_on is None else rates_on(pos)
    off = np.zeros(m) if rates_off is None else rates_off(pos)
    return RateField(
        rates_hz=np.concatenate([on, off]).astype(np.float32),
        positions_deg=np.concatenate([pos, pos]),
        polarity=np.r_[np.full(m, POLARITY_ON), np.full(m, POLARITY_OFF)].astype(np.int8),
    )


def test_pulse_defaults_and_brightness_curve(utah):
    pipe = StimulationPipeline(utah, None, SafetyLimits(max_active_electrodes=16))
    centre = pipe.model.phosphene_deg.mean(axis=0)
    frame = pipe.process(grid_field(centre, rates_on=lambda p: np.full(len(p), 100.0)))
    act = frame.active
    assert act.sum() == 16
    assert np.all(frame.phase_width_us[act] == 170) and np.all(frame.pulse_rate_hz[act] == 300)
    assert np.all(frame.n_pulses[act] == 3)  # 300 Hz × 10 ms bins
    assert np.allclose(frame.amplitude_ua[act], 90.0)  # full drive → max comfortable
    half = pipe.process(grid_field(centre, rates_on=lambda p: np.full(len(p), 50.0)))
    b = pipe.model.brightness(half.amplitude_ua.astype(np.float64))[half.active]
    top = pipe.model.brightness(np.full(utah.n, 90.0))[0]
    assert half.active.sum() == 16
    np.testing.assert_allclose(b, 0.5 * top, rtol=1e-4)  # current from the inverse curve
    quiet = pipe.process(grid_field(centre, rates_on=lambda p: np.full(len(p), 5.0)))
    assert not quiet.active.any()  # below min_drive: off
    assert [f.sequence for f in (frame, half, quiet)] == [1, 2, 3]
    assert not pipe.events  # nothing upstream was unsafe


def test_on_off_rule_takes_the_larger_drive(utah):
    pipe = StimulationPipeline(utah, None, SafetyLimits(), MappingConfig(sampling="nearest"))
    centre = pipe.model.phosphene_deg.mean(axis=0)
    on_only = pipe.process(grid_field(centre, rates_on=lambda p: np.full(len(p), 60.0)))
    off_only = pipe.process(grid_field(centre, rates_off=lambda p: np.full(len(p), 60.0)))
    both = pipe.process(
        grid_field(
            centre,
            rates_on=lambda p: np.full(len(p), 60.0),
            rates_off=lambda p: np.full(len(p), 30.0),
        )
    )
    np.testing.assert_array_equal(on_only.amplitude_ua, off_only.amplitude_ua)
    np.testing.assert_array_equal(both.amplitude_ua, on_only.amplitude_ua)  # max, not sum


def test_sampling_follows_the_rate_field_position(utah):
    lim = SafetyLimits(max_active_electrodes=16)
    pipe = StimulationPipeline(utah, None, lim, MappingConfig(sigma_deg=0.05))
    ph = pipe.model.phosphene_deg
    target = 17
    bump = lambda p: 100.0 * np.exp(-np.sum((p - ph[target]) ** 2, axis=1) / (2 * 0.03**2))  # noqa: E731
    frame = pipe.process(grid_field(ph.mean(axis=0), half=1.0, n=101, rates_on=bump))
    assert np.argmax(frame.amplitude_ua) == target
    # Electrodes whose phosphenes lie beyond the reach of the rate field get nothing.
    far = grid_field((30.0, 30.0), half=1.0, rates_on=lambda p: np.full(len(p), 100.0))
    assert not pipe.process(far).active.any()


def test_calibration_disables_and_shapes(utah):
    ids = utah.electrode_ids
    electrodes = [
        ElectrodeCalibration(
            electrode_id=ids[0],
            enabled=False,
            threshold_ua=30,
            max_comfortable_ua=60,
            phosphene_deg=(0.0, 0.0),
        ),
        ElectrodeCalibration(
            electrode_id=ids[1],
            threshold_ua=40,
            max_comfortable_ua=70,
            brightness=BrightnessCurve(scale_ua=10),
            phosphene_deg=(0.5, 0.0),
        ),
        ElectrodeCalibration(
            electrode_id=ids[2], threshold_ua=30, max_comfortable_ua=150, phosphene_deg=(-0.5, 0.0)
        ),
    ]
    cal = PatientCalibration(
        version=1, patient_id="p", arrays=("utah96",), electrodes=tuple(electrodes)
    )
    lim = SafetyLimits()
    # Behaviour changed (issue 16): a max comfortable current above the safety maximum is
    # refused when the calibration meets the limits, instead of capped at run time.
    with pytest.raises(CalibrationError, match=r"utah96-03 max_comfortable_ua 150\.0"):
        StimulationPipeline(utah, cal, lim)
    electrodes[2] = electrodes[2].model_copy(update={"max_comfortable_ua": 100.0})
    cal = cal.model_copy(update={"electrodes": tuple(electrodes)})
    pipe = StimulationPipeline(utah, cal, lim)
    frame = pipe.process(
        grid_field((0.0, 0.0), half=2.0, rates_on=lambda p: np.full(len(p), 100.0))
    )
    assert not frame.active[0]  # disabled in the calibration
    assert frame.amplitude_ua[1] == pytest.approx(70.0)  # its own max comfortable current
    assert 99.0 < frame.amplitude_ua[2] <= 100.0  # at its max comfortable current = the limit
    assert frame.active[3:].sum() == 0  # not in the calibration → never stimulates
    assert check_frame(frame, lim, utah, [ids[0], *ids[3:]]) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -20.0])
def test_bad_rates_zero_only_the_electrodes_that_sample_them(utah, bad):
    pipe = StimulationPipeline(utah, None, SafetyLimits(), MappingConfig(sampling="nearest"))
    ph = pipe.model.phosphene_deg
    rates = np.full(96, 80.0, dtype=np.float32)
    rates[10] = bad
    field = RateField(rates, ph.astype(np.float32), np.ones(96, dtype=np.int8))
    frame = pipe.process(field)
    assert not frame.active[10]
    assert frame.active.sum() == 16
    assert pipe.events["bad_rate"] == 1
    assert pipe.last_events[0].electrodes == (utah.electrode_ids[10],)


def test_zero_frames_refused_mapping_and_audit(utah, tmp_path):
    with pytest.raises(PipelineConfigError, match=r"phase width 170\.0 µs > limit 100\.0"):
        StimulationPipeline(utah, None, SafetyLimits(max_phase_width_us=100))
    with pytest.raises(PipelineConfigError, match="pulse rate"):
        StimulationPipeline(utah, None, SafetyLimits(), MappingConfig(pulse_rate_hz=600))
    path = tmp_path / "audit.npelog"
    with AuditLog(path, utah, SafetyLimits()) as log:
        pipe = StimulationPipeline(utah, None, SafetyLimits(), audit=log)
        z = pipe.zero("camera lost")
        assert not z.active.any() and z.sequence == 1
        rates = np.full(96, np.nan, dtype=np.float32)
        frame = pipe.process(
            RateField(rates, pipe.model.phosphene_deg.astype(np.float32), np.ones(96, np.int8))
        )
        assert not frame.active.any()
    rep = inspect_log(path)
    assert rep.events_by_kind == {"zero": 1, "bad_rate": 1}
    assert pipe.events == {"zero": 1, "bad_rate": 96}


def test_process_never_raises(utah):
    pipe = StimulationPipeline(utah, None, SafetyLimits())
    empty = RateField(np.zeros(0, np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.int8))
    assert not pipe.process(empty).active.any()
    weird = RateField(
        np.full(3, 1e38, np.float32),
        np.full((3, 2), np.nan, np.float32),
        np.array([5, -7, 0], np.int8),
    )
    frame = pipe.process(weird)
    assert not frame.active.any() and frame.n_electrodes == 96


def test_warm_up_leaves_no_trace(utah, tmp_path):
    """warm_up runs the arithmetic only: no sequence number, no event, no audit record, and
    the frames that follow are the same as without it."""
    path = tmp_path / "audit.npelog"
    with AuditLog(path, utah, SafetyLimits()) as log:
        warmed = StimulationPipeline(utah, None, SafetyLimits(), audit=log)
        cold = StimulationPipeline(utah, None, SafetyLimits())
        centre = warmed.model.phosphene_deg.mean(axis=0)
        field = grid_field(centre, rates_on=lambda p: np.full(len(p), 100.0))
        warmed.warm_up(field)
        assert warmed.sequence == 0 and not warmed.events
        a, b = warmed.process(field), cold.process(field)
    assert a.sequence == b.sequence == 1
    for name in ("amplitude_ua", "phase_width_us", "pulse_rate_hz", "n_pulses"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    rep = inspect_log(path)
    assert rep.events_by_kind == {}
