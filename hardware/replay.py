"""Durable anti-replay state of a stimulator, so that a restart does not re-open the window.

Why: the receiver refuses every wire sequence not above the last one it accepted. Kept only
in memory, that floor was lost on restart, and a datagram captured before the restart was
accepted after it. The design (defended in the README, "Stimulator link: replay and
freshness"):

1. Wire sequences are the sender's wall-clock send time in µs (`wire.FrameEncoder`), so a
   receiver can also refuse frames older than a freshness window (`wire.FrameVerifier`).
2. A stimulator starts with the floor max(persisted high-water mark, its own clock now):
   anything sent before it started is refused, even if the state file were lost.
3. The high-water mark survives restarts, power loss and clock steps: before accepting a
   sequence above the persisted mark, the stimulator writes a new mark = sequence + lease
   (default 500 ms) atomically (temporary file, fsync, rename, fsync of the directory), and
   only then accepts. So the persisted mark is always ≥ every sequence ever accepted, at the
   cost of one fsync per lease, not one per frame. After a restart sooner than the lease,
   frames are refused ("replay") until the sender's clock passes the mark: fail-safe.
4. If the mark cannot be saved the frame is refused ("state_write_failed"); an unreadable
   or foreign state file stops the stimulator from starting (`ReplayStateError`).

One file per device key and array (`replay-<id>.json`, where id is an HMAC of the array's
checksum under the key, so the file name reveals nothing about the key).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from hardware.link import LinkError

#: Default lease: how far above an accepted sequence the persisted mark is set (ms).
DEFAULT_LEASE_MS = 500.0
#: Environment variable naming the default state directory of `npe stimulator serve`.
STATE_DIR_ENV = "NPE_STATE_DIR"
#: A state file is a few dozen bytes; anything larger is not one of ours.
MAX_STATE_BYTES = 4096
STATE_FORMAT = 1


class ReplayStateError(LinkError):
    """A replay-state file that cannot be read, belongs to something else, or is malformed."""


class ReplayStateFile(BaseModel):
    """What is persisted: the high-water mark, for one key and array."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    format: int
    array_crc: int
    high_water_us: int


def default_state_dir() -> Path:
    """$NPE_STATE_DIR, else ~/.local/state/npe (XDG state home)."""
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env)
    return Path.home() / ".local" / "state" / "npe"


def state_path(state_dir: Path, key: bytes, array_crc: int) -> Path:
    """The state file of this key and array inside `state_dir`."""
    ident = hmac.new(key, b"npe replay state" + array_crc.to_bytes(4, "big"), hashlib.sha256)
    return state_dir / f"replay-{ident.hexdigest()[:16]}.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ReplayState:
    """The persisted high-water mark of one stimulator (see the module docstring).

    `floor` is what the verifier must start above; `commit(seq)` is its commit hook.
    """

    def __init__(
        self, state_dir: Path, key: bytes, array_crc: int, lease_ms: float = DEFAULT_LEASE_MS
    ) -> None:
        if not lease_ms > 0:
            raise ReplayStateError(f"replay-state lease must be > 0 ms, got {lease_ms}")
        self.path = state_path(state_dir, key, array_crc)
        self.array_crc = array_crc
        self.lease_us = int(lease_ms * 1000)
        self.writes = 0
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReplayStateError(
                f"{state_dir}: cannot create the state directory: {exc}"
            ) from exc
        self.high_water_us = self._load()

    @property
    def floor(self) -> int:
        return self.high_water_us

    def _load(self) -> int:
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return -1
        except OSError as exc:
            raise ReplayStateError(f"{self.path}: cannot read the replay state: {exc}") from exc
        if len(raw) > MAX_STATE_BYTES:
            raise ReplayStateError(f"{self.path}: replay state larger than {MAX_STATE_BYTES} B")
        try:
            st = ReplayStateFile.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "file"
            raise ReplayStateError(
                f"{self.path}: not a replay-state file ({where}: {first['msg']}); "
                "refusing to start without it (remove it only if you know why it is bad)"
            ) from exc
        if st.format != STATE_FORMAT or st.array_crc != self.array_crc:
            raise ReplayStateError(
                f"{self.path}: replay state of format {st.format} for array crc "
                f"{st.array_crc:#x}, expected format {STATE_FORMAT} and {self.array_crc:#x}"
            )
        return st.high_water_us

    def commit(self, sequence: int) -> None:
        """Make sure the persisted mark is ≥ `sequence` before it is accepted (OSError if not)."""
        if sequence <= self.high_water_us:
            return
        mark = sequence + self.lease_us
        self._write(mark)
        self.high_water_us = mark

    def _write(self, mark: int) -> None:
        data = ReplayStateFile(
            format=STATE_FORMAT, array_crc=self.array_crc, high_water_us=mark
        ).model_dump_json()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self.writes += 1
