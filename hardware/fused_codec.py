"""A frame's wire records and audit entries in one compiled loop each (numba; issue 17).

Why: the wire encoder and the audit log each turned a frame into big-endian records with
~10–16 numpy calls per bin (copies into field views, masks, a count, a gather), 15 and 14 µs
in the live loop, for a few hundred bytes. Here each is one loop that reads the five fields
once and writes the bytes, returning what the caller needs (the number of stimulating
electrodes, for the wire's all-zero flag; the number of entries, for the audit record).

Bytes are exactly the numpy forms': every float is copied by its bit pattern (NaN payloads
and signed zeros included), written most significant byte first; the tests compare both
forms with the reference encoders (`hardware.wire.encode_frame`, the straightforward audit
entries). Only exactly typed fields come here (float32 and uint16, C-contiguous); anything
else takes the numpy form, which casts as `encode_frame` does.
"""

from __future__ import annotations

from typing import Any

import numba

__all__ = ["audit_entries", "count_active", "wire_records"]

_FIELDS = "f4[::1], f4[::1], f4[::1], f4[::1], u2[::1], u1[::1], i8"


def _compile(signature: str) -> Any:
    """Compiled at import for exactly this signature, cached on disk, no fast-math."""
    return numba.njit([signature], cache=True, nogil=True)


@numba.njit(inline="always")
def _bits(amp: Any, pw: Any, gap: Any, rate: Any) -> Any:
    """The four float32 fields as their uint32 bit patterns (views: NaN payloads and -0.0 kept)."""
    u4 = numba.uint32
    return amp.view(u4), pw.view(u4), gap.view(u4), rate.view(u4)


@numba.njit(inline="always")
def _put_fields(out: Any, o: int, a: Any, p: Any, g: Any, r: Any, pulses: Any) -> int:
    """Four float32 bit patterns and one uint16, big-endian, from out[o]; the next offset."""
    for v in (a, p, g, r):
        out[o] = (v >> 24) & 0xFF
        out[o + 1] = (v >> 16) & 0xFF
        out[o + 2] = (v >> 8) & 0xFF
        out[o + 3] = v & 0xFF
        o += 4
    out[o] = (pulses >> 8) & 0xFF
    out[o + 1] = pulses & 0xFF
    return o + 2


@_compile(f"b1({_FIELDS}, i8)")
def _fits(amp: Any, pw: Any, gap: Any, rate: Any, n: Any, out: Any, offset: int, size: int) -> bool:
    """Whether five fields of one length fit, `size` bytes each, from out[offset]."""
    m = amp.shape[0]
    same = pw.shape[0] == m and gap.shape[0] == m and rate.shape[0] == m and n.shape[0] == m
    return same and offset >= 0 and out.shape[0] >= offset + size * m


@_compile(f"i8({_FIELDS})")
def wire_records(amp: Any, pw: Any, gap: Any, rate: Any, n: Any, out: Any, offset: int) -> int:
    """Records (>f4 amp, pw, gap, rate, >u2 pulses; 18 bytes) from out[offset]; returns the
    number of electrodes with amplitude > 0 and pulses > 0; -1 (nothing written) if the
    fields' lengths differ or `out` is too short (numba does not check bounds)."""
    if not _fits(amp, pw, gap, rate, n, out, offset, 18):
        return -1
    a32, p32, g32, r32 = _bits(amp, pw, gap, rate)
    active = 0
    o = offset
    for i in range(amp.shape[0]):
        o = _put_fields(out, o, a32[i], p32[i], g32[i], r32[i], n[i])
        if amp[i] > 0 and n[i] > 0:
            active += 1
    return active


@_compile(f"i8({_FIELDS})")
def audit_entries(amp: Any, pw: Any, gap: Any, rate: Any, n: Any, out: Any, offset: int) -> int:
    """Entries (>u2 index, >f4 amp, pw, gap, rate, >u2 pulses; 20 bytes) of the electrodes with
    any non-zero field (NaN is non-zero: a NaN that was sent is logged), from out[offset];
    returns their number; -1 (nothing written) if the fields' lengths differ or `out` is too
    short for every electrode's entry."""
    if not _fits(amp, pw, gap, rate, n, out, offset, 20):
        return -1
    a32, p32, g32, r32 = _bits(amp, pw, gap, rate)
    rows = 0
    o = offset
    for i in range(amp.shape[0]):
        if amp[i] != 0 or pw[i] != 0 or gap[i] != 0 or rate[i] != 0 or n[i] != 0:
            out[o] = (i >> 8) & 0xFF
            out[o + 1] = i & 0xFF
            o = _put_fields(out, o + 2, a32[i], p32[i], g32[i], r32[i], n[i])
            rows += 1
    return rows


@_compile("i8(f4[::1], u2[::1])")
def count_active(amp: Any, n: Any) -> int:
    """Electrodes with amplitude > 0 and pulses > 0 (`StimulationFrame.active`'s count)."""
    active = 0
    for i in range(min(amp.shape[0], n.shape[0])):
        if amp[i] > 0 and n[i] > 0:
            active += 1
    return active
