"""The audit log: round trip, crash safety under SIGKILL, torn and corrupt records, breaches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from hardware.audit import AuditError, AuditLog, inspect_log, iter_records, read_frames
from hardware.safety import SafetyLimits

#: Every test here runs in both forms of the per-bin work (compiled and numpy; conftest).
pytestmark = pytest.mark.usefixtures("form")

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from hardware.arrays import load_array
    from hardware.audit import AuditLog
    from hardware.safety import SafetyLimits
    from hardware.types import StimulationFrame

    array = load_array("utah96")
    log = AuditLog(sys.argv[1], array, SafetyLimits())
    amp = np.zeros(array.n, dtype=np.float32)
    amp[:8] = 40.0
    ones = np.ones(array.n, dtype=np.float32)
    i = 0
    while True:
        i += 1
        log.frame(StimulationFrame(i, i, array.electrode_ids, amp, ones * 170, ones * 50,
                                   ones * 300, np.full(array.n, 3, np.uint16)))
        if i % 7 == 0:
            log.event("amplitude_cap", f"frame {i}: clamped")
        if i == 200:
            print("ready", flush=True)
    """
)


def test_round_trip_frames_and_events(utah, make_frame, tmp_path):
    path = tmp_path / "session.npelog"
    frames = [
        make_frame(utah, amp=np.r_[np.full(4, 20.0 + s), np.zeros(utah.n - 4)], sequence=s)
        for s in range(1, 6)
    ]
    with AuditLog(path, utah, SafetyLimits()) as log:
        for f in frames:
            log.frame(f)
        log.event("amplitude_cap", "utah96-01: clamped")
    array, back = read_frames(path)
    assert array is not None and array.electrode_ids == utah.electrode_ids
    assert [f.sequence for f in back] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(back[2].amplitude_ua, frames[2].amplitude_ua)
    rep = inspect_log(path)
    assert rep.ok, rep.problems
    assert (rep.n_sessions, rep.n_frames, rep.n_events) == (1, 5, 1)
    assert rep.events_by_kind == {"amplitude_cap": 1}
    assert (rep.first_sequence, rep.last_sequence) == (0, 6)
    assert rep.max_amplitude_ua == 25.0 and rep.max_active_electrodes == 4
    mono = [r.monotonic_ns for r in iter_records(path)]
    assert mono == sorted(mono)


def test_sparse_frame_records_are_lossless(utah, make_frame, tmp_path):
    from hardware.safety import SafetyEnforcer

    rng = np.random.default_rng(3)
    enforcer = SafetyEnforcer(SafetyLimits(), utah)
    amp = np.where(rng.random(utah.n) < 0.1, rng.uniform(10, 80, utah.n), 0.0)
    safe, _ = enforcer.enforce(make_frame(utah, amp=amp))  # inactive electrodes all-zero
    odd = make_frame(utah, amp=0.0, pw=np.where(np.arange(utah.n) == 5, np.nan, 170.0))
    path = tmp_path / "sparse.npelog"
    with AuditLog(path, utah) as log:
        log.frame(safe)
        log.frame(odd)
    sizes = [len(r.body) for r in iter_records(path)]
    assert sizes[1] < 24 + 20 * (safe.active.sum() + 1)  # only the non-zero electrodes stored
    _, back = read_frames(path)
    for orig, got in zip((safe, odd), back, strict=True):
        for k in (
            "amplitude_ua",
            "phase_width_us",
            "interphase_gap_us",
            "pulse_rate_hz",
            "n_pulses",
        ):
            np.testing.assert_array_equal(getattr(got, k), getattr(orig, k))


def test_survives_sigkilled_writer(tmp_path):
    path = tmp_path / "killed.npelog"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        size = path.stat().st_size
        deadline = time.monotonic() + 30
        while path.stat().st_size < size + 200_000:  # let it write in full flow
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    rep = inspect_log(path)
    assert rep.ok, rep.problems
    assert rep.n_frames > 200 and rep.torn_records <= 1
    assert rep.sequence_gaps == [] and rep.corrupt_regions == [] and rep.limit_breaches == 0
    # Re-opening continues the sequence after whatever survived.
    last = rep.last_sequence
    with AuditLog(path) as log:
        log.event("restart", "writer restarted after a crash")
    rep2 = inspect_log(path)
    assert rep2.ok, rep2.problems
    assert rep2.last_sequence == last + 2 and rep2.n_sessions == 2


def test_torn_tail_is_detected_and_earlier_records_stay_valid(utah, make_frame, tmp_path):
    path = tmp_path / "torn.npelog"
    with AuditLog(path, utah, SafetyLimits()) as log:
        for s in range(1, 11):
            log.frame(
                make_frame(utah, amp=np.r_[np.full(4, 10.0), np.zeros(utah.n - 4)], sequence=s)
            )
    full = path.read_bytes()
    path.write_bytes(full[:-300])  # the last record was being written when power went
    rep = inspect_log(path)
    assert rep.ok and rep.torn_records == 1 and rep.n_frames == 9
    with AuditLog(path, utah) as log:  # appending after a torn record
        log.frame(make_frame(utah, amp=np.r_[np.full(4, 10.0), np.zeros(utah.n - 4)], sequence=11))
    rep = inspect_log(path)
    assert rep.ok and rep.torn_records == 1 and rep.n_frames == 10 and rep.sequence_gaps == []


def test_corruption_in_the_middle_is_reported(utah, make_frame, tmp_path):
    path = tmp_path / "corrupt.npelog"
    with AuditLog(path, utah, SafetyLimits()) as log:
        for s in range(1, 11):
            log.frame(
                make_frame(utah, amp=np.r_[np.full(4, 10.0), np.zeros(utah.n - 4)], sequence=s)
            )
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    rep = inspect_log(path)
    assert not rep.ok
    assert len(rep.corrupt_regions) == 1 and rep.n_frames == 9
    assert rep.sequence_gaps and "corrupt" in " ".join(rep.problems)


def test_limit_breaches_are_found(utah, make_frame, tmp_path):
    path = tmp_path / "breach.npelog"
    with AuditLog(path, utah, SafetyLimits(max_amplitude_ua=50.0)) as log:
        log.frame(make_frame(utah, amp=np.r_[60.0, np.zeros(utah.n - 1)]))
        log.frame(make_frame(utah, amp=np.r_[40.0, np.zeros(utah.n - 1)], sequence=2))
    rep = inspect_log(path)
    assert not rep.ok and rep.limit_breaches == 1
    assert "amplitude 60.0 > 50.0" in rep.breach_examples[0]
    # Without recorded limits, the hardware's absolute limits still apply.
    path2 = tmp_path / "bare.npelog"
    with AuditLog(path2) as log:
        log.frame(make_frame(utah, amp=150.0))
    rep2 = inspect_log(path2)
    assert rep2.limit_breaches == 1 and "100.0 µA" in rep2.breach_examples[0]


def test_refuses_foreign_files(tmp_path):
    p = tmp_path / "not-a-log.bin"
    p.write_bytes(b"hello world, definitely not an audit log")
    with pytest.raises(AuditError, match="not an npe audit log"):
        inspect_log(p)
    with pytest.raises(AuditError, match="not an npe audit log"):
        AuditLog(p)
    assert p.read_bytes().startswith(b"hello")  # untouched
    assert os.path.exists(p)
