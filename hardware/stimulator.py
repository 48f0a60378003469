"""A reference simulated stimulator: what a real one must do on its own side.

It receives wire frames over UDP, authenticates and checks them (`wire.FrameVerifier`: wrong
key, altered, replayed, truncated and foreign-array frames are rejected and counted by
reason), enforces the same safety limits again with its own `SafetyEnforcer` (it trusts the
sender no more than the sender trusts the model), acknowledges every datagram, and stops all
stimulation by itself when no valid frame has arrived within the dead-man interval
(default 100 ms): a crashed or stalled sender must never leave current flowing.

Runs on a thread in-process (tests, `npe run`) or as `npe stimulator serve`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hardware.arrays import ElectrodeArray
from hardware.safety import SafetyEnforcer, SafetyLimits, check_frame
from hardware.types import StimulationFrame
from hardware.wire import FrameVerifier, WireError, encode_ack

if TYPE_CHECKING:
    from hardware.audit import AuditLog

#: Rejections logged individually per reason before only the counters keep going (a flood of
#: forged datagrams must not fill the disk); the totals are logged when the stimulator stops.
MAX_LOGGED_REJECTIONS = 100

#: Receive buffer asked of the kernel (it grants at most net.core.rmem_max). Why: a burst
#: (a replay `--as-fast-as-possible`, ~900 frames/s of 1.8 kB datagrams) can outrun the
#: simulator for a moment, and the default buffer (~200 kB, about 60 frames) then lost
#: frames; with 4 MB they wait and are each checked like any other. At 100 frames/s paced
#: it never holds more than one or two.
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024


@dataclass
class StimulatorStats:
    """What the stimulator has seen; `stimulating` is True while current flows."""

    received: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    clamped: Counter[str] = field(default_factory=Counter)
    breaches_after_enforcement: int = 0
    deadman_stops: int = 0
    acks_sent: int = 0
    stimulating: bool = False
    last_wire_sequence: int = -1
    last_frame_sequence: int = -1
    max_amplitude_ua: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "clamped": dict(self.clamped),
            "breaches_after_enforcement": self.breaches_after_enforcement,
            "deadman_stops": self.deadman_stops,
            "acks_sent": self.acks_sent,
            "stimulating": self.stimulating,
            "last_wire_sequence": self.last_wire_sequence,
            "last_frame_sequence": self.last_frame_sequence,
            "max_amplitude_ua": self.max_amplitude_ua,
        }


class SimulatedStimulator:
    """UDP stimulator simulator with limits, acks and a dead-man stop.

    Args:
        host, port: where to listen (port 0 picks a free one; see `.port` after start()).
        key: the device key (HMAC-SHA256).
        limits: its own safety limits (checked again on every frame).
        array: the array it drives (frames for another array are refused).
        deadman_ms: stop all stimulation after this long without a valid frame.
        audit: optional audit log of what it delivered (accepted frames after its own
            enforcement), its clamps, rejections and dead-man stops. Written from the
            receive thread only.
    """

    def __init__(
        self,
        host: str,
        port: int,
        key: bytes,
        limits: SafetyLimits,
        array: ElectrodeArray,
        deadman_ms: float = 100.0,
        *,
        audit: AuditLog | None = None,
    ) -> None:
        if not deadman_ms > 0:
            raise ValueError(f"dead-man interval must be > 0 ms, got {deadman_ms}")
        self.host = host
        self.port = port
        self.key = key
        self.limits = limits
        self.array = array
        self.deadman_s = deadman_ms / 1000.0
        self.verifier = FrameVerifier(key, array.electrode_ids)
        self.enforcer = SafetyEnforcer(limits, array)
        self.stats = StimulatorStats()
        self.output: StimulationFrame = StimulationFrame.zeros(array.electrode_ids, 0, 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.receive_buffer_bytes = 0  # granted by the kernel, set by start()
        self._last_valid = time.monotonic()
        self.audit = audit

    def _log(self, kind: str, detail: str) -> None:
        if self.audit is not None:
            try:
                self.audit.event(kind, detail)
            except OSError:
                self.stats.clamped["audit_write_failed"] += 1

    def start(self) -> None:
        """Bind and start the receive thread (returns once listening)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        # Linux reports twice what it grants (the other half is its bookkeeping).
        self.receive_buffer_bytes = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        sock.bind((self.host, self.port))
        sock.settimeout(min(self.deadman_s / 4.0, 0.01))
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="npe-stimulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop stimulating and listening."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()
        self._halt()
        if self.stats.rejected:
            self._log("rejections_total", str(dict(self.stats.rejected)))

    def __enter__(self) -> SimulatedStimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _halt(self) -> None:
        with self._lock:
            self.output = StimulationFrame.zeros(self.array.electrode_ids, 0, time.monotonic_ns())
            self.stats.stimulating = False

    def _run(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while not self._stop.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                data, addr = b"", None
            except OSError:
                break
            if addr is not None:
                self.handle(data, addr, sock)
            if self.stats.stimulating and time.monotonic() - self._last_valid > self.deadman_s:
                self._halt()
                self.stats.deadman_stops += 1
                self._log(
                    "deadman_stop",
                    f"no valid frame for {self.deadman_s * 1000:.0f} ms: all stimulation stopped",
                )

    def handle(self, data: bytes, addr: tuple[str, int] | None, sock: socket.socket | None) -> bool:
        """Process one datagram; returns True if it was accepted."""
        self.stats.received += 1
        try:
            decoded = self.verifier.decode(data)
        except WireError as exc:
            self.stats.rejected[exc.reason] += 1
            if self.stats.rejected[exc.reason] <= MAX_LOGGED_REJECTIONS:
                self._log("frame_rejected", str(exc))
            if sock is not None and addr is not None and exc.reason != "bad_mac":
                # A sender without our key gets no acknowledgement at all.
                self._ack(sock, addr, -1, False, exc.reason)
            return False
        safe, events = self.enforcer.enforce(decoded.frame)
        for ev in events:
            self.stats.clamped[ev.kind] += 1
            self._log(ev.kind, "stimulator side: " + ev.describe())
        if check_frame(safe, self.limits, self.array):
            # Cannot happen unless the enforcer is broken: refuse to stimulate at all.
            self.stats.breaches_after_enforcement += 1
            self._halt()
            self._log("breach_after_enforcement", "frame refused, stimulation stopped")
            return False
        with self._lock:
            self.output = safe
            self.stats.accepted += 1
            self.stats.stimulating = bool(safe.active.any())
            self.stats.last_wire_sequence = decoded.wire_sequence
            self.stats.last_frame_sequence = decoded.frame.sequence
            self.stats.max_amplitude_ua = max(
                self.stats.max_amplitude_ua, float(safe.amplitude_ua.max(initial=0.0))
            )
        self._last_valid = time.monotonic()
        if self.audit is not None:
            try:
                self.audit.frame(safe)
            except OSError:
                self.stats.clamped["audit_write_failed"] += 1
        if sock is not None and addr is not None:
            self._ack(sock, addr, decoded.wire_sequence, True, None)
        return True

    def _ack(
        self, sock: socket.socket, addr: tuple[str, int], seq: int, ok: bool, reason: str | None
    ) -> None:
        try:
            sock.sendto(encode_ack(self.key, max(seq, 0), ok, reason), addr)
            self.stats.acks_sent += 1
        except OSError:
            pass
