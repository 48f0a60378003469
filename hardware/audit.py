"""The append-only audit log: every stimulation frame sent and every safety event.

File layout (version 1, big-endian; version 2 = the same plus implant records, below):

    file header, 16 bytes: b"NPEAUDIT", u16 version = 1 or 2, 6 zero bytes
    records, back to back:
        u32 length of payload
        u32 CRC-32 of payload
        payload:
            u8  type       1 session, 2 frame, 3 event, 4 array frame (version 2)
            u64 sequence   strictly +1 per record across the whole file (sessions continue it)
            u64 monotonic_ns   time.monotonic_ns() when written
            i64 wall_ns        time.time_ns() when written
            body:
              session: UTF-8 JSON {"pid", "array" (array file JSON or null),
                       "limits" (SafetyLimits JSON or null), "note"}
              frame:   u64 frame sequence, i64 frame timestamp_ns, u16 n electrodes,
                       u16 m entries, u32 ids CRC-32, then m × (u16 electrode index,
                       f32 amplitude µA, f32 phase µs, f32 gap µs, f32 rate Hz, u16 pulses)
                       for every electrode with any non-zero field (all others are all-zero):
                       lossless, and ~6× smaller than all 96 (16 active at most)
              event:   UTF-8 JSON {"kind", "detail"} (+ "array": label, for an implant's array)
              array frame: u16 array index (in the session's implant), then a frame body

Implants (issue 17): a log opened for an implant of several arrays is version 2. Its session
record also holds "implant" (`hardware.implant.ImplantRecord`: every array's document with its
placement, and the implant-wide limits); each bin's frames are written as one array-frame
record per array, in the implant's order and back to back, so `inspect_log` can check each
array's frames with `check_frame`, each array's frame sequence for continuity, and every bin's
frames together against the implant-wide caps. Why a new version rather than a new record type
alone: a reader of version 1 would report the array frames as corrupt bytes; it now says it
cannot read version 2.

Why it survives kill -9: the file is opened O_APPEND and each record is written with a
single write(2) of the complete bytes, so a killed writer leaves at most one partial record
at the end; the length+CRC framing lets a reader detect it and every earlier record stays
valid. (Surviving power loss additionally needs `fsync=True`, at a cost per record.)
Re-opening a log continues its sequence numbers; a torn record left by a crash stays in the
file (nothing is ever rewritten) and `inspect_log` reports it as such.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from hardware import compiled as compiled_forms
from hardware.arrays import ElectrodeArray, parse_array
from hardware.errors import HardwareError
from hardware.safety import HARDWARE_LIMITS, SafetyLimits, check_frame
from hardware.types import StimulationFrame
from hardware.wire import RECORD, ids_checksum

if TYPE_CHECKING:
    from hardware.implant import Implant

FILE_MAGIC = b"NPEAUDIT"
LOG_VERSION = 1
#: Version of logs that hold implant (array-frame) records; readers accept both.
IMPLANT_LOG_VERSION = 2
READ_VERSIONS = (LOG_VERSION, IMPLANT_LOG_VERSION)
ARRAY_INDEX = struct.Struct(">H")
FILE_HEADER = struct.Struct(">8sH6x")
REC_HEAD = struct.Struct(">II")
PAYLOAD_HEAD = struct.Struct(">BQQq")
FRAME_HEAD = struct.Struct(">QqHHI")
ENTRY = np.dtype(
    [("i", ">u2"), ("amp", ">f4"), ("pw", ">f4"), ("gap", ">f4"), ("rate", ">f4"), ("n", ">u2")]
)
MAX_PAYLOAD = 1 << 22
TYPE_SESSION, TYPE_FRAME, TYPE_EVENT, TYPE_ARRAY_FRAME = 1, 2, 3, 4
TYPE_NAMES = {
    TYPE_SESSION: "session",
    TYPE_FRAME: "frame",
    TYPE_EVENT: "event",
    TYPE_ARRAY_FRAME: "array frame",
}
#: Event kind: a run used a signed deployment package (detail: path, key id, manifest sha256).
EVENT_PACKAGE_VERIFIED = "package_verified"
#: Event kind: a run used unsigned inputs under `npe run --dev-unsigned` (a development run;
#: a prosthesis computer refuses unsigned input without it).
EVENT_DEV_UNSIGNED = "dev_unsigned"
#: Event kind: the bundle a run loaded (detail: path and bundle digest). Why: the manifest's
#: own seal proves integrity only; this digest, compared with a pinned or signed one, is what
#: says afterwards which model drove the electrodes.
EVENT_BUNDLE_LOADED = "bundle_loaded"


class AuditError(HardwareError, OSError):
    """An audit log that cannot be opened or is not an npe audit log."""


class EventSink(Protocol):
    """What a pipeline logs its safety events into: an `AuditLog`, or one array's view of it."""

    def event(self, kind: str, detail: str) -> None: ...


