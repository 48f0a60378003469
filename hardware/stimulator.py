"""A reference simulated stimulator: what a real one must do on its own side.

It receives wire frames over UDP, authenticates and checks them (`wire.FrameVerifier`: wrong
key, altered, replayed, truncated and foreign-array frames are rejected and counted by
reason), enforces the same safety limits again with its own `SafetyEnforcer` (it trusts the
sender no more than the sender trusts the model), acknowledges every datagram, and stops all
stimulation by itself when no valid frame has arrived within the dead-man interval
(default 100 ms): a crashed or stalled sender must never leave current flowing.

Dead-man timing: every accepted frame is self-limiting. It carries its own validity period,
`valid_until` = min(its send time, its arrival) + the interval, on this process's monotonic
clock (the send time is the frame's wire sequence, the sender's wall clock in µs, taken back
to the monotonic clock by its age on arrival; an age below 0, a sender clock ahead, counts as
0). `output` (what the electrodes get) is the frame while now < valid_until and zeros from
that instant on, so without a fresh frame the output is zero at the deadline by construction,
whenever the receive thread next runs. Why this and not a timer: a thread (or timer) that
must wake up to stop the current is late by whatever the scheduler adds, and under load it
was (101–107 ms against 100 ms in 50 of 50 trials, and 109.8 ms at p100 over 1,000 even with
a 10 ms early wake-up); waking earlier only moves the tail. A comparison against a deadline
fixed when the frame arrived is never late. A real stimulator does the same in firmware: it
plays a frame's pulses only inside its validity window.

The receive thread still records each stop (`_deadman_stop`: stats, audit log); it wakes up
at valid_until − margin (the margin, default 10 ms, keeps that record close to the stop), so
`stats.last_deadman_stop_ns` may come after the stop itself under load, and
`stats.last_stop_ns` (min of the two) is when the output really became zero.
`stats.deadman_latency_ms_max` keeps the worst bookkeeping latency seen (from the arrival of
the last valid frame).

Replay protection (see `hardware.replay`): frames must be fresh (`freshness_ms`, default
250 ms, between the sender's send time and this clock), above the floor it started with
(max of its own start time and, with a `state_dir`, the durable high-water mark), and above
the last accepted one. Datagrams refused before their MAC was checked get no reply at all;
authenticated ones get a signed ack or nack.

Runs on a thread in-process (tests, `npe run`) or as `npe stimulator serve`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from hardware.arrays import ElectrodeArray
from hardware.safety import SafetyEnforcer, SafetyLimits, check_frame
from hardware.types import StimulationFrame
from hardware.wire import UNAUTHENTICATED_REASONS, FrameVerifier, WireError, encode_ack, now_us

if TYPE_CHECKING:
    from pathlib import Path

    from hardware.audit import AuditLog
    from hardware.replay import ReplayState

#: Rejections logged individually per reason before only the counters keep going (a flood of
#: forged datagrams must not fill the disk); the totals are logged when the stimulator stops.
MAX_LOGGED_REJECTIONS = 100

#: Receive buffer asked of the kernel (it grants at most net.core.rmem_max). Why: a burst
#: (a replay `--as-fast-as-possible`, ~900 frames/s of 1.8 kB datagrams) can outrun the
#: simulator for a moment, and the default buffer (~200 kB, about 60 frames) then lost
#: frames; with 4 MB they wait and are each checked like any other. At 100 frames/s paced
#: it never holds more than one or two.
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024

#: Default freshness window (ms): a frame sent longer ago than this is refused ("stale").
#: Why 250: on one host a frame arrives within 1 ms, but a burst held in the receive buffer
#: (above) may wait ~100 ms; anything older is not what the sender means now.
DEFAULT_FRESHNESS_MS = 250.0
#: Default dead-man margin (ms): how much before the deadline the receive thread wakes up.
DEFAULT_DEADMAN_MARGIN_MS = 10.0
#: How long the receive thread waits for a datagram when nothing is flowing (s); bounds how
#: long stop() takes.
IDLE_WAIT_S = 0.05


class StimulatorStatsSnapshot(BaseModel):
    """The stimulator's counters at one moment, as a typed, frozen value.

    Why a separate model: `StimulatorStats` is the receive thread's live, mutable record
    (Counters updated per datagram); what crosses to the runtime (a child process's final
    report through a pipe, a run summary, the bench report) is this snapshot, written and read
    with its own JSON, so no caller reads the stimulator's counters through string keys.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    received: int = 0
    accepted: int = 0
    #: datagrams refused, by reason (`hardware.wire.REJECT_REASONS`)
    rejected: dict[str, int] = {}
    #: values the stimulator's own safety enforcement changed, by rule
    clamped: dict[str, int] = {}
    breaches_after_enforcement: int = 0
    deadman_stops: int = 0
    acks_sent: int = 0
    stimulating: bool = False
    last_wire_sequence: int = -1
    last_frame_sequence: int = -1
    max_amplitude_ua: float = 0.0
    deadman_latency_ms_max: float = 0.0
    replay_state_writes: int = 0


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
    deadman_latency_ms_max: float = 0.0
    #: monotonic_ns of the last valid frame's arrival and of the last dead-man stop
    last_valid_ns: int = 0
    last_deadman_stop_ns: int = 0
    #: monotonic_ns at which the last accepted frame's validity ended (its output became zero
    #: by construction; ≤ last_deadman_stop_ns, which is when the thread recorded it)
    last_valid_until_ns: int = 0
    replay_state_writes: int = 0

    def snapshot(self) -> StimulatorStatsSnapshot:
        """The counters now, frozen (see `StimulatorStatsSnapshot`)."""
        return StimulatorStatsSnapshot(
            received=self.received,
            accepted=self.accepted,
            rejected=dict(self.rejected),
            clamped=dict(self.clamped),
            breaches_after_enforcement=self.breaches_after_enforcement,
            deadman_stops=self.deadman_stops,
            acks_sent=self.acks_sent,
            stimulating=self.stimulating,
            last_wire_sequence=self.last_wire_sequence,
            last_frame_sequence=self.last_frame_sequence,
            max_amplitude_ua=self.max_amplitude_ua,
            deadman_latency_ms_max=self.deadman_latency_ms_max,
            replay_state_writes=self.replay_state_writes,
        )

    @property
    def last_stop_ns(self) -> int:
        """When the output of the last dead-man stop really became zero (monotonic ns)."""
        return min(self.last_deadman_stop_ns, self.last_valid_until_ns)

    def as_dict(self) -> dict[str, object]:
        """The snapshot as plain JSON types (audit-log records, `npe stimulator serve`)."""
        return self.snapshot().model_dump()


