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
from hardware.wire import FrameEncoder, encode_frame


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
    good = encode_frame(frame_with(utah, make_frame, 30.0), key, 10)
    tx.sendto(good, addr)
    tx.sendto(good, addr)  # replay
    tx.sendto(encode_frame(frame_with(utah, make_frame, 30.0), b"k" * 32, 11), addr)  # other key
    altered = bytearray(encode_frame(frame_with(utah, make_frame, 30.0), key, 12))
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


def test_a_burst_that_outruns_the_stimulator_waits_instead_of_being_lost(
    stim, utah, key, make_frame
):
    """A replay as fast as possible can outrun it; its receive buffer holds the burst."""
    n = 400  # 1.8 kB datagrams: far more than the ~60 a default receive buffer holds
    if stim.receive_buffer_bytes < n * 4096:
        pytest.skip(f"the OS grants only {stim.receive_buffer_bytes} B (net.core.rmem_max)")
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = ("127.0.0.1", stim.port)
    with stim._lock:  # the receive thread stops at its first frame: the rest must queue
        for seq in range(1, n + 1):
            tx.sendto(encode_frame(frame_with(utah, make_frame, 30.0, seq=seq), key, seq), addr)
        time.sleep(0.05)
        assert stim.stats.accepted == 0
    assert wait_for(lambda: stim.stats.accepted == n)
    assert stim.stats.rejected == {} and stim.stats.last_frame_sequence == n
    tx.close()