class ArrayEvents:
    """One implant array's view of the audit log: its events carry the array's label."""

    def __init__(self, log: AuditLog, label: str) -> None:
        self.log = log
        self.label = label

    def event(self, kind: str, detail: str) -> None:
        self.log.array_event(self.label, kind, detail)


class AuditLog:
    """Append-only writer. One write(2) per record; sequence numbers continue across opens.

    Args:
        path: log file (created with its header if missing).
        array, limits: recorded in the session record so `inspect_log` can check every frame
            against the limits that were in force, and `npe preview` knows the geometry.
        fsync: fsync after every record (power-loss safety; slower).
        implant: the implant of a multi-array run (instead of `array`): the log is version
            2, its session record holds the implant, and frames go in with `array_frame`.
    """

    def __init__(
        self,
        path: str | Path,
        array: ElectrodeArray | None = None,
        limits: SafetyLimits | None = None,
        *,
        fsync: bool = False,
        note: str = "",
        implant: Implant | None = None,
    ) -> None:
        self.path = Path(path)
        self.implant = implant
        self.fsync = fsync
        self.sequence = 0
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                head = fh.read(FILE_HEADER.size)
            if len(head) < FILE_HEADER.size or head[:8] != FILE_MAGIC:
                raise AuditError(f"{self.path}: exists and is not an npe audit log")
            version = FILE_HEADER.unpack(head)[1]
            if implant is not None and version != IMPLANT_LOG_VERSION:
                raise AuditError(
                    f"{self.path}: a version-{version} (single-array) log; an implant run "
                    "needs a new log file"
                )
            last = -1
            for rec in iter_records(self.path):
                if isinstance(rec, Record):
                    last = rec.sequence
            self.sequence = last + 1
            new = False
        else:
            new = True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot open audit log ({exc})") from exc
        if new:
            version = LOG_VERSION if implant is None else IMPLANT_LOG_VERSION
            os.write(self.fd, FILE_HEADER.pack(FILE_MAGIC, version))
        # Load the compiled frame codec now (numba's import and cache: ~0.3–1 s), not on the
        # first frame: a stimulator's first frames would wait that long and arrive stale.
        compiled_forms.codec_module()
        self._ids_crc: dict[tuple[str, ...], int] = {}
        # Preallocated frame-entry tables, one per frame slot (-1: the single-array frame,
        # i ≥ 0: array i of the implant), rebuilt only when a slot's electrode ids change.
        self._layouts: dict[int, _FrameEntries] = {}
        session: dict[str, Any] = {
            "pid": os.getpid(),
            "array": json.loads(array.to_json()) if array is not None else None,
            "limits": json.loads(limits.model_dump_json()) if limits is not None else None,
            "note": note,
        }
        if implant is not None:
            session["implant"] = json.loads(implant.to_record().model_dump_json())
        self._write(TYPE_SESSION, json.dumps(session).encode())

    def _write(self, rtype: int, body: bytes) -> None:
        if self.fd is None:
            raise AuditError(f"{self.path}: audit log is closed")
        payload = (
            PAYLOAD_HEAD.pack(rtype, self.sequence, time.monotonic_ns(), time.time_ns()) + body
        )
        os.write(self.fd, REC_HEAD.pack(len(payload), zlib.crc32(payload)) + payload)
        if self.fsync:
            os.fsync(self.fd)
        self.sequence += 1

    def frame(self, frame: StimulationFrame) -> None:
        """Record one stimulation frame as sent."""
        lay = self._layout(-1, frame)
        if lay.codec is not None and frame.native:
            self._write_in_place(lay, TYPE_FRAME, None, frame)
        else:
            self._write(TYPE_FRAME, self._frame_body(lay, frame))

    def array_frame(self, index: int, frame: StimulationFrame) -> None:
        """Record the frame sent to array `index` of the session's implant."""
        if self.implant is None:
            raise AuditError(f"{self.path}: array frames need a log opened for an implant")
        lay = self._layout(index, frame)
        if lay.codec is not None and frame.native:
            self._write_in_place(lay, TYPE_ARRAY_FRAME, index, frame)
        else:
            self._write(TYPE_ARRAY_FRAME, ARRAY_INDEX.pack(index) + self._frame_body(lay, frame))

    def _write_in_place(
        self, lay: _FrameEntries, rtype: int, index: int | None, frame: StimulationFrame
    ) -> None:
        """The record of one frame, built in its slot's preallocated buffer and written with
        one call: the compiled entries (hardware.fused_codec), then the heads packed in front
        of them and the CRC over the payload. Same bytes as `_write(rtype, body)`."""
        if self.fd is None:
            raise AuditError(f"{self.path}: audit log is closed")
        assert lay.codec is not None
        rows = lay.codec.audit_entries(*frame.fields, lay.bytes, lay.entries_at)
        if rows < 0:  # cannot happen for a valid frame of this slot's array
            raise AuditError(f"{self.path}: frame does not fit its record buffer")
        buf = lay.buf
        end = lay.entries_at + rows * ENTRY.itemsize
        at = REC_HEAD.size
        PAYLOAD_HEAD.pack_into(buf, at, rtype, self.sequence, time.monotonic_ns(), time.time_ns())
        at += PAYLOAD_HEAD.size
        if index is not None:
            ARRAY_INDEX.pack_into(buf, at, index)
            at += ARRAY_INDEX.size
        FRAME_HEAD.pack_into(
            buf, at, frame.sequence, frame.timestamp_ns, frame.n_electrodes, rows, lay.crc
        )
        REC_HEAD.pack_into(buf, 0, end - REC_HEAD.size, zlib.crc32(lay.view[REC_HEAD.size : end]))
        os.write(self.fd, lay.view[:end])
        if self.fsync:
            os.fsync(self.fd)
        self.sequence += 1

    def array_event(self, label: str, kind: str, detail: str) -> None:
        """Record an event of one array of the implant (its label in the record)."""
        body = {"kind": kind, "detail": detail, "array": label}
        self._write(TYPE_EVENT, json.dumps(body).encode())

    def for_array(self, label: str) -> ArrayEvents:
        """The event sink of one implant array (`StimulationPipeline(audit=...)`)."""
        return ArrayEvents(self, label)

    def _layout(self, slot: int, frame: StimulationFrame) -> _FrameEntries:
        """The preallocated entry table and record buffer of a frame slot (-1: the single
        array's frames; i ≥ 0: array i of the implant), rebuilt when its electrodes change.

        Why preallocated per slot: this runs on every bin of a live run, once per array of an
        implant; the entries are written into fixed buffers instead of building masks, a
        stack and six arrays per frame. Same bytes as the straightforward encoding.
        """
        lay = self._layouts.get(slot)
        if lay is None or lay.electrode_ids is not frame.electrode_ids:
            crc = self._ids_crc.get(frame.electrode_ids)
            if crc is None:
                crc = self._ids_crc[frame.electrode_ids] = ids_checksum(frame.electrode_ids)
            lay = self._layouts[slot] = _FrameEntries(frame.electrode_ids, crc, slot >= 0)
        return lay

    def _frame_body(self, lay: _FrameEntries, frame: StimulationFrame) -> bytes:
        """Frame head + non-zero entries (the numpy form)."""
        body = lay.entries(frame)
        head = FRAME_HEAD.pack(
            frame.sequence, frame.timestamp_ns, frame.n_electrodes, len(body) // ENTRY.itemsize,
            lay.crc,
        )  # fmt: skip
        return head + body

    def event(self, kind: str, detail: str) -> None:
        """Record one safety event (or any other notable event)."""
        self._write(TYPE_EVENT, json.dumps({"kind": kind, "detail": detail}).encode())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FrameEntries:
    """One array's preallocated frame entries (`AuditLog.frame`): every electrode's fields
    are copied into big-endian record views, the rows with any non-zero field are taken."""

    def __init__(self, electrode_ids: tuple[str, ...], crc: int, indexed: bool) -> None:
        n = len(electrode_ids)
        self.electrode_ids = electrode_ids
        self.crc = crc
        # The compiled form's whole record: record head, payload head, the array index of an
        # implant's frame, frame head, then room for every electrode's entry.
        self.codec = compiled_forms.codec_module()
        self.entries_at = (
            REC_HEAD.size
            + PAYLOAD_HEAD.size
            + (ARRAY_INDEX.size if indexed else 0)
            + FRAME_HEAD.size
        )
        self.buf = bytearray(self.entries_at + n * ENTRY.itemsize)
        self.view = memoryview(self.buf)
        self.bytes = np.frombuffer(self.buf, dtype=np.uint8)
        self.rec = np.zeros(n, dtype=ENTRY)
        self.rec["i"] = np.arange(n)
        self.views = tuple(self.rec[name] for name in ("amp", "pw", "gap", "rate", "n"))
        self.nonzero = np.empty(n, dtype=bool)
        self.tmp = np.empty(n, dtype=bool)

    def entries(self, frame: StimulationFrame) -> bytes:
        fields: tuple[NDArray[Any], ...] = frame.fields
        # Non-zero rows (NaN counts as non-zero: a NaN that was sent is logged as such).
        nz, tmp = self.nonzero, self.tmp
        np.not_equal(fields[0], 0, out=nz)
        for view, f in zip(self.views, fields, strict=True):
            np.copyto(view, f, casting="unsafe")
        for f in fields[1:]:
            np.not_equal(f, 0, out=tmp)
            np.logical_or(nz, tmp, out=nz)
        return self.rec[nz].tobytes()


