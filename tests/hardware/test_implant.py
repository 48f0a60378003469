"""Implants of several arrays: the file format and its refusals, the shipped 16 × Utah-64
implant (1,024 electrodes), and one rate field mapped onto every array within the per-array
and the implant-wide limits (re-checked independently by check_frame / check_implant)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hardware.arrays import load_array
from hardware.implant import (
    ImplantError,
    ImplantLimits,
    ImplantPipeline,
    check_implant,
    implant_of_one,
    list_implants,
    load_implant,
    parse_implant,
)
from hardware.pipeline import StimulationPipeline
from hardware.safety import SafetyLimits, check_frame
from hardware.types import RateField


def full_field(n=4096, seed=0, half=12.0):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-half, half, (n, 2)).astype(np.float32)
    pol = rng.integers(-1, 2, n).astype(np.int8)
    return pos, pol, rng


def test_shipped_implant_has_16_arrays_and_1024_electrodes():
    assert "utah16x64" in list_implants()
    imp = load_implant("utah16x64")
    assert len(imp.arrays) == 16 and imp.n_electrodes == 1024
    assert sum(a.hemisphere == "left" for a in imp.arrays) == 8
    assert len({a.link for a in imp.arrays}) == 16
    for a in imp.arrays:
        ph = a.array.phosphene_positions_deg()
        # Left V1 sees the right visual field, and the other way round.
        assert np.all(np.sign(ph[:, 0]) == (1 if a.hemisphere == "left" else -1)), a.label
        np.testing.assert_allclose(ph.mean(axis=0), a.array.placement_deg, atol=1.0)


def _doc():
    return json.loads(load_implant_text())


def load_implant_text():
    from hardware.implant import IMPLANT_DATA_DIR

    return (IMPLANT_DATA_DIR / "utah16x64.json").read_text()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["arrays"].append(dict(d["arrays"][0], link=None)), "labels listed twice"),
        (lambda d: d["arrays"][0].update(hemisphere="right"), "hemisphere represents"),
        (lambda d: d["arrays"][1].update(link="tcp://x"), "expected udp://HOST:PORT"),
        (lambda d: d["arrays"][1].update(link=d["arrays"][0]["link"]), "one link given"),
        (lambda d: d["arrays"][2].update(array="utah97"), "unknown array 'utah97'"),
        (lambda d: d.update(version=2), "unknown implant version 2"),
        (lambda d: d["limits"].update(max_total_current_ua=-1), "limits.max_total_current_ua"),
        (lambda d: d.update(arrays=[]), "arrays"),
        (lambda d: d.update(extra=1), "extra"),
    ],
)
def test_implant_files_are_validated(edit, message):
    doc = _doc()
    edit(doc)
    with pytest.raises(ImplantError, match=message) as err:
        parse_implant(doc, "x.json")
    assert "\n" not in str(err.value)


def test_implant_file_from_disk_and_refusals(tmp_path):
    p = tmp_path / "imp.json"
    doc = _doc()
    doc["arrays"] = doc["arrays"][:2]
    (tmp_path / "mine.json").write_text(load_array("utah64").to_json())
    doc["arrays"][1]["array"] = "mine.json"  # resolved beside the implant file
    p.write_text(json.dumps(doc))
    imp = load_implant(p)
    assert imp.labels == ("left-01", "left-02") and imp.n_electrodes == 128
    p.write_text("{nope")
    with pytest.raises(ImplantError, match="not valid JSON"):
        load_implant(p)
    with pytest.raises(ImplantError, match="unknown implant 'nothing'"):
        load_implant("nothing")


def test_one_rate_field_drives_every_array_within_all_limits():
    imp = load_implant("utah16x64")
    limits = SafetyLimits()
    pipe = ImplantPipeline(imp, limits)
    pos, pol, rng = full_field()
    for _ in range(20):
        rates = rng.gamma(1.0, 80.0, len(pos)).astype(np.float32)
        frames = pipe.process(RateField(rates, pos, pol))
        assert len(frames) == 16
        assert [f.electrode_ids for f in frames] == [a.array.electrode_ids for a in imp.arrays]
        assert check_implant(frames, imp, limits) == []
        assert sum(int(f.active.sum()) for f in frames) > 16  # more than one array drives
    # The shipped implant limits bind on a bright field: 16 arrays × 16 > 64 simultaneous.
    assert pipe.events["implant_active_cap"] == 20


def test_tight_implant_limits_are_enforced_and_reported():
    imp = load_implant("utah16x64")
    tight = ImplantLimits(max_active_electrodes=20, max_total_current_ua=900.0)
    imp = type(imp)(imp.name, imp.arrays, tight)
    limits = SafetyLimits()
    pipe = ImplantPipeline(imp, limits)
    pos, pol, rng = full_field(seed=1)
    for k in range(30):
        rates = rng.gamma(1.0, 80.0, len(pos)).astype(np.float32)
        if k % 5 == 0:
            rates[rng.random(len(rates)) < 0.01] = np.nan  # faults on some arrays
        frames = pipe.process(RateField(rates, pos, pol))
        assert check_implant(frames, imp, limits) == []
        active = sum(int(f.active.sum()) for f in frames)
        total = sum(float(f.amplitude_ua[f.active].sum(dtype=np.float64)) for f in frames)
        assert active <= 20 and total <= 900.0
    assert pipe.events["implant_active_cap"] > 0
    assert pipe.events["implant_total_current_cap"] > 0
    assert sum(p.events["bad_rate"] for p in pipe.pipelines.values()) > 0


def test_a_single_array_is_an_implant_of_one(utah):
    pos, pol, rng = full_field(n=2048, half=6.0)
    single = StimulationPipeline(utah, None, SafetyLimits())
    implant = ImplantPipeline(implant_of_one(utah), SafetyLimits())
    for _ in range(5):
        rates = rng.gamma(1.0, 80.0, len(pos)).astype(np.float32)
        a = single.process(RateField(rates, pos, pol))
        (b,) = implant.process(RateField(rates, pos, pol))
        np.testing.assert_array_equal(a.amplitude_ua, b.amplitude_ua)
        np.testing.assert_array_equal(a.n_pulses, b.n_pulses)
        assert check_frame(b, SafetyLimits(), utah) == []
    assert not implant.events


def test_calibration_for_an_unknown_array_is_refused():
    imp = load_implant("utah16x64")
    with pytest.raises(ImplantError, match="not in the implant"):
        ImplantPipeline(imp, SafetyLimits(), calibrations={"nowhere": None})  # type: ignore[dict-item]


def test_implant_kernel_equals_each_arrays_general_path_bit_for_bit():
    """The fused kernel over 16 arrays (some calibrated) gives, array by array, exactly the
    general path's fields; bins it declines carry an event or a bad rate."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "_kernel_tests", Path(__file__).with_name("test_kernel.py")
    )
    assert spec is not None and spec.loader is not None
    kt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kt)
    FIELDS, _calibration = kt.FIELDS, kt._calibration

    full = load_implant("utah16x64")
    imp = type(full)(
        full.name, full.arrays, ImplantLimits(max_active_electrodes=4096, max_total_current_ua=1e6)
    )
    rng = np.random.default_rng(3)
    cals = {a.label: _calibration(a.array, rng) for a in imp.arrays[::3]}
    limits = SafetyLimits(max_total_current_ua=700.0)
    pipe = ImplantPipeline(imp, limits, calibrations=cals)
    ref = [StimulationPipeline(a.array, cals.get(a.label), limits) for a in imp.arrays]
    pos, pol, rng = full_field(n=4096, seed=4)
    served = 0
    for k in range(30):
        rates = rng.gamma(1.0, float(10 ** rng.uniform(0.5, 2.5)), len(pos)).astype(np.float32)
        if k % 7 == 3:
            rates[rng.integers(0, len(rates))] = np.inf
        field = RateField(rates, pos, pol)
        before = pipe.kernel_bins
        frames = pipe.process(field)
        want = [r._reference(r.currents(rates[None].astype(np.float64), field)) for r in ref]
        if pipe.kernel_bins > before:
            served += 1
            for f, (fields, events) in zip(frames, want, strict=True):
                assert events[0] == []
                for name, w in zip(FIELDS, fields, strict=True):
                    np.testing.assert_array_equal(getattr(f, name), w[0], err_msg=name)
        else:
            assert any(ev[0] for _, ev in want) or not np.isfinite(rates).all()
        assert check_implant(frames, imp, limits) == []
    assert served >= 10
