"""Transports that carry authenticated wire frames (`hardware.wire`) to a stimulator.

`open_link(spec, key)` understands:
  * ``udp://127.0.0.1:PORT`` (the default transport; one datagram per frame, one `send` on a
    socket connected at open; acks from the stimulator are read without blocking by `poll()`,
    by `send` when nobody polled for `POLL_EVERY` sends, and on close, and counted),
  * ``serial:///dev/ttyUSB0`` or any pyserial URL after ``serial://`` (e.g. ``serial://loop://``),
    optionally ``?baud=N`` (default 3,000,000: a 96-electrode frame is 1,800 bytes, i.e.
    156 ms at 115,200 baud, far too slow for 100 frames/s; USB CDC ports ignore the figure);
    frames are written back to back, the receiver resynchronises on the magic
    (`wire.StreamDecoder`); a write that cannot complete within 50 ms is counted as an error,
  * ``file:///path/frames.bin``: appends frames to a file (a recording of what would be sent).

`send` never blocks on the receiver: the live loop must not stall on a slow stimulator.
Every frame sent is also written to the audit log when one is given.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from hardware.errors import HardwareError
from hardware.types import StimulationFrame
from hardware.wire import ACK_BYTES, FrameEncoder, WireError, decode_ack

if TYPE_CHECKING:
    from hardware.audit import AuditLog

DEFAULT_PORT = 9750
DEFAULT_LINK = f"udp://127.0.0.1:{DEFAULT_PORT}"
#: Sends between two reads of the acknowledgements (a socket buffer holds far more acks).
POLL_EVERY = 8


class LinkError(HardwareError, OSError):
    """A link that cannot be opened, or a spec it does not understand."""


@dataclass
class LinkStats:
    sent: int = 0
    bytes_sent: int = 0
    send_errors: int = 0
    acks: int = 0
    nacks: int = 0
    bad_acks: int = 0
    last_ack_sequence: int = -1
    last_nack_reason: str | None = None
    #: Why the transport refused the latest write that failed (e.g. "ConnectionRefusedError:
    #: [Errno 111] Connection refused": nothing listens at a UDP link's address).
    last_send_error: str | None = None


class StimulatorLink:
    """Base class: encodes, authenticates and writes frames; subclasses own the transport."""

    spec: str = ""

    def __init__(self, key: bytes, audit: AuditLog | None = None) -> None:
        if len(key) < 16:
            raise LinkError("device key too short (need ≥ 16 bytes, 32 recommended)")
        self.encoder = FrameEncoder(key)
        self.key = key
        self.audit = audit
        self.stats = LinkStats()
        # Sends left before `send` reads the acks itself: the first send polls at once, then
        # every POLL_EVERY sends unless the caller polled in between (`poll` resets it).
        self._until_poll = 1

    def send(self, frame: StimulationFrame) -> None:
        """Encode and write one frame; transport errors are counted, never raised.

        The frame is encoded into the encoder's preallocated buffer and written with one
        call; acknowledgements are read every `POLL_EVERY` sends (and by `poll`/`close`),
        not after each one: reading an empty socket is a syscall and an exception per bin.
        A caller with a timed path (the live loop) calls `poll` itself after its frame is
        out, at least every `POLL_EVERY` sends, so that no send pays for reading acks.
        """
        data = self.encoder.encode_into(frame)
        try:
            self._write(data)
            self.stats.sent += 1
            self.stats.bytes_sent += len(data)
        except OSError as exc:
            self.stats.send_errors += 1
            self.stats.last_send_error = f"{type(exc).__name__}: {exc}"
        if self.audit is not None:
            self.audit.frame(frame)
        self._until_poll -= 1
        if self._until_poll <= 0:
            self.poll()

    def poll(self) -> None:
        """Read whatever acknowledgements have arrived (non-blocking); the next automatic
        read is then `POLL_EVERY` sends away."""
        self._until_poll = POLL_EVERY
        self._read_acks()

    def _read_acks(self) -> None:
        """The transport's acknowledgements, counted in `stats` (none for most transports)."""

    def _write(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the transport."""


class UdpLink(StimulatorLink):
    def __init__(self, host: str, port: int, key: bytes, audit: AuditLog | None = None) -> None:
        super().__init__(key, audit)
        self.spec = f"udp://{host}:{port}"
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Connected once, at open: the address is resolved and the route looked up here, not
        # on every frame (`sendto` with an address does both per call), only the stimulator's
        # datagrams reach `poll`, and a stimulator that is not listening shows up as send
        # errors (the kernel's ICMP "port unreachable") instead of silence.
        try:
            self.sock.connect(self.addr)
        except OSError as exc:
            self.sock.close()
            raise LinkError(f"{self.spec}: cannot reach the stimulator: {exc}") from exc
        self.sock.setblocking(False)

    def _write(self, data: bytes | memoryview) -> None:
        self.sock.send(data)

    def _read_acks(self) -> None:
        while True:
            try:
                data = self.sock.recv(ACK_BYTES + 16)
            except (BlockingIOError, ConnectionRefusedError):
                return
            except OSError:
                return
            try:
                ack = decode_ack(self.key, data, self.encoder._mac_proto)
            except WireError:
                self.stats.bad_acks += 1
                continue
            if ack.accepted:
                self.stats.acks += 1
                self.stats.last_ack_sequence = ack.wire_sequence
            else:
                self.stats.nacks += 1
                self.stats.last_nack_reason = ack.reason

    def close(self) -> None:
        self.poll()  # the acks of the last sends, before they are lost with the socket
        self.sock.close()


class SerialLink(StimulatorLink):
    def __init__(
        self, url: str, key: bytes, baud: int = 115200, audit: AuditLog | None = None
    ) -> None:
        super().__init__(key, audit)
        import serial

        self.spec = f"serial://{url}"
        try:
            self.port: Any = serial.serial_for_url(
                url, baudrate=baud, timeout=0, write_timeout=0.05
            )
        except (serial.SerialException, ValueError) as exc:
            raise LinkError(f"cannot open serial port {url}: {exc}") from exc

    def _write(self, data: bytes | memoryview) -> None:
        self.port.write(data)

    def close(self) -> None:
        self.port.close()


class FileLink(StimulatorLink):
    def __init__(self, path: Path, key: bytes, audit: AuditLog | None = None) -> None:
        super().__init__(key, audit)
        self.spec = f"file://{path}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(path, "ab", buffering=0)
        except OSError as exc:
            raise LinkError(f"cannot open file sink {path}: {exc}") from exc

    def _write(self, data: bytes | memoryview) -> None:
        self.fh.write(data)

    def close(self) -> None:
        self.fh.close()


def open_link(spec: str, key: bytes, audit: AuditLog | None = None) -> StimulatorLink:
    """Open a link from a spec (see the module docstring); LinkError names what is wrong."""
    if spec.startswith("serial://"):
        rest = spec[len("serial://") :]
        url, _, query = rest.partition("?")
        try:
            baud = int(parse_qs(query).get("baud", ["3000000"])[0]) if query else 3_000_000
        except ValueError as exc:
            raise LinkError(f"{spec}: baud must be an integer") from exc
        if not url:
            raise LinkError(f"{spec}: no serial port given")
        return SerialLink(url, key, baud, audit)
    parts = urlsplit(spec)
    if parts.scheme == "udp":
        if not parts.hostname or parts.port is None:
            raise LinkError(f"{spec}: expected udp://HOST:PORT")
        return UdpLink(parts.hostname, parts.port, key, audit)
    if parts.scheme == "file":
        if not parts.path:
            raise LinkError(f"{spec}: expected file:///path")
        return FileLink(Path(parts.path), key, audit)
    raise LinkError(f"{spec}: unknown link (use udp://HOST:PORT, serial://PORT or file:///PATH)")