@dataclass(frozen=True)
class Record:
    """One valid record. body is the raw body bytes after the payload header."""

    offset: int
    rtype: int
    sequence: int
    monotonic_ns: int
    wall_ns: int
    body: bytes

    def json(self) -> dict[str, object]:
        out: dict[str, object] = json.loads(self.body.decode())
        return out


@dataclass(frozen=True)
class BadRegion:
    """Bytes that are no valid record: [offset, offset + length). next_type: type of the
    next valid record (None at end of file)."""

    offset: int
    length: int
    next_type: int | None


def _record_at(data: bytes | mmap.mmap, pos: int) -> Record | None:
    if pos + REC_HEAD.size + PAYLOAD_HEAD.size > len(data):
        return None
    length, crc = REC_HEAD.unpack_from(data, pos)
    if not PAYLOAD_HEAD.size <= length <= MAX_PAYLOAD:
        return None
    end = pos + REC_HEAD.size + length
    if end > len(data):
        return None
    # The record type is checked before the CRC: on damaged data nearly every byte offset
    # fails here, without hashing up to MAX_PAYLOAD bytes per offset (issue 16).
    rtype, seq, mono, wall = PAYLOAD_HEAD.unpack_from(data, pos + REC_HEAD.size)
    if rtype not in TYPE_NAMES:
        return None
    payload = data[pos + REC_HEAD.size : end]
    if zlib.crc32(payload) != crc:
        return None
    return Record(pos, rtype, seq, mono, wall, payload[PAYLOAD_HEAD.size :])


