"""The simulated stimulator over real loopback UDP: acks, rejections by reason, its own
limits, and the dead-man stop."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from hardware.link import open_link
from hardware.safety import SafetyLimits
from hardware.stimulator import SimulatedStimulator
from hardware.wire import FrameEncoder, encode_frame, now_us


def wait_for(cond, timeout=5.0):
    """Poll until cond() is true (event wait, not a timing assertion)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


def frame_with(utah, make_frame, amp, seq=1):
    a = np.zeros(utah.n)
    a[:3] = amp
    return make_frame(utah, amp=a, sequence=seq)


@pytest.fixture()
def stim(utah, key):
    s = SimulatedStimulator(
        "127.0.0.1", 0, key, SafetyLimits(max_amplitude_ua=50.0), utah, deadman_ms=100
    )
    s.start()
    yield s
    s.stop()


def test_accepts_acks_and_reenforces_its_limits(stim, utah, key, make_frame):
    link = open_link(f"udp://127.0.0.1:{stim.port}", key)
    link.send(frame_with(utah, make_frame, 80.0))  # above the stimulator's own 50 µA cap
    assert wait_for(lambda: stim.stats.accepted == 1)
    # What it delivered (its output may already be zero again if the dead-man fired since).
    assert 49.9 < stim.stats.max_amplitude_ua <= 50.0
    assert stim.stats.clamped["amplitude_cap"] == 1
    assert wait_for(lambda: (link.poll(), link.stats.acks)[1] == 1)
    link.close()


def test_rejects_bad_frames_with_counted_reasons(stim, utah, key, make_frame):
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = ("127.0.0.1", stim.port)
    t = now_us()  # wire sequences are send times (µs): small fixed ones would be stale
    good = encode_frame(frame_with(utah, make_frame, 30.0), key, t + 10)
    tx.sendto(good, addr)
    tx.sendto(good, addr)  # replay
    tx.sendto(encode_frame(frame_with(utah, make_frame, 30.0), b"k" * 32, t + 11), addr)
    altered = bytearray(encode_frame(frame_with(utah, make_frame, 30.0), key, t + 12))
    altered[50] ^= 1
    tx.sendto(bytes(altered), addr)
    tx.sendto(good[:100], addr)  # truncated
    assert wait_for(lambda: stim.stats.received == 5)
    tx.close()
    assert stim.stats.accepted == 1
    assert stim.stats.rejected == {"replay": 1, "bad_mac": 2, "truncated": 1}


def test_deadman_stops_stimulation_without_valid_frames(stim, utah, key, make_frame):
    link = open_link(f"udp://127.0.0.1:{stim.port}", key)
    enc_frames = [frame_with(utah, make_frame, 30.0, seq=s) for s in range(1, 6)]
    for f in enc_frames:  # a live stream of frames keeps it stimulating
        link.send(f)
        time.sleep(0.01)
    assert wait_for(lambda: stim.stats.accepted == 5)
    assert stim.stats.max_amplitude_ua == 30.0
    # The sender goes silent (or only garbage arrives): the stimulator stops by itself.
    # (On a loaded machine a stop may already have happened between two frames above.)
    link.sock.sendto(b"garbage", ("127.0.0.1", stim.port))
    assert wait_for(lambda: stim.stats.deadman_stops >= 1 and not stim.stats.stimulating)
    assert not stim.stats.stimulating
    assert not stim.output.active.any()
    assert stim.stats.rejected["truncated"] == 1
    # A new valid frame resumes stimulation.
    link.send(frame_with(utah, make_frame, 30.0, seq=6))
    assert wait_for(lambda: stim.stats.stimulating)
    link.close()


def test_zero_frames_do_not_count_as_stimulating(stim, utah, key, make_frame):
    enc = FrameEncoder(key)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.sendto(enc.encode(make_frame(utah, amp=0.0)), ("127.0.0.1", stim.port))
    assert wait_for(lambda: stim.stats.accepted == 1)
    tx.close()
    assert not stim.stats.stimulating


def test_refuses_bad_deadman(utah, key):
    with pytest.raises(ValueError, match="dead-man"):
        SimulatedStimulator("127.0.0.1", 0, key, SafetyLimits(), utah, deadman_ms=0)


@pytest.fixture()
def patient_stim(utah, key):
    """A stimulator with a wide freshness window: for what is about buffering, not age."""
    s = SimulatedStimulator(
        "127.0.0.1", 0, key, SafetyLimits(max_amplitude_ua=50.0), utah, freshness_ms=10_000
    )
    s.start()
    yield s
    s.stop()


