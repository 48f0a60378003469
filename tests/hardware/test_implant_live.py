"""Implants through the live parts (issue 17): implant calibrations, the version-2 audit log,
the implant-wide caps under adversarial rate fields, and one real UDP link per array.

Everything is real: arrays and implant files, ImplantPipeline, AuditLog files, simulated
stimulators on loopback sockets. The only fault caused by hand is a link whose socket is
closed under it (what a dead network interface looks like to `sendto`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware.audit import (
    ARRAY_INDEX,
    ENTRY,
    FRAME_HEAD,
    IMPLANT_LOG_VERSION,
    TYPE_ARRAY_FRAME,
    TYPE_FRAME,
    AuditError,
    AuditLog,
    Record,
    ids_checksum,
    inspect_log,
    iter_records,
    read_implant_frames,
)
from hardware.calibration_file import (
    CALIBRATION_VERSION,
    ElectrodeCalibration,
    PatientCalibration,
    save_calibration,
)
from hardware.implant import Implant, ImplantPipeline, check_implant, load_implant, qualify
from hardware.implant_calibration import (
    ImplantCalibrationError,
    join_implant_calibration,
    load_implant_calibration,
    split_implant_calibration,
)
from hardware.implant_chain import ImplantBus, ImplantLinkError, start_implant_chain
from hardware.phosphene_preview import PhospheneRenderer, implant_frame
from hardware.safety import SafetyLimits
from hardware.simulator_mode import SimulatorMode
from hardware.types import RateField, StimulationFrame

#: Every test here runs in both forms of the per-bin work (compiled and numpy; conftest).
pytestmark = pytest.mark.usefixtures("form")

N_RATES = 512


def write_two_array_implant(path: Path, total_ua: float = 300.0, active: int = 20) -> Path:
    """Two Utah-64 arrays in one hemisphere, with implant caps that bind before the arrays'."""
    doc = {
        "schema_name": "npe.implant",
        "version": 1,
        "name": "pair",
        "arrays": [
            {
                "label": "upper",
                "array": "utah64",
                "hemisphere": "left",
                "placement": {"center_deg": [3.0, 2.0]},
            },
            {
                "label": "lower",
                "array": "utah64",
                "hemisphere": "left",
                "placement": {"center_deg": [3.0, -2.0]},
            },
        ],
        "limits": {"max_active_electrodes": active, "max_total_current_ua": total_ua},
    }
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def pair(tmp_path: Path) -> Implant:
    return load_implant(write_two_array_implant(tmp_path / "pair.json"))


def _field(implant: Implant, rates: np.ndarray, seed: int = 0) -> RateField:
    """Rates at positions spread over both arrays' phosphenes."""
    rng = np.random.default_rng(seed)
    centres = np.concatenate([a.array.phosphene_positions_deg() for a in implant.arrays])
    pos = centres[rng.integers(0, len(centres), rates.shape[0])] + rng.normal(
        0, 0.3, (rates.shape[0], 2)
    )
    pol = rng.integers(-1, 2, rates.shape[0]).astype(np.int8)
    return RateField(rates.astype(np.float32), pos.astype(np.float32), pol)


# -- calibration -------------------------------------------------------------------------


def _cal(ids: list[str], arrays: tuple[str, ...] = ("pair",)) -> PatientCalibration:
    return PatientCalibration(
        version=CALIBRATION_VERSION,
        patient_id="P1",
        arrays=arrays,
        electrodes=tuple(
            ElectrodeCalibration(
                electrode_id=i, threshold_ua=20.0, max_comfortable_ua=60.0, phosphene_deg=(3, 0)
            )
            for i in ids
        ),
    )


def test_implant_calibration_splits_per_array_with_bare_ids(pair: Implant) -> None:
    ids = [
        qualify("upper", "utah64-01"),
        qualify("upper", "utah64-06"),
        qualify("lower", "utah64-01"),
    ]
    parts = split_implant_calibration(_cal(ids), pair, 100.0)
    assert [e.electrode_id for e in parts["upper"].electrodes] == ["utah64-01", "utah64-06"]
    assert [e.electrode_id for e in parts["lower"].electrodes] == ["utah64-01"]
    assert parts["upper"].arrays == ("utah64",)
    # and back: joining per-array calibrations gives the same qualified ids
    joined = join_implant_calibration(parts, pair, "P1")
    assert [e.electrode_id for e in joined.electrodes] == ids
    pipe = ImplantPipeline(pair, SafetyLimits(), calibrations=parts)
    assert int(pipe.pipelines["upper"].model.enabled.sum()) == 2  # untested ones disabled