def iter_records(path: str | Path) -> Iterator[Record | BadRegion]:
    """Every valid record in order, and every stretch of bytes that is not one."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise AuditError(f"{path}: not an npe audit log (empty file)")
        # Memory-mapped: a long session's log is read without loading it whole.
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield from _iter_data(mm, path)


def _iter_data(data: mmap.mmap, path: str | Path) -> Iterator[Record | BadRegion]:
    if len(data) < FILE_HEADER.size or data[:8] != FILE_MAGIC:
        raise AuditError(f"{path}: not an npe audit log (bad file header)")
    _, version = FILE_HEADER.unpack_from(data)
    if version not in READ_VERSIONS:
        raise AuditError(
            f"{path}: audit log version {version}; this npe reads "
            f"{' and '.join(str(v) for v in READ_VERSIONS)}"
        )
    pos = FILE_HEADER.size
    while pos < len(data):
        rec = _record_at(data, pos)
        if rec is not None:
            yield rec
            pos += REC_HEAD.size + len(rec.body) + PAYLOAD_HEAD.size
            continue
        nxt = pos + 1
        found: Record | None = None
        while nxt < len(data):
            found = _record_at(data, nxt)
            if found is not None:
                break
            nxt += 1
        yield BadRegion(pos, nxt - pos, found.rtype if found is not None else None)
        pos = nxt


def decode_array_frame_record(rec: Record, implant: Implant | None) -> tuple[int, StimulationFrame]:
    """(array index, frame) of an array-frame record; ids from the implant's array if known."""
    (index,) = ARRAY_INDEX.unpack_from(rec.body)
    ids = None
    if implant is not None and index < len(implant.arrays):
        ids = implant.arrays[index].array.electrode_ids
    return index, decode_frame_record(rec, ids, offset=ARRAY_INDEX.size)


