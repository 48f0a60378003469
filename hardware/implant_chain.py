"""One stimulation chain for an implant: one audit log, one link and one stimulator per array.

Why a module of its own (beside `hardware.chain`): an implant has one stimulator per array
(a stimulator drives ≤ 16 channels), so a run opens N links, each with its own key, wire
sequence and the stimulator's own anti-replay state, and one audit log that records every
array's frames (`AuditLog(implant=...)`, version 2). The open/close order is the single
chain's: the log first, then the simulated stimulators, then the links; on close the links
first, then the stimulators (they have received the final zero frames), then the log.

Simulated stimulators (no real links): one `SimulatedStimulator` per array, each on its own
UDP loopback port with its own ephemeral key, either all in one child process (one thread
per array there: 16 spawned interpreters would cost ~16 × the start-up for nothing) or on
threads in this process.

The live loop sees an implant through three small adapters that share one `ImplantBus`:
- `bus.pipeline`: `ImplantPipeline` (one rate field → one frame per array, per-array and
  implant-wide caps) presented as one frame of every electrode of the implant (ids qualified,
  "left-01:e3"), copied into a preallocated ring: what the loop counts and the preview draws;
- `bus.link`: sends the bin's per-array frames, one per link. A link that fails to write a
  frame is a fault: every link is sent a zero frame (the reason logged on every array) and
  `ImplantLinkError` stops the run;
- `bus.audit`: writes one array-frame record per array for each bin (array index in each).
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from hardware.arrays import parse_array
from hardware.audit import AuditLog
from hardware.chain import STIMULATOR_NICE
from hardware.delivery import DeliverySummary, LinkDelivery
from hardware.implant import Implant, ImplantPipeline
from hardware.link import LinkError, LinkStats, StimulatorLink, open_link
from hardware.pipeline import RING_FRAMES
from hardware.safety import SafetyLimits
from hardware.simulator_mode import SimulatorMode
from hardware.stimulator import SimulatedStimulator, StimulatorStatsSnapshot
from hardware.types import RateField, StimulationFrame

__all__ = [
    "ImplantBus",
    "ImplantChain",
    "ImplantLinkError",
    "ImplantStimulatorProcess",
    "LinkDelivery",
    "start_implant_chain",
]


class ImplantLinkError(LinkError):
    """An implant link failed mid-run (every link was sent zero stimulation first)."""


def _serve_many(conn: Connection, keys: list[bytes], arrays: list[str], limits_json: str) -> None:
    """Child-process body: one SimulatedStimulator per array until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):
        os.nice(STIMULATOR_NICE)
    import json

    limits = SafetyLimits.model_validate_json(limits_json)
    stims = [
        SimulatedStimulator("127.0.0.1", 0, key, limits, parse_array(json.loads(doc)))
        for key, doc in zip(keys, arrays, strict=True)
    ]
    for s in stims:
        s.start()
    gc.collect()
    gc.freeze()
    conn.send([s.port for s in stims])
    conn.recv()  # any message = stop
    _drain(stims)
    for s in stims:
        s.stop()
    conn.send([s.stats.snapshot().model_dump_json() for s in stims])


#: How long stopping waits for the stimulators to work through frames still queued (s).
DRAIN_TIMEOUT_S = 10.0


def _drain(stims: list[SimulatedStimulator]) -> None:
    """Wait until no stimulator has received anything for 50 ms (at most DRAIN_TIMEOUT_S).

    Why: N stimulator threads share one (niced) process; after a burst, frames the sender
    already wrote may still wait in the sockets' buffers. Stopping at once would count them
    as lost; they are checked (and, if too old by then, refused as stale) instead.
    """
    end = time.monotonic() + DRAIN_TIMEOUT_S
    before = [s.stats.received for s in stims]
    while time.monotonic() < end:
        time.sleep(0.05)
        now = [s.stats.received for s in stims]
        if now == before:
            return
        before = now