def test_a_burst_that_outruns_the_stimulator_waits_instead_of_being_lost(
    patient_stim, utah, key, make_frame
):
    """A replay as fast as possible can outrun it; its receive buffer holds the burst.
    (A frame that waited longer than the freshness window would be refused as stale.)"""
    stim = patient_stim
    n = 400  # 1.8 kB datagrams: far more than the ~60 a default receive buffer holds
    if stim.receive_buffer_bytes < n * 4096:
        pytest.skip(f"the OS grants only {stim.receive_buffer_bytes} B (net.core.rmem_max)")
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = ("127.0.0.1", stim.port)
    t = now_us()
    with stim._lock:  # the receive thread stops at its first frame: the rest must queue
        for seq in range(1, n + 1):
            tx.sendto(encode_frame(frame_with(utah, make_frame, 30.0, seq=seq), key, t + seq), addr)
        time.sleep(0.05)
        assert stim.stats.accepted == 0
    assert wait_for(lambda: stim.stats.accepted == n)
    assert stim.stats.rejected == {} and stim.stats.last_frame_sequence == n
    tx.close()


def _stim(utah, key, **kw):
    return SimulatedStimulator("127.0.0.1", 0, key, SafetyLimits(), utah, deadman_ms=100, **kw)


def test_replay_across_a_restart_is_refused(utah, key, make_frame, tmp_path):
    """Capture a valid datagram, restart the stimulator (same key, same state dir), resend."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with _stim(utah, key, state_dir=tmp_path) as first:
        captured = FrameEncoder(key).encode(frame_with(utah, make_frame, 30.0))
        tx.sendto(captured, ("127.0.0.1", first.port))
        assert wait_for(lambda: first.stats.accepted == 1)
        assert first.stats.replay_state_writes == 1
    with _stim(utah, key, state_dir=tmp_path) as second:
        tx.sendto(captured, ("127.0.0.1", second.port))
        assert wait_for(lambda: second.stats.received == 1)
        assert second.stats.accepted == 0 and second.stats.rejected == {"replay": 1}
    tx.close()


def test_the_durable_state_refuses_a_replay_even_after_the_clock_steps_back(
    utah, key, make_frame, tmp_path
):
    """The start-time floor alone would let it through if the clock went back (NTP step,
    RTC reset); the persisted high-water mark does not."""
    t = now_us()
    captured = encode_frame(frame_with(utah, make_frame, 30.0), key, t + 1)
    first = _stim(utah, key, state_dir=tmp_path, clock_us=lambda: t)
    assert first.handle(captured, None, None)
    back = t - 50_000  # 50 ms back: the captured frame looks fresh and after start to it
    second = _stim(utah, key, state_dir=tmp_path, clock_us=lambda: back)
    assert not second.handle(captured, None, None)
    assert second.stats.rejected == {"replay": 1}
    memory_only = _stim(utah, key, clock_us=lambda: back)  # what the state file prevents
    assert memory_only.handle(captured, None, None)


def test_stale_and_future_frames_are_refused(utah, key, make_frame):
    t = now_us()
    s = _stim(utah, key, freshness_ms=100.0, clock_us=lambda: t)
    f = frame_with(utah, make_frame, 30.0)
    assert not s.handle(encode_frame(f, key, t - 100_001), None, None)
    assert not s.handle(encode_frame(f, key, t + 100_001), None, None)
    assert s.handle(encode_frame(f, key, t + 100_000), None, None)
    assert s.stats.rejected == {"stale": 1, "future": 1}


def test_a_corrupt_replay_state_stops_it_from_starting(utah, key, make_frame, tmp_path):
    from hardware.link import LinkError
    from hardware.replay import state_path

    s = _stim(utah, key, state_dir=tmp_path)
    time.sleep(0.001)  # a frame sent after it started
    assert s.handle(FrameEncoder(key).encode(frame_with(utah, make_frame, 30.0)), None, None)
    path = state_path(tmp_path, key, utah.id_checksum())
    path.write_text('{"format": 1, "array_crc": 1, "high_water_us": "soon"}')
    with pytest.raises(LinkError, match="not a replay-state file"):
        _stim(utah, key, state_dir=tmp_path)


def test_a_state_that_cannot_be_saved_refuses_the_frame(utah, key, make_frame, tmp_path):
    from hardware.replay import state_path

    s = _stim(utah, key, state_dir=tmp_path)
    path = state_path(tmp_path, key, utah.id_checksum())
    # A directory where its temporary file must go: the write fails, even for root.
    path.with_name(path.name + ".tmp").mkdir()
    time.sleep(0.001)
    ok = s.handle(FrameEncoder(key).encode(frame_with(utah, make_frame, 30.0)), None, None)
    assert not ok and s.stats.rejected == {"state_write_failed": 1} and not s.stats.stimulating
    assert not path.exists()


def test_senders_without_the_key_get_no_reply_at_all(stim, utah, key, make_frame):
    """Malformed or unauthenticated datagrams are answered with nothing; an authenticated
    but refused one gets a signed nack naming why."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    tx.settimeout(0.3)
    addr = ("127.0.0.1", stim.port)
    good = FrameEncoder(key).encode(frame_with(utah, make_frame, 30.0))
    bad_version = bytearray(good)
    bad_version[4] = 9
    forged = encode_frame(frame_with(utah, make_frame, 30.0), b"k" * 32, now_us())
    for junk in (b"x", b"NOPE" + good[4:], bytes(bad_version), good + b"\0", forged, good[:80]):
        tx.sendto(junk, addr)
    assert wait_for(lambda: stim.stats.received == 6)
    assert stim.stats.rejected == {
        "truncated": 2, "bad_magic": 1, "bad_version": 1, "bad_length": 1, "bad_mac": 1
    }  # fmt: skip
    with pytest.raises(TimeoutError):
        tx.recv(4096)
    assert stim.stats.acks_sent == 0
    good = FrameEncoder(key).encode(frame_with(utah, make_frame, 30.0))  # fresh again
    tx.sendto(good, addr)
    tx.sendto(good, addr)  # authenticated replay: signed nack
    from hardware.wire import decode_ack

    acks = [decode_ack(key, tx.recv(4096)) for _ in range(2)]
    assert [a.accepted for a in acks] == [True, False], (acks, stim.stats.rejected)
    assert acks[1].reason == "replay"
    tx.close()


