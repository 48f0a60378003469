"""Wire format round trip and rejection of altered, unauthenticated, replayed and truncated
frames; the UDP, serial (loop:// and a real pty pair) and file transports."""

from __future__ import annotations

import os
import socket
import struct

import numpy as np
import pytest

from hardware.link import LinkError, open_link
from hardware.wire import (
    HEADER,
    MAC_BYTES,
    FrameEncoder,
    FrameVerifier,
    StreamDecoder,
    WireError,
    decode_ack,
    encode_ack,
    encode_frame,
)

#: Every test here runs in both forms of the per-bin work (compiled and numpy; conftest).
pytestmark = pytest.mark.usefixtures("form")


def sample_frame(array, make_frame, seq=7):
    rng = np.random.default_rng(seq)
    amp = np.where(rng.random(array.n) < 0.2, rng.uniform(10, 90, array.n), 0.0)
    return make_frame(array, amp=amp, pw=170.0, gap=50.0, rate=300.0, pulses=3, sequence=seq)


def assert_same(a, b):
    assert a.sequence == b.sequence and a.timestamp_ns == b.timestamp_ns
    assert a.electrode_ids == b.electrode_ids
    for k in ("amplitude_ua", "phase_width_us", "interphase_gap_us", "pulse_rate_hz", "n_pulses"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_round_trip(utah, key, make_frame):
    frame = sample_frame(utah, make_frame)
    data = encode_frame(frame, key, wire_sequence=1000)
    assert len(data) == HEADER.size + 18 * utah.n + MAC_BYTES
    decoded = FrameVerifier(key, utah.electrode_ids).decode(data)
    assert decoded.wire_sequence == 1000
    assert_same(decoded.frame, frame)


def test_rejects_other_key_altered_and_bad_header(utah, key, make_frame):
    v = FrameVerifier(key, utah.electrode_ids)
    data = encode_frame(sample_frame(utah, make_frame), key, 5)
    with pytest.raises(WireError) as e:
        v.decode(encode_frame(sample_frame(utah, make_frame), b"x" * 32, 6))
    assert e.value.reason == "bad_mac"
    for pos in (HEADER.size + 1, 20, len(data) - 1):  # amplitude byte, sequence, MAC itself
        altered = bytearray(data)
        altered[pos] ^= 0x40
        with pytest.raises(WireError) as e:
            v.decode(bytes(altered))
        assert e.value.reason == "bad_mac"
    with pytest.raises(WireError) as e:
        v.decode(b"XXXX" + data[4:])
    assert e.value.reason == "bad_magic"
    with pytest.raises(WireError) as e:
        v.decode(data[:4] + b"\x02" + data[5:])
    assert e.value.reason == "bad_version"
    with pytest.raises(WireError) as e:
        v.decode(data + b"\x00")
    assert e.value.reason == "bad_length"
    assert v.rejected == {"bad_mac": 4, "bad_magic": 1, "bad_version": 1, "bad_length": 1}
    assert v.decode(data).wire_sequence == 5  # the genuine frame still passes


def test_rejects_truncated(utah, key, make_frame):
    v = FrameVerifier(key, utah.electrode_ids)
    data = encode_frame(sample_frame(utah, make_frame), key, 5)
    for cut in (0, 10, HEADER.size, HEADER.size + 100, len(data) - 1):
        with pytest.raises(WireError) as e:
            v.decode(data[:cut])
        assert e.value.reason == "truncated"
    assert v.rejected["truncated"] == 5 and v.accepted == 0


def test_rejects_replay_and_old_sequence(utah, key, make_frame):
    v = FrameVerifier(key, utah.electrode_ids)
    enc = FrameEncoder(key)
    f1, f2 = (
        enc.encode(sample_frame(utah, make_frame, 1)),
        enc.encode(sample_frame(utah, make_frame, 2)),
    )
    v.decode(f1)
    v.decode(f2)
    for old in (f1, f2):
        with pytest.raises(WireError) as e:
            v.decode(old)
        assert e.value.reason == "replay"
    # A restarted sender starts above every earlier sequence (wall-clock µs base).
    assert (
        FrameVerifier(key, utah.electrode_ids).decode(
            FrameEncoder(key).encode(sample_frame(utah, make_frame))
        )
        is not None
    )
    v.decode(FrameEncoder(key).encode(sample_frame(utah, make_frame, 3)))


def test_rejects_foreign_array_and_unbalanced_waveform(utah, orion, key, make_frame):
    v = FrameVerifier(key, utah.electrode_ids)
    with pytest.raises(WireError) as e:
        v.decode(encode_frame(sample_frame(orion, make_frame), key, 9))
    assert e.value.reason == "array_mismatch"
    data = bytearray(encode_frame(sample_frame(utah, make_frame), key, 10))
    data[5] = 2  # some other waveform (e.g. monophasic), re-authenticated by a key holder
    import hashlib
    import hmac

    body = bytes(data[:-MAC_BYTES])
    forged = body + hmac.new(key, body, hashlib.sha256).digest()
    with pytest.raises(WireError) as e:
        v.decode(forged)
    assert e.value.reason == "bad_waveform"


def test_ack_round_trip_and_forgery(key):
    ack = decode_ack(key, encode_ack(key, 42, False, "replay"))
    assert (ack.wire_sequence, ack.accepted, ack.reason) == (42, False, "replay")
    with pytest.raises(WireError):
        decode_ack(key, encode_ack(b"y" * 32, 42, True, None))


def test_stream_decoder_resyncs_after_garbage_and_truncation(utah, key, make_frame):
    v = FrameVerifier(key, utah.electrode_ids)
    enc = FrameEncoder(key)
    frames = [sample_frame(utah, make_frame, s) for s in (1, 2, 3)]
    wire = [enc.encode(f) for f in frames]
    stream = b"noise" + wire[0] + wire[1][:100] + wire[2] + b"NPSF" + wire[2][4:30]
    dec = StreamDecoder(v)
    out = []
    for i in range(0, len(stream), 37):  # arbitrary chunking, as a serial port delivers
        out += dec.feed(stream[i : i + 37])
    out += dec.finish()
    good = [o for o in out if not isinstance(o, WireError)]
    assert [g.frame.sequence for g in good] == [1, 3]
    assert_same(good[1].frame, frames[2])
    assert any(isinstance(o, WireError) for o in out)
    assert v.rejected["truncated"] == 1


def test_udp_link_sends_authenticated_frames(utah, key, make_frame):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2.0)
    link = open_link(f"udp://127.0.0.1:{rx.getsockname()[1]}", key)
    v = FrameVerifier(key, utah.electrode_ids)
    try:
        for s in (1, 2, 3):
            link.send(sample_frame(utah, make_frame, s))
        got = [v.decode(rx.recv(65535)).frame.sequence for _ in range(3)]
    finally:
        link.close()
        rx.close()
    assert got == [1, 2, 3] and link.stats.sent == 3