def decode_frame_record(
    rec: Record, electrode_ids: tuple[str, ...] | None, offset: int = 0
) -> StimulationFrame:
    """Rebuild the StimulationFrame of a frame record (ids "0".."n-1" when unknown)."""
    fseq, ts, n, m, crc = FRAME_HEAD.unpack_from(rec.body, offset)
    ent = np.frombuffer(rec.body, dtype=ENTRY, count=m, offset=offset + FRAME_HEAD.size)
    if m and int(ent["i"].max()) >= n:
        raise AuditError(f"frame record {rec.sequence}: electrode index beyond {n}")
    arr = np.zeros(n, dtype=RECORD)
    for name in ("amp", "pw", "gap", "rate", "n"):
        arr[name][ent["i"]] = ent[name]
    ids = electrode_ids
    if ids is None or len(ids) != n or ids_checksum(ids) != crc:
        ids = tuple(str(i) for i in range(n))
    return StimulationFrame(
        sequence=fseq,
        timestamp_ns=ts,
        electrode_ids=ids,
        amplitude_ua=arr["amp"].astype(np.float32),
        phase_width_us=arr["pw"].astype(np.float32),
        interphase_gap_us=arr["gap"].astype(np.float32),
        pulse_rate_hz=arr["rate"].astype(np.float32),
        n_pulses=arr["n"].astype(np.uint16),
    )


def read_frames(path: str | Path) -> tuple[ElectrodeArray | None, list[StimulationFrame]]:
    """The array of the last session that named one, and every valid frame in the log."""
    array: ElectrodeArray | None = None
    frames: list[StimulationFrame] = []
    for rec in iter_records(path):
        if isinstance(rec, BadRegion):
            continue
        if rec.rtype == TYPE_SESSION:
            raw = rec.json().get("array")
            if raw is not None:
                array = parse_array(raw, source=f"{path} session record")
        elif rec.rtype == TYPE_FRAME:
            frames.append(
                decode_frame_record(rec, array.electrode_ids if array is not None else None)
            )
    return array, frames