def test_deadman_stop_is_due_at_the_deadline_never_before(utah, key, make_frame):
    """The mechanism, not its timing: each frame is valid for at most the interval from its
    arrival, the thread records the stop no earlier than validity end − margin, and there is
    one stop per silent period."""
    with SimulatedStimulator(
        "127.0.0.1", 0, key, SafetyLimits(), utah, deadman_ms=40, deadman_margin_ms=5
    ) as s:
        link = open_link(f"udp://127.0.0.1:{s.port}", key)
        for k in range(3):
            link.send(frame_with(utah, make_frame, 30.0, seq=k + 1))
            assert wait_for(lambda k=k: s.stats.deadman_stops == k + 1)
            valid_for = s.stats.last_valid_until_ns - s.stats.last_valid_ns
            assert 0 < valid_for <= 40_000_000
            assert s.stats.last_deadman_stop_ns >= s.stats.last_valid_until_ns - 5_000_000
            assert s.stats.last_stop_ns <= s.stats.last_valid_until_ns
            assert not s.output.active.any()
        link.close()


def test_a_frame_is_self_limiting_without_any_thread(utah, key, make_frame):
    """No receive thread runs here: the output falls to zero at the frame's validity end by
    construction (a late thread cannot keep current flowing)."""
    clock = [now_us()]
    s = _stim(utah, key, clock_us=lambda: clock[0])  # deadman 100 ms; floor: its start
    t = clock[0] = clock[0] + 200_000
    f = frame_with(utah, make_frame, 30.0)
    arrived = time.monotonic_ns()
    assert s.handle(encode_frame(f, key, t - 30_000), None, None)  # sent 30 ms ago
    assert s.output.active.any()
    valid_for = s.stats.last_valid_until_ns - arrived
    # 100 ms from the send, not from the arrival: 70 ms (+ the time handle() took) left.
    assert 70_000_000 <= valid_for <= 100_000_000
    # An arrival long ago (the thread stalled since): already zero, nothing had to run.
    assert s.handle(encode_frame(f, key, t - 1), None, None, received_ns=arrived - 200_000_000)
    assert s.stats.accepted == 2 and not s.output.active.any()


def test_a_frame_older_than_the_interval_never_stimulates(utah, key, make_frame):
    """Fresh enough to be accepted (250 ms window) but sent longer ago than the dead-man
    interval: its validity is already over when it arrives."""
    clock = [now_us()]
    s = _stim(utah, key, clock_us=lambda: clock[0])
    t = clock[0] = clock[0] + 200_000
    assert s.handle(encode_frame(frame_with(utah, make_frame, 30.0), key, t - 150_000), None, None)
    assert s.stats.accepted == 1 and not s.output.active.any()


def test_refuses_a_margin_not_below_the_interval(utah, key):
    with pytest.raises(ValueError, match="margin"):
        _stim(utah, key, deadman_margin_ms=100.0)
