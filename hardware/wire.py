"""The versioned binary wire format of stimulation frames, authenticated with HMAC-SHA256.

Wire format version 1 (all integers and floats big-endian, IEEE-754 float32):

    offset size field
    0      4    magic            b"NPSF"
    4      1    version          1
    5      1    waveform         1 = cathodic-first, symmetric (charge-balanced) biphasic;
                                 anything else is refused (no unbalanced pulses exist)
    6      1    flags            bit 0: all-zero (stop) frame
    7      1    reserved         0
    8      4    array_crc        CRC-32 of the array's electrode ids joined by "\\n"
                                 (a stimulator refuses frames meant for another array)
    12     8    wire_sequence    u64, the sender's wall-clock time of sending in µs since the
                                 Unix epoch, forced strictly increasing per sender (max(previous
                                 + 1, now)); it is both the anti-replay counter and the
                                 freshness timestamp, so a restarted sender stays above every
                                 sequence it sent before and a receiver can tell an old frame
    20     8    frame_sequence   u64, the pipeline's StimulationFrame.sequence (audit)
    28     8    timestamp_ns     i64, sender's monotonic clock when the frame was made
    36     2    n_electrodes     u16
    38     2    record_size      u16, 18 in version 1
    40     18×n per electrode, in the array's order:
                amplitude_ua f32, phase_width_us f32, interphase_gap_us f32,
                pulse_rate_hz f32, n_pulses u16
    40+18n 32   HMAC-SHA256(device key, bytes 0 .. 40+18n)

Acknowledgement (stimulator → sender), 48 bytes: magic b"NPSA", version u8, status u8
(0 accepted, 1 rejected), reason code u8 (index in REJECT_REASONS, 255 = none), reserved u8,
wire_sequence u64, HMAC-SHA256 over the first 16 bytes.

A receiver checks, in this order: length ≥ header (else "truncated"), magic, version, exact
length ("truncated"/"bad_length"), HMAC ("bad_mac", constant-time), waveform, array CRC,
freshness when it is given a window (`freshness_ms`: a send time more than the window before
its own clock is "stale", more than the window after it "future"), sequence strictly above
the last accepted one or the floor it started with ("replay"), and finally the `commit` hook
(the stimulator's durable anti-replay state, `hardware.replay`; "state_write_failed" if it
cannot be saved). The MAC is checked before any field is trusted. A datagram refused before
its MAC was verified (truncated, bad_magic, bad_version, bad_length, bad_mac) gets no reply
at all from the stimulator: a sender without the key learns nothing, not even why. Only an
authenticated frame is answered, with a signed ack or a signed nack naming the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from hardware import compiled as compiled_forms
from hardware.errors import HardwareError
from hardware.types import StimulationFrame


class KeyedMac(Protocol):
    """What the encoder needs of a keyed HMAC-SHA256 prototype: copies that hash a frame."""

    def copy(self) -> KeyedMac: ...
    def update(self, data: bytes | memoryview, /) -> None: ...
    def digest(self) -> bytes: ...


def mac_prototype(key: bytes) -> KeyedMac:
    """HMAC-SHA256 keyed with `key`, to be copied per frame (the key's pads hashed once).

    Where the standard library's `hmac.HMAC` wraps OpenSSL's own HMAC object (CPython keeps it
    as `_hmac`), that object is returned: the same bytes from the same OpenSSL call, without
    the three Python-level wrappers (`copy`, `update`, `digest`) per frame, which cost ~1.5 µs
    of the live path's cache-cold send (issue 17). Elsewhere the wrapper itself serves.
    """
    wrapper = hmac.new(key, digestmod=hashlib.sha256)
    inner = getattr(wrapper, "_hmac", None)
    if inner is not None and all(hasattr(inner, m) for m in ("copy", "update", "digest")):
        return cast(KeyedMac, inner)
    return cast(KeyedMac, wrapper)


MAGIC = b"NPSF"
ACK_MAGIC = b"NPSA"
WIRE_VERSION = 1
WAVEFORM_BIPHASIC_CATHODIC_FIRST = 1
FLAG_ZERO = 0x01
HEADER = struct.Struct(">4sBBBBIQQqHH")
RECORD = np.dtype([("amp", ">f4"), ("pw", ">f4"), ("gap", ">f4"), ("rate", ">f4"), ("n", ">u2")])
MAC_BYTES = 32
ACK = struct.Struct(">4sBBBBQ")
ACK_BYTES = ACK.size + MAC_BYTES

REJECT_REASONS = (
    "truncated",
    "bad_magic",
    "bad_version",
    "bad_length",
    "bad_mac",
    "bad_waveform",
    "array_mismatch",
    "replay",
    "stale",
    "future",
    "state_write_failed",
)

#: Reasons decided before the frame's MAC was verified: whoever sent it may not hold the key,
#: so the stimulator sends no reply for them (see the module docstring).
UNAUTHENTICATED_REASONS = frozenset(
    {"truncated", "bad_magic", "bad_version", "bad_length", "bad_mac"}
)

assert HEADER.size == 40 and RECORD.itemsize == 18


class WireError(HardwareError, ValueError):
    """A frame the receiver refuses; `reason` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def now_us() -> int:
    """Wall-clock time in µs since the Unix epoch: the time base of wire sequences."""
    return time.time_ns() // 1000


def ids_checksum(electrode_ids: tuple[str, ...]) -> int:
    """CRC-32 of the ordered electrode ids (same as ElectrodeArray.id_checksum)."""
    return zlib.crc32("\n".join(electrode_ids).encode())


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def encode_frame(frame: StimulationFrame, key: bytes, wire_sequence: int) -> bytes:
    """Serialise one frame (see the module docstring for the layout)."""
    n = frame.n_electrodes
    rec = np.empty(n, dtype=RECORD)
    rec["amp"] = frame.amplitude_ua
    rec["pw"] = frame.phase_width_us
    rec["gap"] = frame.interphase_gap_us
    rec["rate"] = frame.pulse_rate_hz
    rec["n"] = frame.n_pulses
    flags = 0 if bool(frame.active.any()) else FLAG_ZERO
    head = HEADER.pack(
        MAGIC,
        WIRE_VERSION,
        WAVEFORM_BIPHASIC_CATHODIC_FIRST,
        flags,
        0,
        ids_checksum(frame.electrode_ids),
        wire_sequence,
        frame.sequence,
        frame.timestamp_ns,
        n,
        RECORD.itemsize,
    )
    body = head + rec.tobytes()
    return body + _mac(key, body)


@dataclass(frozen=True)
class DecodedFrame:
    wire_sequence: int
    frame: StimulationFrame


class FrameEncoder:
    """Gives every frame a strictly increasing wire sequence (its send time in µs) and
    authenticates it.

    `encode_into` is the live path: the frame is written into a buffer preallocated for its
    array (header by `struct.pack_into`, records through numpy views of the buffer), one HMAC
    is computed from a copy of a keyed prototype (the key's pads are hashed once, not per
    frame) and its tag written in place; the caller sends the returned view with one
    syscall. The bytes are exactly `encode_frame`'s (wire format v1 is unchanged).
    """

    def __init__(self, key: bytes, clock_us: Callable[[], int] = now_us) -> None:
        self.key = key
        self.clock_us = clock_us
        self.last_sequence = 0
        self._mac_proto = mac_prototype(key)
        self._layout: _FrameBuffer | None = None
        compiled_forms.codec_module()  # loaded at the link's start, not at its first frame

    def encode(self, frame: StimulationFrame) -> bytes:
        """The next wire frame as an immutable copy (callers may keep it)."""
        return bytes(self.encode_into(frame))

    def encode_into(self, frame: StimulationFrame) -> memoryview:
        """The next wire frame, in this encoder's buffer: valid until the next call."""
        self.last_sequence = max(self.last_sequence + 1, self.clock_us())
        lay = self._layout
        if lay is None or lay.electrode_ids is not frame.electrode_ids:
            lay = self._layout = _FrameBuffer(frame.electrode_ids)
        return lay.fill(frame, self.last_sequence, self._mac_proto)


class _FrameBuffer:
    """One array's preallocated wire frame: the bytes, numpy views of each record field,
    and the scratch the zero-frame flag needs (`StimulationFrame.active`, without temporaries)."""

    def __init__(self, electrode_ids: tuple[str, ...]) -> None:
        self.electrode_ids = electrode_ids
        self.crc = ids_checksum(electrode_ids)
        n = self.n = len(electrode_ids)
        self.body_len = HEADER.size + n * RECORD.itemsize
        self.buf = bytearray(self.body_len + MAC_BYTES)
        self.view = memoryview(self.buf)
        self.body = self.view[: self.body_len]
        rec = np.frombuffer(self.buf, dtype=RECORD, count=n, offset=HEADER.size)
        self.fields = (rec["amp"], rec["pw"], rec["gap"], rec["rate"], rec["n"])
        self._a = np.empty(n, dtype=bool)
        self._b = np.empty(n, dtype=bool)
        self._zero32 = np.float32(0.0)
        self._zero16 = np.uint16(0)
        # The compiled form (hardware.fused_codec) writes the records into these bytes.
        self._codec = compiled_forms.codec_module()
        self._bytes = np.frombuffer(self.buf, dtype=np.uint8)

    def _active(self, frame: StimulationFrame) -> int:
        """Write the records; the number of electrodes with amplitude > 0 and pulses > 0."""
        codec = self._codec
        if codec is not None and frame.native:
            active = codec.wire_records(*frame.fields, self._bytes, HEADER.size)
            if active < 0:  # cannot happen for a valid frame of this layout's array
                raise WireError(f"frame of {frame.n_electrodes} electrodes does not fit its buffer")
            return int(active)
        amp, pw, gap, rate, pulses = self.fields
        # "unsafe", as `encode_frame`'s field assignment casts (a caller's int64 pulses).
        np.copyto(amp, frame.amplitude_ua, casting="unsafe")
        np.copyto(pw, frame.phase_width_us, casting="unsafe")
        np.copyto(gap, frame.interphase_gap_us, casting="unsafe")
        np.copyto(rate, frame.pulse_rate_hz, casting="unsafe")
        np.copyto(pulses, frame.n_pulses, casting="unsafe")
        # flags: all-zero frame iff no electrode has amplitude > 0 and pulses > 0.
        np.greater(frame.amplitude_ua, self._zero32, out=self._a)
        np.greater(frame.n_pulses, self._zero16, out=self._b)
        np.logical_and(self._a, self._b, out=self._a)
        return int(np.count_nonzero(self._a))

    def fill(self, frame: StimulationFrame, wire_sequence: int, proto: KeyedMac) -> memoryview:
        flags = 0 if self._active(frame) else FLAG_ZERO
        HEADER.pack_into(
            self.buf,
            0,
            MAGIC,
            WIRE_VERSION,
            WAVEFORM_BIPHASIC_CATHODIC_FIRST,
            flags,
            0,
            self.crc,
            wire_sequence,
            frame.sequence,
            frame.timestamp_ns,
            self.n,
            RECORD.itemsize,
        )
        h = proto.copy()
        h.update(self.body)
        self.view[self.body_len :] = h.digest()
        return self.view


class FrameVerifier:
    """Receiver side: authenticates, checks and decodes frames; counts rejections by reason.

    Args:
        key, electrode_ids: the device key and the array the receiver drives.
        freshness_ms: refuse frames whose send time (the wire sequence) is more than this
            far from `clock_us()`; None checks no freshness (decoding a recorded file later).
        floor: refuse every sequence ≤ this ("replay"), e.g. the durable high-water mark.
        clock_us: the receiver's wall clock in µs (injectable for tests).
        commit: called with a sequence after every other check passed and before it is
            accepted; raising OSError refuses the frame ("state_write_failed").
    """

    def __init__(
        self,
        key: bytes,
        electrode_ids: tuple[str, ...],
        *,
        freshness_ms: float | None = None,
        floor: int = -1,
        clock_us: Callable[[], int] = now_us,
        commit: Callable[[int], None] | None = None,
    ) -> None:
        if freshness_ms is not None and not freshness_ms > 0:
            raise ValueError(f"freshness window must be > 0 ms, got {freshness_ms}")
        self.key = key
        self.electrode_ids = electrode_ids
        self.crc = ids_checksum(electrode_ids)
        self.last_sequence = floor
        self.freshness_us = None if freshness_ms is None else int(freshness_ms * 1000)
        self.clock_us = clock_us
        self.commit = commit
        self.rejected: Counter[str] = Counter()
        self.accepted = 0

    def expected_length(self, header: bytes) -> int:
        n, rs = struct.unpack_from(">HH", header, 36)
        return HEADER.size + n * rs + MAC_BYTES

    def decode(self, data: bytes) -> DecodedFrame:
        """Verify and decode one datagram; raise WireError (and count it) if refused."""
        try:
            out = self._decode(data)
        except WireError as exc:
            self.rejected[exc.reason] += 1
            raise
        self.accepted += 1
        return out

    def _decode(self, data: bytes) -> DecodedFrame:
        if len(data) < HEADER.size:
            raise WireError("truncated", f"{len(data)} bytes, header needs {HEADER.size}")
        magic, version, waveform, _flags, _res, crc, wseq, fseq, ts, n, rs = HEADER.unpack_from(
            data
        )
        if magic != MAGIC:
            raise WireError("bad_magic", repr(magic))
        if version != WIRE_VERSION:
            raise WireError("bad_version", f"version {version}, this reader speaks {WIRE_VERSION}")
        want = HEADER.size + n * rs + MAC_BYTES
        if len(data) < want:
            raise WireError("truncated", f"{len(data)} of {want} bytes")
        if len(data) > want or rs != RECORD.itemsize:
            raise WireError("bad_length", f"{len(data)} bytes, record size {rs}")
        body, mac = data[: want - MAC_BYTES], data[want - MAC_BYTES :]
        if not hmac.compare_digest(mac, _mac(self.key, body)):
            raise WireError("bad_mac", "HMAC does not match this device's key")
        if waveform != WAVEFORM_BIPHASIC_CATHODIC_FIRST:
            raise WireError("bad_waveform", f"waveform code {waveform}")
        if crc != self.crc or n != len(self.electrode_ids):
            raise WireError("array_mismatch", f"frame for {n} electrodes / crc {crc:#x}")
        if self.freshness_us is not None:
            age_us = self.clock_us() - wseq
            if age_us > self.freshness_us:
                raise WireError(
                    "stale",
                    f"sent {age_us / 1000:.1f} ms ago, window {self.freshness_us / 1000:g} ms",
                )
            if -age_us > self.freshness_us:
                raise WireError("future", f"sent {-age_us / 1000:.1f} ms ahead of this clock")
        if wseq <= self.last_sequence:
            raise WireError("replay", f"sequence {wseq} ≤ last accepted {self.last_sequence}")
        if self.commit is not None:
            try:
                self.commit(wseq)
            except OSError as exc:
                raise WireError("state_write_failed", str(exc)) from exc
        self.last_sequence = wseq
        rec = np.frombuffer(body, dtype=RECORD, count=n, offset=HEADER.size)
        frame = StimulationFrame(
            sequence=fseq,
            timestamp_ns=ts,
            electrode_ids=self.electrode_ids,
            amplitude_ua=rec["amp"].astype(np.float32),
            phase_width_us=rec["pw"].astype(np.float32),
            interphase_gap_us=rec["gap"].astype(np.float32),
            pulse_rate_hz=rec["rate"].astype(np.float32),
            n_pulses=rec["n"].astype(np.uint16),
        )
        return DecodedFrame(wseq, frame)


class StreamDecoder:
    """Reassembles wire frames from a byte stream (serial line, file sink).

    `feed(data)` returns, in order, a DecodedFrame or a WireError for every complete frame;
    after garbage or a bad frame it resynchronises on the next magic.
    """

    def __init__(self, verifier: FrameVerifier, max_buffer: int = 1 << 20) -> None:
        self.verifier = verifier
        self.buf = bytearray()
        self.max_buffer = max_buffer

    def feed(self, data: bytes) -> list[DecodedFrame | WireError]:
        self.buf += data
        out: list[DecodedFrame | WireError] = []
        while True:
            start = self.buf.find(MAGIC)
            if start < 0:
                del self.buf[: max(0, len(self.buf) - len(MAGIC) + 1)]
                return out
            if start > 0:
                del self.buf[:start]
            if len(self.buf) < HEADER.size:
                return out
            want = self.verifier.expected_length(bytes(self.buf[: HEADER.size]))
            if want > self.max_buffer:
                out.append(WireError("bad_length", f"claims {want} bytes"))
                self.verifier.rejected["bad_length"] += 1
                del self.buf[: len(MAGIC)]
                continue
            if len(self.buf) < want:
                return out
            chunk = bytes(self.buf[:want])
            try:
                out.append(self.verifier.decode(chunk))
                del self.buf[:want]
            except WireError as exc:
                out.append(exc)
                del self.buf[: len(MAGIC)]

    def finish(self) -> list[WireError]:
        """At end of stream: a partial frame left in the buffer is a truncated frame."""
        if self.buf.find(MAGIC) >= 0:
            self.verifier.rejected["truncated"] += 1
            self.buf.clear()
            return [WireError("truncated", "stream ended inside a frame")]
        return []


def encode_ack(key: bytes, wire_sequence: int, accepted: bool, reason: str | None) -> bytes:
    code = REJECT_REASONS.index(reason) if reason in REJECT_REASONS else 255
    head = ACK.pack(ACK_MAGIC, WIRE_VERSION, 0 if accepted else 1, code, 0, wire_sequence)
    return head + _mac(key, head)


@dataclass(frozen=True)
class Ack:
    wire_sequence: int
    accepted: bool
    reason: str | None


def decode_ack(key: bytes, data: bytes, proto: KeyedMac | None = None) -> Ack:
    """Verify an acknowledgement; WireError if it is not one from the stimulator.

    proto: `mac_prototype(key)`, made once by a caller that checks
    many acks (its copy skips hashing the key's pads per ack)."""
    if len(data) != ACK_BYTES:
        raise WireError("bad_length", f"ack of {len(data)} bytes")
    head, mac = data[: ACK.size], data[ACK.size :]
    if proto is None:
        want = _mac(key, head)
    else:
        h = proto.copy()
        h.update(head)
        want = h.digest()
    if not hmac.compare_digest(mac, want):
        raise WireError("bad_mac", "ack HMAC does not match")
    magic, version, status, code, _r, seq = ACK.unpack(head)
    if magic != ACK_MAGIC or version != WIRE_VERSION:
        raise WireError("bad_magic", "not an ack")
    return Ack(seq, status == 0, REJECT_REASONS[code] if code < len(REJECT_REASONS) else None)