class ImplantStimulatorProcess:
    """The implant's simulated stimulators in one niced child process (one thread per array)."""

    def __init__(self, keys: list[bytes], implant: Implant, limits: SafetyLimits) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        docs = [a.array.to_json() for a in implant.arrays]
        self._proc = ctx.Process(
            target=_serve_many, args=(child, keys, docs, limits.model_dump_json()), daemon=True
        )
        self._proc.start()
        if not self._conn.poll(60):
            self._proc.kill()
            raise OSError("simulated stimulator process did not start within 60 s")
        self.ports: list[int] = self._conn.recv()
        self._stats: list[StimulatorStatsSnapshot | None] = [None for _ in self.ports]

    def stop(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send("stop")
                if self._conn.poll(10 + DRAIN_TIMEOUT_S):
                    self._stats = [
                        StimulatorStatsSnapshot.model_validate_json(doc)
                        for doc in self._conn.recv()
                    ]
            except (OSError, EOFError):
                pass
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()

    @property
    def stats(self) -> list[StimulatorStatsSnapshot | None]:
        """Per array, the final snapshot (None until stopped, or if the child died)."""
        return self._stats


@dataclass
class ImplantChain:
    """An open implant chain: one audit log; per array (implant order) a link and its spec."""

    implant: Implant
    limits: SafetyLimits
    audit: AuditLog
    links: list[StimulatorLink]
    link_specs: list[str]
    stimulators: ImplantStimulatorProcess | list[SimulatedStimulator] | None

    def close(self) -> None:
        """Close every link, then stop the stimulators, then close the log (always all)."""
        try:
            for lnk in self.links:
                try:
                    lnk.close()
                except OSError:
                    pass
        finally:
            try:
                if isinstance(self.stimulators, ImplantStimulatorProcess):
                    self.stimulators.stop()
                elif self.stimulators is not None:
                    _drain(self.stimulators)
                    for s in self.stimulators:
                        s.stop()
            finally:
                self.audit.close()

    def stimulator_stats(self) -> list[StimulatorStatsSnapshot | None]:
        """Per array, the simulated stimulator's snapshot (None for a real link; for a
        stimulator process: after close())."""
        if isinstance(self.stimulators, ImplantStimulatorProcess):
            return self.stimulators.stats
        if self.stimulators is not None:
            return [s.stats.snapshot() for s in self.stimulators]
        return [None for _ in self.links]

    def delivery(
        self, stats: list[StimulatorStatsSnapshot | None] | None = None
    ) -> list[LinkDelivery]:
        """One row per link (call after close() for a stimulator process's stats)."""
        stim = stats if stats is not None else self.stimulator_stats()
        return [
            LinkDelivery(
                label=a.label,
                link=spec,
                acks=lnk.stats.acks,
                nacks=lnk.stats.nacks,
                delivery=DeliverySummary.of(lnk.stats, st),
            )
            for a, lnk, spec, st in zip(
                self.implant.arrays, self.links, self.link_specs, stim, strict=True
            )
        ]


def start_implant_chain(
    implant: Implant,
    limits: SafetyLimits,
    audit_path: Path,
    note: str,
    *,
    use_implant_links: bool = False,
    key: bytes | None = None,
    key_file: Path | None = None,
    simulator: SimulatorMode = SimulatorMode.PROCESS,
    deadman_ms: float | None = None,
) -> ImplantChain:
    """Open an implant chain; on error nothing is left open.

    Args:
        use_implant_links: send to the links the implant file names (every array needs one),
            all with `key` or the device key file (`key_file`); otherwise (default) one
            simulated stimulator per array on UDP loopback, each with its own random key.
        deadman_ms: the simulators' dead-man interval (thread simulators only).
    """
    if use_implant_links:
        missing = [a.label for a in implant.arrays if a.link is None]
        if missing:
            raise LinkError(
                f"implant {implant.name!r}: no link given for array(s) {', '.join(missing[:5])}"
            )
    audit_path.parent.mkdir(parents=True, exist_ok=True)
    audit = AuditLog(audit_path, None, limits, note=note, implant=implant)
    stims: ImplantStimulatorProcess | list[SimulatedStimulator] | None = None
    links: list[StimulatorLink] = []
    try:
        if use_implant_links:
            if key is None:
                from hardware.keys import load_or_create_device_key

                key = load_or_create_device_key(key_file)
            keys = [key for _ in implant.arrays]
            specs = [str(a.link) for a in implant.arrays]
        else:
            keys = [secrets.token_bytes(32) for _ in implant.arrays]
            if simulator is SimulatorMode.PROCESS and deadman_ms is None:
                stims = ImplantStimulatorProcess(keys, implant, limits)
                ports = stims.ports
            else:
                kwargs: dict[str, Any] = {} if deadman_ms is None else {"deadman_ms": deadman_ms}
                stims = []
                for k, a in zip(keys, implant.arrays, strict=True):
                    s = SimulatedStimulator("127.0.0.1", 0, k, limits, a.array, **kwargs)
                    stims.append(s)
                    s.start()
                ports = [s.port for s in stims]
            specs = [f"udp://127.0.0.1:{p}" for p in ports]
        for spec, k in zip(specs, keys, strict=True):
            links.append(open_link(spec, k))
    except BaseException:
        for lnk in links:
            lnk.close()
        if isinstance(stims, ImplantStimulatorProcess):
            stims.stop()
        elif stims:
            for s in stims:
                s.stop()
        audit.close()
        raise
    return ImplantChain(implant, limits, audit, links, specs, stims)


# -- the live loop's view ------------------------------------------------------------------


@dataclass
class _Bin:
    """The frames of the newest bin: the implant frame the loop holds, and its parts."""

    combined: StimulationFrame | None = None
    parts: tuple[StimulationFrame, ...] = ()
    zero: bool = False


class _ImplantAsOne:
    """`ImplantPipeline` as the loop's pipeline: one frame of every electrode per bin."""

    def __init__(self, bus: ImplantBus) -> None:
        self.bus = bus
        imp = bus.pipeline_.implant
        ids = imp.electrode_ids
        n = len(ids)
        sizes = [a.array.n for a in imp.arrays]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._ring: list[StimulationFrame] = []
        self._dst: list[list[tuple[np.ndarray, ...]]] = []
        for _ in range(RING_FRAMES):
            f = StimulationFrame.zeros(ids, 0, 0)
            self._ring.append(f)
            self._dst.append(
                [
                    tuple(
                        x[bounds[a] : bounds[a + 1]]
                        for x in (
                            f.amplitude_ua,
                            f.phase_width_us,
                            f.interphase_gap_us,
                            f.pulse_rate_hz,
                            f.n_pulses,
                        )
                    )
                    for a in range(len(sizes))
                ]
            )
        self._at = 0
        self._sequence = 0
        self.n = n

    @property
    def events(self) -> dict[str, int]:
        """Implant-level and every array's event counts ("label:kind" for an array's)."""
        pipe = self.bus.pipeline_
        out = {str(k): int(v) for k, v in pipe.events.items()}
        for label, p in pipe.pipelines.items():
            for k, v in p.events.items():
                out[f"{label}:{k}"] = int(v)
        return out

    def _combine(self, parts: tuple[StimulationFrame, ...], zero: bool) -> StimulationFrame:
        at = self._at
        self._at = (at + 1) % RING_FRAMES
        f = self._ring[at]
        for dst, p in zip(self._dst[at], parts, strict=True):
            np.copyto(dst[0], p.amplitude_ua)
            np.copyto(dst[1], p.phase_width_us)
            np.copyto(dst[2], p.interphase_gap_us)
            np.copyto(dst[3], p.pulse_rate_hz)
            np.copyto(dst[4], p.n_pulses)
        self._sequence += 1
        f._restamp(self._sequence, parts[0].timestamp_ns if parts else time.monotonic_ns())
        b = self.bus.newest
        b.combined, b.parts, b.zero = f, parts, zero
        return f

    def process(self, rate_field: RateField) -> StimulationFrame:
        try:
            parts = self.bus.pipeline_.process(rate_field)
        except Exception as exc:  # never raise on the live path: zero every array instead
            return self.zero(f"internal error: {exc!r}")
        return self._combine(parts, False)

    def zero(self, reason: str) -> StimulationFrame:
        return self._combine(self.bus.pipeline_.zero(reason), True)

    def warm_up(self, rate_field: RateField) -> None:
        self.bus.pipeline_.warm_up(rate_field)


class _ImplantLinks:
    """Sends each bin's per-array frames, one per link (see the module docstring)."""

    def __init__(self, bus: ImplantBus) -> None:
        self.bus = bus

    @property
    def stats(self) -> LinkStats:
        """The links' counters summed (per link: `ImplantChain.delivery`)."""
        total = LinkStats()
        for lnk in self.bus.chain.links:
            s = lnk.stats
            total.sent += s.sent
            total.bytes_sent += s.bytes_sent
            total.send_errors += s.send_errors
            total.acks += s.acks
            total.nacks += s.nacks
            total.bad_acks += s.bad_acks
            if s.last_nack_reason is not None:
                total.last_nack_reason = s.last_nack_reason
            if s.last_send_error is not None:
                total.last_send_error = s.last_send_error
        return total

    def send(self, frame: StimulationFrame) -> None:
        b = self.bus.newest
        if frame is not b.combined:
            raise ImplantLinkError("implant link: a frame that is not the newest bin's; not sent")
        failed = -1
        for i, (lnk, part) in enumerate(zip(self.bus.chain.links, b.parts, strict=True)):
            errors = lnk.stats.send_errors
            lnk.send(part)
            if failed < 0 and lnk.stats.send_errors > errors:
                failed = i
        self.bus.sent_bins += 1
        if failed >= 0 and not b.zero:
            self._fault(failed)

    def poll(self) -> None:
        """Read every link's acknowledgements (the loop calls this after a bin's frames)."""
        for lnk in self.bus.chain.links:
            lnk.poll()

    def _fault(self, index: int) -> None:
        """Link `index` failed: log the bin as sent, zero every link, log that, stop the run.

        Why the bin's other frames still went out: each is within its limits, the zero
        frames follow at once, and every array's frame sequence stays continuous in the log.
        """
        chain = self.bus.chain
        label = chain.implant.arrays[index].label
        for i, part in enumerate(self.bus.newest.parts):
            chain.audit.array_frame(i, part)
        reason = (
            f"link {label} ({chain.link_specs[index]}) failed to send; "
            "every link set to zero stimulation"
        )
        chain.audit.event("link_fault", reason)
        zeros = self.bus.pipeline.zero(reason)
        self.send(zeros)  # a zero bin: sent on every link, failures counted, never raised
        self.bus.audit.frame(zeros)
        self.bus.faults += 1
        raise ImplantLinkError(reason)

    def close(self) -> None:
        """The chain closes the links (`ImplantChain.close`)."""


class _ImplantAudit:
    """Writes each bin's per-array frames (one array-frame record each) and the loop's events."""

    def __init__(self, bus: ImplantBus) -> None:
        self.bus = bus

    def frame(self, frame: StimulationFrame) -> None:
        b = self.bus.newest
        if frame is not b.combined:
            raise ImplantLinkError("implant audit: a frame that is not the newest bin's")
        log = self.bus.chain.audit
        for i, part in enumerate(b.parts):
            log.array_frame(i, part)

    def event(self, kind: str, detail: str) -> None:
        self.bus.chain.audit.event(kind, detail)

    def close(self) -> None:
        """The chain closes the log (`ImplantChain.close`)."""


@dataclass
class ImplantBus:
    """An implant run's pipeline, links and audit log as the live loop uses them.

    `pipeline`, `link` and `audit` satisfy the loop's Pipeline/Link/Audit interfaces; the
    loop hands each bin's implant frame from one to the next, and the bus keeps the per-array
    frames it came from (`newest`), so nothing is rebuilt or looked up per bin.
    """

    chain: ImplantChain
    pipeline_: ImplantPipeline
    newest: _Bin = field(default_factory=_Bin)
    sent_bins: int = 0
    faults: int = 0

    def __post_init__(self) -> None:
        self.pipeline = _ImplantAsOne(self)
        self.link = _ImplantLinks(self)
        self.audit = _ImplantAudit(self)