@pytest.mark.parametrize(
    ("ids", "arrays", "message"),
    [
        (["upper:utah64-01", "lower:utah64-01"], ("utah64",), "not implant 'pair'"),
        (["utah64-01", "lower:utah64-01"], ("pair",), "lack their array label"),
        (
            ["upper:utah64-01", "middle:utah64-01"],
            ("pair",),
            "unknown to implant 'pair': middle:utah64-01",
        ),
        (
            ["upper:utah64-01", "lower:utah64-99"],
            ("pair",),
            "unknown to implant 'pair': lower:utah64-99",
        ),
        (["upper:utah64-01", "upper:utah64-02"], ("pair",), "lists no electrode of 1 array.*lower"),
    ],
)
def test_implant_calibration_mismatches_are_refused_in_one_line(
    pair: Implant, tmp_path: Path, ids: list[str], arrays: tuple[str, ...], message: str
) -> None:
    path = save_calibration(_cal(ids, arrays), tmp_path / "cal.json")
    with pytest.raises(ImplantCalibrationError, match=message) as info:
        load_implant_calibration(path, pair, 100.0)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


# -- the implant-wide caps under adversarial rate fields ----------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    level=st.floats(0.0, 1000.0),
    specials=st.lists(
        st.tuples(
            st.integers(0, N_RATES - 1),
            st.sampled_from([0.0, 1e6, float("nan"), float("inf"), -5.0, 1e-30]),
        ),
        max_size=40,
    ),
    seed=st.integers(0, 3),
    total=st.floats(30.0, 2000.0),
    active=st.integers(1, 40),
)
def test_no_bin_breaks_array_or_implant_limits(
    tmp_path_factory: pytest.TempPathFactory,
    level: float,
    specials: list[tuple[int, float]],
    seed: int,
    total: float,
    active: int,
) -> None:
    """Rate fields from dark to saturating, with NaN/inf/negative/huge entries anywhere, and
    implant caps from tight to loose: every bin passes `check_implant` (each array's
    `check_frame` and the implant caps) and the audit log's own re-check."""
    rates = np.random.default_rng(seed).uniform(0.0, level, N_RATES)
    for i, v in specials:
        rates[i] = v
    base = tmp_path_factory.mktemp("prop")
    implant = load_implant(write_two_array_implant(base / "i.json", total, active))
    limits = SafetyLimits()
    pipe = ImplantPipeline(implant, limits)
    field = _field(implant, rates, seed)
    log = AuditLog(base / "a.log", None, limits, implant=implant)
    for _ in range(2):  # the kernel bin and the next (ring slot reuse)
        frames = pipe.process(field)
        assert check_implant(frames, implant, limits) == []
        for i, f in enumerate(frames):
            log.array_frame(i, f)
    log.close()
    report = inspect_log(base / "a.log")  # the log's own, independent re-check
    assert report.ok, report.problems
    assert report.implant_breaches == 0 and report.limit_breaches == 0


def test_total_current_cap_binds_across_arrays(pair: Implant) -> None:
    """Each array alone stays within its limits, together they exceed the implant's total:
    the implant step scales every array down."""
    limits = SafetyLimits()
    field = _field(pair, np.full(N_RATES, 400.0))
    alone = [p.process(field) for p in ImplantPipeline(pair, limits).pipelines.values()]
    total_alone = sum(float(f.amplitude_ua[f.active].sum()) for f in alone)
    assert total_alone > pair.limits.max_total_current_ua  # the test means something
    pipe = ImplantPipeline(pair, limits)
    frames = pipe.process(field)
    total = sum(float(f.amplitude_ua[f.active].sum()) for f in frames)
    active = sum(int(f.active.sum()) for f in frames)
    assert 0 < total <= pair.limits.max_total_current_ua
    assert active <= pair.limits.max_active_electrodes
    assert all(f.active.any() for f in frames)  # both arrays still stimulate
    assert pipe.events["implant_total_current_cap"] + pipe.events["implant_active_cap"] >= 1


# -- the audit log ------------------------------------------------------------------------