def _session_implant(info: dict[str, object], source: str) -> Implant | None:
    from hardware.implant import implant_from_record

    raw = info.get("implant")
    return implant_from_record(raw, source) if raw is not None else None


def read_implant_frames(
    path: str | Path,
) -> tuple[Implant | None, list[tuple[StimulationFrame, ...]]]:
    """The implant of the last session that named one, and every complete bin of it: one
    frame per array, in the implant's order (a bin missing an array's frame is left out)."""
    implant: Implant | None = None
    bins: list[tuple[StimulationFrame, ...]] = []
    group: list[StimulationFrame] = []
    for rec in iter_records(path):
        if isinstance(rec, BadRegion):
            group = []
            continue
        if rec.rtype == TYPE_SESSION:
            implant = _session_implant(rec.json(), f"{path} session record")
            group = []
        elif rec.rtype == TYPE_ARRAY_FRAME and implant is not None:
            index, frame = decode_array_frame_record(rec, implant)
            if index != len(group):
                group = []
                if index != 0:
                    continue
            group.append(frame)
            if len(group) == len(implant.arrays):
                bins.append(tuple(group))
                group = []
    return implant, bins


class ArrayLogRow(BaseModel):
    """One implant array's part of an audit log (`npe log inspect` prints one row each)."""

    label: str
    array: str
    n_electrodes: int
    n_frames: int
    n_events: int
    first_frame_sequence: int | None
    last_frame_sequence: int | None
    frame_sequence_gaps: int
    limit_breaches: int
    max_amplitude_ua: float
    max_active_electrodes: int


class _ArrayTally:
    """Running per-array counts while a log is read."""

    def __init__(self, label: str, array: str, n: int) -> None:
        self.row = ArrayLogRow(
            label=label,
            array=array,
            n_electrodes=n,
            n_frames=0,
            n_events=0,
            first_frame_sequence=None,
            last_frame_sequence=None,
            frame_sequence_gaps=0,
            limit_breaches=0,
            max_amplitude_ua=0.0,
            max_active_electrodes=0,
        )


class LogReport(BaseModel):
    """Summary and verification of one audit log (`npe log inspect`)."""

    path: str
    ok: bool
    n_records: int
    n_sessions: int
    n_frames: int
    n_events: int
    events_by_kind: dict[str, int]
    first_sequence: int | None
    last_sequence: int | None
    sequence_gaps: list[tuple[int, int]]
    corrupt_regions: list[tuple[int, int]]
    torn_records: int
    limit_breaches: int
    breach_examples: list[str]
    wall_start_ns: int | None
    wall_end_ns: int | None
    max_amplitude_ua: float
    max_active_electrodes: int
    problems: list[str]
    #: Implant logs (version 2): the implant's name, one row per array, bins whose frames
    #: together break the implant-wide caps, and bins missing an array's frame.
    implant: str | None = None
    arrays: list[ArrayLogRow] = []
    implant_breaches: int = 0
    incomplete_bins: int = 0


def _absolute_breaches(frame: StimulationFrame) -> list[str]:
    """Checks that need no array: the hardware's absolute limits."""
    hw = HARDWARE_LIMITS
    out = []
    amp = frame.amplitude_ua.astype(np.float64)
    pw = frame.phase_width_us.astype(np.float64)
    act = frame.active
    if not np.all(np.isfinite(amp)) or np.any(amp < 0):
        out.append("non-finite or negative amplitude")
    if np.any(amp[act] > hw.max_amplitude_ua):
        out.append(f"amplitude above {hw.max_amplitude_ua} µA")
    if np.any(pw[act] > hw.max_phase_width_us):
        out.append(f"phase width above {hw.max_phase_width_us} µs")
    if np.any(amp[act] * pw[act] / 1000.0 > hw.max_charge_per_phase_nc):
        out.append(f"charge above {hw.max_charge_per_phase_nc} nC")
    if int(act.sum()) > hw.max_active_electrodes:
        out.append(f"more than {hw.max_active_electrodes} electrodes active")
    return out