def test_udp_link_hears_only_its_stimulator_and_counts_a_silent_one(utah, key, make_frame):
    """The link's socket is connected to the stimulator: a datagram from anyone else never
    reaches its ack reader, and frames to a port where nothing listens are counted as send
    errors (the kernel's "port unreachable"), not lost in silence."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    link = open_link(f"udp://127.0.0.1:{rx.getsockname()[1]}", key)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        link.send(sample_frame(utah, make_frame, 1))
        stranger.sendto(b"\x00" * 60, link.sock.getsockname())  # would count as a bad ack
        rx.close()  # the stimulator goes away
        for s in range(2, 6):
            link.send(sample_frame(utah, make_frame, s))
        link.poll()
    finally:
        link.close()
        stranger.close()
    assert link.stats.bad_acks == 0
    assert link.stats.sent >= 1 and link.stats.send_errors >= 1
    assert link.stats.sent + link.stats.send_errors == 5


def test_udp_link_to_a_host_that_does_not_resolve_is_one_line(key):
    with pytest.raises(LinkError, match="cannot reach the stimulator") as err:
        open_link("udp://no-such-host.invalid:9000", key)
    assert "\n" not in str(err.value)


def test_serial_link_loop_url(utah, key, make_frame):
    link = open_link("serial://loop://", key)
    frame = sample_frame(utah, make_frame)
    link.send(frame)
    data = link.port.read(4096)  # loop:// echoes what was written
    link.close()
    out = StreamDecoder(FrameVerifier(key, utah.electrode_ids)).feed(data)
    assert len(out) == 1 and not isinstance(out[0], WireError)
    assert_same(out[0].frame, frame)


def test_serial_link_over_pty_pair(utah, key, make_frame):
    import termios
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    termios.tcsetattr(slave, termios.TCSANOW, termios.tcgetattr(slave))
    link = open_link(f"serial://{os.ttyname(slave)}?baud=3000000", key)
    frames = [sample_frame(utah, make_frame, s) for s in (4, 5)]
    dec = StreamDecoder(FrameVerifier(key, utah.electrode_ids))
    out = []
    try:
        for f in frames:
            link.send(f)
        import select

        while len(out) < 2:
            ready, _, _ = select.select([master], [], [], 10.0)
            assert ready, "nothing arrived on the pty"
            out += dec.feed(os.read(master, 4096))
    finally:
        link.close()
        os.close(master)
        os.close(slave)
    assert [o.frame.sequence for o in out] == [4, 5]


def test_file_sink_and_bad_specs(utah, key, make_frame, tmp_path):
    path = tmp_path / "frames.bin"
    link = open_link(f"file://{path}", key)
    for s in (1, 2):
        link.send(sample_frame(utah, make_frame, s))
    link.close()
    out = StreamDecoder(FrameVerifier(key, utah.electrode_ids)).feed(path.read_bytes())
    assert [o.frame.sequence for o in out] == [1, 2]
    for spec in ("tcp://x:1", "udp://nohost", "serial://", "file://"):
        with pytest.raises(LinkError):
            open_link(spec, key)
    with pytest.raises(LinkError, match="cannot open serial port"):
        open_link("serial:///dev/does-not-exist", key)
    with pytest.raises(LinkError, match="too short"):
        open_link(f"file://{path}", b"short")
    assert struct.calcsize(">H") == 2


def test_encode_into_writes_exactly_encode_frames_bytes(utah, orion, key, make_frame):
    """The preallocated live path (`FrameEncoder.encode_into`) and the reference
    `encode_frame` give the same bytes, frame after frame and across arrays, for ordinary,
    zero and adversarial values; the buffer is reused, `encode` returns a copy."""
    clock = iter(range(10_000, 20_000))
    enc = FrameEncoder(key, clock_us=lambda: next(clock))
    rng = np.random.default_rng(11)
    views = set()
    for i in range(12):
        array = orion if i % 5 == 4 else utah
        frame = sample_frame(array, make_frame, seq=i + 1)
        if i % 3 == 1:
            frame.amplitude_ua[rng.integers(0, array.n, 3)] = [np.nan, -1.0, np.inf]
        if i % 4 == 2:
            frame = make_frame(array, amp=0.0, sequence=i + 1)  # a stop frame (flag set)
        view = enc.encode_into(frame)
        assert bytes(view) == encode_frame(frame, key, enc.last_sequence)
        views.add(id(enc._layout))
        kept = enc.encode(frame)
        assert kept == encode_frame(frame, key, enc.last_sequence) and isinstance(kept, bytes)
    assert len(views) > 1  # a new buffer when the array changes, reused otherwise
    flags = encode_frame(make_frame(utah, amp=0.0), key, 1)[6]
    assert flags & 0x01


def test_udp_link_sends_one_datagram_per_frame_and_counts_acks_on_close(utah, key, make_frame):
    """One send per frame on the connected socket; the acks, read every few sends, are all
    counted by close()."""
    from hardware.safety import SafetyLimits
    from hardware.stimulator import SimulatedStimulator

    stim = SimulatedStimulator("127.0.0.1", 0, key, SafetyLimits(), utah)
    stim.start()
    try:
        link = open_link(f"udp://127.0.0.1:{stim.port}", key)
        calls = []

        class CountingSocket:  # the real socket, with its send calls recorded
            def __init__(self, sock):
                self._sock = sock

            def send(self, data):
                calls.append(len(data))
                return self._sock.send(data)

            def __getattr__(self, name):
                return getattr(self._sock, name)

        link.sock = CountingSocket(link.sock)
        for i in range(5):
            link.send(sample_frame(utah, make_frame, seq=i + 1))
        assert calls == [HEADER.size + 18 * utah.n + MAC_BYTES] * 5
        import time

        deadline = time.monotonic() + 5
        while stim.stats.acks_sent < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        link.close()
        assert link.stats.sent == 5 and link.stats.acks == 5 and link.stats.bad_acks == 0
        assert stim.stats.received == 5 and stim.stats.accepted == 5
    finally:
        stim.stop()


def test_mac_prototype_copies_give_the_standard_hmac_and_leave_it_unchanged(key):
    import hashlib
    import hmac

    from hardware.wire import mac_prototype

    proto = mac_prototype(key)
    for msg in (b"", b"frame one", bytes(range(256)) * 7):
        h = proto.copy()
        h.update(memoryview(msg))
        assert h.digest() == hmac.new(key, msg, hashlib.sha256).digest()
    other = mac_prototype(b"another key of 32 bytes........")
    h = other.copy()
    h.update(b"frame one")
    assert h.digest() != hmac.new(key, b"frame one", hashlib.sha256).digest()


def test_a_link_polled_by_its_caller_never_reads_acks_inside_send(utah, key, make_frame):
    """`send` reads the acks itself only when nobody polled for POLL_EVERY sends: the live
    loop polls after each frame is out, so its timed sends never pay for the acks."""
    from hardware.link import POLL_EVERY

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    link = open_link(f"udp://127.0.0.1:{rx.getsockname()[1]}", key)
    reads: list[str] = []
    inner = link._read_acks
    in_send = [False]

    def counted() -> None:
        reads.append("send" if in_send[0] else "caller")
        inner()

    link._read_acks = counted  # type: ignore[method-assign]
    send = link.send

    def timed_send(frame) -> None:
        in_send[0] = True
        try:
            send(frame)
        finally:
            in_send[0] = False

    try:
        timed_send(sample_frame(utah, make_frame, 1))  # the first send reads at once
        assert reads == ["send"]
        for s in range(2, 2 + 5 * POLL_EVERY):  # polled every POLL_EVERY - 1 sends
            timed_send(sample_frame(utah, make_frame, s))
            if s % (POLL_EVERY - 1) == 0:
                link.poll()
        assert reads.count("send") == 1 and reads.count("caller") >= 5
        reads.clear()
        for s in range(100, 100 + POLL_EVERY):  # nobody polls: send reads them itself
            timed_send(sample_frame(utah, make_frame, s))
        assert reads == ["send"]
    finally:
        link.close()
        rx.close()