def test_implant_log_is_version_2_and_reads_back_per_bin(pair: Implant, tmp_path: Path) -> None:
    log_path = tmp_path / "a.log"
    pipe = ImplantPipeline(pair, SafetyLimits())
    log = AuditLog(log_path, None, SafetyLimits(), implant=pair)
    field = _field(pair, np.full(N_RATES, 100.0))
    sent = []
    for _ in range(5):
        frames = pipe.process(field)
        sent.append([f.amplitude_ua.copy() for f in frames])
        for i, f in enumerate(frames):
            log.array_frame(i, f)
    log.close()
    assert int.from_bytes(log_path.read_bytes()[8:10], "big") == IMPLANT_LOG_VERSION
    implant, bins = read_implant_frames(log_path)
    assert implant is not None and implant.labels == ("upper", "lower")
    assert len(bins) == 5
    for got, want in zip(bins, sent, strict=True):
        for f, a in zip(got, want, strict=True):
            np.testing.assert_array_equal(f.amplitude_ua, a)
    report = inspect_log(log_path)
    assert report.ok and [r.n_frames for r in report.arrays] == [5, 5]
    # a version-1 log cannot take an implant session
    v1 = tmp_path / "v1.log"
    AuditLog(v1, pair.arrays[0].array, SafetyLimits()).close()
    with pytest.raises(AuditError, match="needs a new log file"):
        AuditLog(v1, None, SafetyLimits(), implant=pair)


def _straight_entries(index: int | None, frame: StimulationFrame) -> bytes:
    """The frame record body built the obvious way (masks, a stack, one record array):
    what the preallocated per-array tables must reproduce byte for byte."""
    fields = (
        frame.amplitude_ua, frame.phase_width_us, frame.interphase_gap_us,
        frame.pulse_rate_hz, frame.n_pulses,
    )  # fmt: skip
    keep = np.nonzero(np.any(np.stack([f != 0 for f in fields]), axis=0))[0]
    rec = np.empty(len(keep), dtype=ENTRY)
    rec["i"] = keep
    for name, f in zip(("amp", "pw", "gap", "rate", "n"), fields, strict=True):
        rec[name] = f[keep]
    head = FRAME_HEAD.pack(
        frame.sequence, frame.timestamp_ns, frame.n_electrodes, len(keep),
        ids_checksum(frame.electrode_ids),
    )  # fmt: skip
    return (b"" if index is None else ARRAY_INDEX.pack(index)) + head + rec.tobytes()


def test_array_frame_records_from_preallocated_tables_are_the_straight_bytes(
    pair: Implant, tmp_path: Path
) -> None:
    """Per-array entry tables (one per slot) give exactly the obvious encoding, bin after
    bin, with arrays interleaved, zero frames, a NaN that was sent and a single-array frame
    written into the same log between them."""
    log_path = tmp_path / "a.log"
    pipe = ImplantPipeline(pair, SafetyLimits())
    log = AuditLog(log_path, None, SafetyLimits(), implant=pair)
    want: list[bytes] = []
    rng = np.random.default_rng(3)
    for k in range(12):
        frames = pipe.zero("z") if k % 4 == 3 else pipe.process(
            _field(pair, rng.uniform(0, 200, N_RATES), seed=k)
        )  # fmt: skip
        frames = tuple(dataclasses.replace(f) for f in frames)
        if k == 5:
            frames[1].amplitude_ua[7] = np.nan
        for i, f in enumerate(frames):
            log.array_frame(i, f)
            want.append(_straight_entries(i, f))
        if k == 6:  # a frame of one array, outside the implant's slots
            log.frame(frames[0])
            want.append(_straight_entries(None, frames[0]))
    log.close()
    got = [
        r.body
        for r in iter_records(log_path)
        if isinstance(r, Record) and r.rtype in (TYPE_ARRAY_FRAME, TYPE_FRAME)
    ]
    assert len(got) == 12 * 2 + 1
    assert got == want
    assert any(len(b) > len(_straight_entries(0, pipe.zero("z")[0])) for b in got)


def test_inspect_finds_a_missing_array_frame_and_an_implant_breach(
    pair: Implant, tmp_path: Path
) -> None:
    log_path = tmp_path / "a.log"
    pipe = ImplantPipeline(pair, SafetyLimits())
    log = AuditLog(log_path, None, SafetyLimits(), implant=pair)
    frames = pipe.process(_field(pair, np.full(N_RATES, 100.0)))
    for i, f in enumerate(frames):
        log.array_frame(i, f)
    frames = pipe.process(_field(pair, np.full(N_RATES, 100.0)))
    log.array_frame(0, frames[0])  # bin 2: array "lower" never logged
    frames = pipe.process(_field(pair, np.full(N_RATES, 100.0)))
    for i, f in enumerate(frames):
        f.amplitude_ua[: pair.limits.max_active_electrodes + 5] = 10.0  # past the implant cap
        f.n_pulses[: pair.limits.max_active_electrodes + 5] = 1
        log.array_frame(i, f)
    log.close()
    report = inspect_log(log_path)
    assert not report.ok
    assert report.incomplete_bins == 1
    assert report.implant_breaches == 1
    assert report.arrays[1].frame_sequence_gaps == 1  # "lower" skipped a frame