class SimulatedStimulator:
    """UDP stimulator simulator with limits, acks and a dead-man stop.

    Args:
        host, port: where to listen (port 0 picks a free one; see `.port` after start()).
        key: the device key (HMAC-SHA256).
        limits: its own safety limits (checked again on every frame).
        array: the array it drives (frames for another array are refused).
        deadman_ms: stop all stimulation within this long without a valid frame.
        audit: optional audit log of what it delivered (accepted frames after its own
            enforcement), its clamps, rejections and dead-man stops. Written from the
            receive thread only.
        freshness_ms: refuse frames sent longer ago (or further ahead) than this.
        deadman_margin_ms: wake up this much before the dead-man deadline (0 ≤ it < interval).
        state_dir: keep the durable anti-replay state here (`hardware.replay`); None keeps it
            in memory only (the start-time floor still refuses frames sent before start()).
        clock_us: wall clock in µs for freshness and the start floor (injectable for tests).
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
        freshness_ms: float = DEFAULT_FRESHNESS_MS,
        deadman_margin_ms: float = DEFAULT_DEADMAN_MARGIN_MS,
        state_dir: Path | None = None,
        clock_us: Callable[[], int] = now_us,
    ) -> None:
        if not deadman_ms > 0:
            raise ValueError(f"dead-man interval must be > 0 ms, got {deadman_ms}")
        if not 0 <= deadman_margin_ms < deadman_ms:
            raise ValueError(
                f"dead-man margin must be in [0, {deadman_ms:g}) ms, got {deadman_margin_ms}"
            )
        if not freshness_ms > 0:
            raise ValueError(f"freshness window must be > 0 ms, got {freshness_ms}")
        self.host = host
        self.port = port
        self.key = key
        self.limits = limits
        self.array = array
        self.deadman_s = deadman_ms / 1000.0
        self.deadman_margin_s = deadman_margin_ms / 1000.0
        self.freshness_ms = freshness_ms
        self.clock_us = clock_us
        self.replay_state: ReplayState | None = None
        if state_dir is not None:
            from hardware.replay import ReplayState

            self.replay_state = ReplayState(state_dir, key, array.id_checksum())
        self.verifier = self._new_verifier()
        self.enforcer = SafetyEnforcer(limits, array)
        self.stats = StimulatorStats()
        self._zeros: StimulationFrame = StimulationFrame.zeros(array.electrode_ids, 0, 0)
        self._output: StimulationFrame = self._zeros
        self._valid_until_ns = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.receive_buffer_bytes = 0  # granted by the kernel, set by start()
        self._last_valid_ns = time.monotonic_ns()
        self.audit = audit

    def _new_verifier(self) -> FrameVerifier:
        """A verifier whose floor is max(durable mark, now): nothing sent before is accepted."""
        floor = self.clock_us()
        commit = None
        if self.replay_state is not None:
            floor = max(floor, self.replay_state.floor)
            commit = self.replay_state.commit
        return FrameVerifier(
            self.key,
            self.array.electrode_ids,
            freshness_ms=self.freshness_ms,
            floor=floor,
            clock_us=self.clock_us,
            commit=commit,
        )

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
        sock.settimeout(IDLE_WAIT_S)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.verifier = self._new_verifier()  # the floor is the time it starts listening
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="npe-stimulator", daemon=True)
        self._thread.start()

    def drain(self, quiet_ms: float = 50.0, timeout_ms: float = 5000.0) -> None:
        """Wait until no datagram has arrived for `quiet_ms` (at most `timeout_ms`).

        Why: a chain closes its link before it stops the stimulator, so every frame sent is
        already in the receive buffer; after a flood (`--as-fast-as-possible`) the simulator
        may still be working through it. Stopping at once would count those frames as lost
        on the way; draining first lets each be checked (and, if it waited too long, refused
        as stale), so a run's delivery counts tell what the stimulator did with every frame.
        """
        deadline = time.monotonic() + timeout_ms / 1000.0
        seen = -1
        while time.monotonic() < deadline and self._thread is not None and self._thread.is_alive():
            if self.stats.received == seen:
                return
            seen = self.stats.received
            time.sleep(quiet_ms / 1000.0)

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

    @property
    def output(self) -> StimulationFrame:
        """What the electrodes get now: the last accepted frame inside its validity period,
        zeros after it (a preallocated frame: nothing is built per call)."""
        with self._lock:
            if time.monotonic_ns() < self._valid_until_ns:
                return self._output
            return self._zeros

    def _halt(self) -> None:
        with self._lock:
            self._output = self._zeros
            self._valid_until_ns = 0
            self.stats.stimulating = False

    def _deadline_ns(self) -> int:
        """When the thread records the stop: the frame's validity end − margin."""
        return self.stats.last_valid_until_ns - int(self.deadman_margin_s * 1e9)

    def _valid_until(self, wire_sequence: int, received_ns: int) -> int:
        """End of a frame's validity: min(send, arrival) + interval, on the monotonic clock."""
        interval_ns = int(self.deadman_s * 1e9)
        now_ns = time.monotonic_ns()
        age_ns = min(max((self.clock_us() - wire_sequence) * 1000, 0), interval_ns)
        return min(received_ns, now_ns - age_ns) + interval_ns

    def _deadman_stop(self) -> None:
        self._halt()
        stopped = time.monotonic_ns()
        latency_ms = (stopped - self._last_valid_ns) / 1e6
        self.stats.last_deadman_stop_ns = stopped
        self.stats.deadman_latency_ms_max = max(self.stats.deadman_latency_ms_max, latency_ms)
        self.stats.deadman_stops += 1
        self._log(
            "deadman_stop",
            f"no valid frame for {latency_ms:.1f} ms (interval {self.deadman_s * 1000:g} ms): "
            "all stimulation stopped",
        )

    def _run(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while not self._stop.is_set():
            wait_s = IDLE_WAIT_S
            if self.stats.stimulating:
                left_ns = self._deadline_ns() - time.monotonic_ns()
                if left_ns <= 0:
                    self._deadman_stop()
                    continue
                wait_s = min(wait_s, left_ns / 1e9)
            sock.settimeout(wait_s)
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                break
            self.handle(data, addr, sock, received_ns=time.monotonic_ns())

    def handle(
        self,
        data: bytes,
        addr: tuple[str, int] | None,
        sock: socket.socket | None,
        *,
        received_ns: int | None = None,
    ) -> bool:
        """Process one datagram (arrived at monotonic `received_ns`); True if accepted."""
        if received_ns is None:
            received_ns = time.monotonic_ns()
        self.stats.received += 1
        try:
            decoded = self.verifier.decode(data)
        except WireError as exc:
            self.stats.rejected[exc.reason] += 1
            if self.stats.rejected[exc.reason] <= MAX_LOGGED_REJECTIONS:
                self._log("frame_rejected", str(exc))
            if self.replay_state is not None:
                self.stats.replay_state_writes = self.replay_state.writes
            if sock is not None and addr is not None and exc.reason not in UNAUTHENTICATED_REASONS:
                # Only an authenticated frame is answered; a sender that may not hold our key
                # gets no reply at all (not even a constant one: it would confirm a listener).
                self._ack(sock, addr, -1, False, exc.reason)
            return False
        if self.replay_state is not None:
            self.stats.replay_state_writes = self.replay_state.writes
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
        valid_until = self._valid_until(decoded.wire_sequence, received_ns)
        with self._lock:
            self._output = safe
            self._valid_until_ns = valid_until
            self.stats.last_valid_until_ns = valid_until
            self.stats.accepted += 1
            self.stats.stimulating = bool(safe.active.any())
            self.stats.last_wire_sequence = decoded.wire_sequence
            self.stats.last_frame_sequence = decoded.frame.sequence
            self.stats.max_amplitude_ua = max(
                self.stats.max_amplitude_ua, float(safe.amplitude_ua.max(initial=0.0))
            )
        self._last_valid_ns = received_ns
        self.stats.last_valid_ns = received_ns
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