def inspect_log(path: str | Path) -> LogReport:
    """Summarise and verify an audit log: sequence gaps, corruption, torn records (a crash
    loses at most the record being written), and frames that break the limits in force
    (those of the session record, or the hardware's absolute limits when none were logged).

    `ok` is False on any gap, corruption (other than a torn record at a crash point) or breach.
    """
    n_records = n_sessions = n_frames = n_events = torn = breaches = 0
    kinds: Counter[str] = Counter()
    gaps: list[tuple[int, int]] = []
    corrupt: list[tuple[int, int]] = []
    examples: list[str] = []
    first = last = None
    wall0 = wall1 = None
    max_amp = 0.0
    max_active = 0
    array: ElectrodeArray | None = None
    limits: SafetyLimits | None = None
    problems: list[str] = []
    implant: Implant | None = None
    tallies: dict[str, _ArrayTally] = {}
    group: list[StimulationFrame] = []
    implant_breaches = incomplete = 0
    implant_name: str | None = None

    def close_group() -> None:
        nonlocal incomplete
        if group:
            incomplete += 1
            group.clear()

    for rec in iter_records(path):
        if isinstance(rec, BadRegion):
            if rec.next_type in (None, TYPE_SESSION):
                torn += 1  # the record being written when a writer died
            else:
                corrupt.append((rec.offset, rec.length))
            continue
        n_records += 1
        if last is not None and rec.sequence != last + 1:
            gaps.append((last, rec.sequence))
        first = rec.sequence if first is None else first
        last = rec.sequence
        wall0 = rec.wall_ns if wall0 is None else wall0
        wall1 = rec.wall_ns
        if rec.rtype == TYPE_SESSION:
            n_sessions += 1
            info = rec.json()
            close_group()
            try:
                array = parse_array(info["array"]) if info.get("array") else None
                limits = SafetyLimits.model_validate(info["limits"]) if info.get("limits") else None
                implant = _session_implant(info, f"session record {rec.sequence}")
            except ValueError as exc:
                problems.append(f"session record {rec.sequence}: unusable array/limits ({exc})")
                array, limits, implant = None, None, None
            if implant is not None:
                implant_name = implant.name
                for a in implant.arrays:
                    t = tallies.setdefault(a.label, _ArrayTally(a.label, a.array.name, a.array.n))
                    t.row.last_frame_sequence = None  # a new session restarts the sequence
        elif rec.rtype == TYPE_EVENT:
            n_events += 1
            ev = rec.json()
            kinds[str(ev.get("kind", "?"))] += 1
            lab = ev.get("array")
            if isinstance(lab, str) and lab in tallies:
                tallies[lab].row.n_events += 1
        elif rec.rtype == TYPE_ARRAY_FRAME:
            n_frames += 1
            if implant is None:
                breaches += 1
                if len(examples) < 10:
                    examples.append(
                        f"record {rec.sequence}: array frame outside an implant session"
                    )
                continue
            index, frame = decode_array_frame_record(rec, implant)
            if index >= len(implant.arrays):
                breaches += 1
                if len(examples) < 10:
                    examples.append(
                        f"record {rec.sequence}: array index {index} not in the implant"
                    )
                continue
            placed = implant.arrays[index]
            row = tallies[placed.label].row
            act = frame.active
            n_act = int(act.sum())
            row.n_frames += 1
            row.max_active_electrodes = max(row.max_active_electrodes, n_act)
            if act.any():
                row.max_amplitude_ua = max(
                    row.max_amplitude_ua, float(np.nanmax(frame.amplitude_ua[act]))
                )
                max_amp = max(max_amp, row.max_amplitude_ua)
            if row.first_frame_sequence is None:
                row.first_frame_sequence = frame.sequence
            if (
                row.last_frame_sequence is not None
                and frame.sequence != row.last_frame_sequence + 1
            ):
                row.frame_sequence_gaps += 1
            row.last_frame_sequence = frame.sequence
            if frame.electrode_ids != placed.array.electrode_ids:
                found = ["electrode ids do not match the array"]
            elif limits is not None:
                found = check_frame(frame, limits, placed.array)
            else:
                found = _absolute_breaches(frame)
            if found:
                breaches += 1
                row.limit_breaches += 1
                if len(examples) < 10:
                    examples.append(f"record {rec.sequence} ({placed.label}): {found[0]}")
            # One bin = one array frame per array, in order, back to back.
            if index != len(group):
                close_group()
            if index == len(group):
                group.append(frame)
            if len(group) == len(implant.arrays):
                max_active = max(max_active, sum(int(f.active.sum()) for f in group))
                bad = _implant_breaches(group, implant)
                if bad:
                    implant_breaches += 1
                    if len(examples) < 10:
                        examples.append(f"record {rec.sequence} (implant): {bad[0]}")
                group.clear()
        else:
            n_frames += 1
            frame = decode_frame_record(rec, array.electrode_ids if array is not None else None)
            act = frame.active
            max_active = max(max_active, int(act.sum()))
            if act.any():
                max_amp = max(max_amp, float(np.nanmax(frame.amplitude_ua[act])))
            if (
                array is not None
                and limits is not None
                and frame.electrode_ids == array.electrode_ids
            ):
                found = check_frame(frame, limits, array)
            else:
                found = _absolute_breaches(frame)
            if found:
                breaches += 1
                if len(examples) < 10:
                    examples.append(f"record {rec.sequence}: {found[0]}")
    close_group()
    rows = [t.row for t in tallies.values()]
    frame_gaps = sum(r.frame_sequence_gaps for r in rows)
    if frame_gaps:
        problems.append(f"{frame_gaps} gap(s) in arrays' frame sequences")
    if implant_breaches:
        problems.append(f"{implant_breaches} bin(s) break the implant-wide limits")
    if incomplete:
        problems.append(f"{incomplete} bin(s) miss an array's frame")
    if gaps:
        problems.append(f"{len(gaps)} sequence gap(s)")
    if corrupt:
        problems.append(f"{len(corrupt)} corrupt region(s)")
    if breaches:
        problems.append(f"{breaches} frame(s) break the limits")
    if n_sessions == 0:
        problems.append("no session record")
    return LogReport(
        path=str(path),
        ok=not problems,
        n_records=n_records,
        n_sessions=n_sessions,
        n_frames=n_frames,
        n_events=n_events,
        events_by_kind=dict(kinds),
        first_sequence=first,
        last_sequence=last,
        sequence_gaps=gaps,
        corrupt_regions=corrupt,
        torn_records=torn,
        limit_breaches=breaches,
        breach_examples=examples,
        wall_start_ns=wall0,
        wall_end_ns=wall1,
        max_amplitude_ua=max_amp,
        max_active_electrodes=max_active,
        problems=problems,
        implant=implant_name,
        arrays=rows,
        implant_breaches=implant_breaches,
        incomplete_bins=incomplete,
    )


def _implant_breaches(frames: list[StimulationFrame], implant: Implant) -> list[str]:
    """The implant-wide caps over one bin's frames, re-checked independently of the
    pipeline (active electrodes and total current over every array)."""
    active = 0
    total = 0.0
    for f in frames:
        live = (f.amplitude_ua > 0) & (f.n_pulses > 0)
        active += int(np.count_nonzero(live))
        total += float(np.sum(f.amplitude_ua[live], dtype=np.float64))
    lim = implant.limits
    out = []
    if active > lim.max_active_electrodes:
        out.append(f"{active} electrodes active over the implant > {lim.max_active_electrodes}")
    if total > lim.max_total_current_ua:
        out.append(f"implant total current {total:.3f} > {lim.max_total_current_ua} µA")
    return out