# -- one real UDP link per array ----------------------------------------------------------


def _bins(bus: ImplantBus, field: RateField, n: int) -> None:
    """n bins through the implant bus as the live loop drives it: map, send, log."""
    for _ in range(n):
        f = bus.pipeline.process(field)
        bus.link.send(f)
        bus.audit.frame(f)


def test_every_link_gets_one_frame_per_bin_and_a_failed_link_zeroes_all(
    pair: Implant, tmp_path: Path
) -> None:
    limits = SafetyLimits()
    chain = start_implant_chain(
        pair, limits, tmp_path / "a.log", "test", simulator=SimulatorMode.THREAD, deadman_ms=5000
    )
    try:
        assert len(set(chain.link_specs)) == 2
        assert chain.links[0].key != chain.links[1].key  # each link its own key
        bus = ImplantBus(chain, ImplantPipeline(pair, limits, audit=chain.audit))
        field = _field(pair, np.full(N_RATES, 100.0))
        _bins(bus, field, 30)
        assert [lnk.stats.sent for lnk in chain.links] == [30, 30]
        chain.links[1].close()  # the "lower" link's socket goes away
        f = bus.pipeline.process(field)
        with pytest.raises(ImplantLinkError, match=r"link lower .* every link set to zero"):
            bus.link.send(f)
    finally:
        chain.close()
    stats = chain.stimulator_stats()
    assert stats[0] is not None and stats[1] is not None
    assert stats[0].received == stats[0].accepted == 32  # 30 + the fault bin + its zero
    assert stats[1].accepted == 30
    stims = chain.stimulators
    assert isinstance(stims, list)
    assert not stims[0].output.active.any()  # the working link was zeroed
    report = inspect_log(tmp_path / "a.log")
    assert report.ok, report.problems
    assert report.events_by_kind.get("link_fault") == 1
    assert [r.n_frames for r in report.arrays] == [32, 32]
    _, bins = read_implant_frames(tmp_path / "a.log")
    assert not any(fr.active.any() for fr in bins[-1])  # the last bin: zero everywhere


def test_preview_draws_every_electrode_of_the_shipped_implant() -> None:
    implant = load_implant("utah16x64")
    assert implant.n_electrodes == 1024
    r = PhospheneRenderer(implant, None, size_px=128, tau_ms=0)
    pipe = ImplantPipeline(implant, SafetyLimits())
    frames = pipe.zero("test")
    img0 = r.render(implant_frame(implant, frames))
    assert r.n == 1024 and not img0.any()
    # every electrode lit once: each shows up somewhere in the field
    f = implant_frame(implant, frames)
    f.amplitude_ua[:] = 40.0
    f.n_pulses[:] = 5
    img = r.render(f)
    assert img.shape == (128, 128) and img.max() > 0.1
    rows_cols = r.pixel_of(r.positions_deg)
    inside = (rows_cols >= 0).all(axis=1) & (rows_cols < 128).all(axis=1)
    assert inside.all()


def test_a_stimulator_that_stops_listening_zeroes_every_link_and_says_which(
    pair: Implant, tmp_path: Path
) -> None:
    """The links are connected UDP sockets, so a stimulator that goes away (not just a closed
    socket on our side) is a refused write within a bin or two: the implant's link fault
    follows, with the link named, and the working array's stimulator is left at zero."""
    limits = SafetyLimits()
    chain = start_implant_chain(
        pair, limits, tmp_path / "a.log", "test", simulator=SimulatorMode.THREAD, deadman_ms=5000
    )
    try:
        bus = ImplantBus(chain, ImplantPipeline(pair, limits, audit=chain.audit))
        field = _field(pair, np.full(N_RATES, 100.0))
        _bins(bus, field, 5)
        stims = chain.stimulators
        assert isinstance(stims, list)
        stims[1].stop()  # the "lower" array's stimulator stops listening
        with pytest.raises(ImplantLinkError, match=r"link lower .* every link set to zero"):
            _bins(bus, field, 10)
        err = chain.links[1].stats.last_send_error
        assert err is not None and "ConnectionRefusedError" in err
    finally:
        chain.close()
    assert not stims[0].output.active.any()  # the working link was zeroed
    report = inspect_log(tmp_path / "a.log")
    assert report.ok, report.problems
    assert report.events_by_kind.get("link_fault") == 1
