"""Opening and closing one stimulation chain: audit log, stimulator link, simulated stimulator.

Why one module: `npe run`, `npe bench` and `npe calibrate` all stimulate through the same
chain, and a chain is only safe when it is opened and closed in one order: the audit log
first (so the first frame sent is logged), the link last; on close the link first (nothing more
is sent), then the simulated stimulator (it has received the final zero frame), then the log
(it records both). On an error while opening, whatever was opened is closed again and the error
names the part. Callers use `open_chain` as a context manager, or `start_chain` plus
`StimulationChain.close` when the chain outlives one block (a live run).

With no link given, a `SimulatedStimulator` listens on UDP loopback and the chain talks to it
through the real `hardware.link` (real sockets, real authentication, the stimulator's own safety
check and dead-man stop), either in a child process (`StimulatorProcess`, what a real
stimulator's own hardware looks like to the runtime) or on a thread. The simulator's key is an
ephemeral random one (this chain made both ends); a real link uses the device key file
(`hardware.keys.load_or_create_device_key`) unless a key is given.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from hardware.arrays import ElectrodeArray, load_array
from hardware.audit import AuditLog
from hardware.link import StimulatorLink, open_link
from hardware.safety import SafetyLimits
from hardware.simulator_mode import SimulatorMode
from hardware.stimulator import SimulatedStimulator, StimulatorStatsSnapshot

__all__ = [
    "STIMULATOR_NICE",
    "SimulatorMode",
    "StimulationChain",
    "StimulatorProcess",
    "open_chain",
    "start_chain",
]

#: Niceness of the simulated stimulator's process. Why: it stands in for a stimulator's own
#: hardware, but on a 2-core computer it shares the runtime's cores; at the default niceness
#: each datagram woke it on the loop's core and preempted the loop until the frame was
#: checked (send stage 1.3 ms at p50); at +10 it runs beside or after the loop instead
#: (send 0.4 ms), and still keeps up at 100 frames/s.
STIMULATOR_NICE = 10


def _serve(conn: Connection, key: bytes, array: str, limits_json: str) -> None:
    """Child-process body: run a SimulatedStimulator until told to stop; report its stats.

    SIGINT is ignored here: Ctrl-C in a terminal reaches the whole process group, and the
    stimulator must outlive the runtime's shutdown to receive its final zero frame (the
    runtime tells it when to stop).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):
        os.nice(STIMULATOR_NICE)
    arr = load_array(array)
    stim = SimulatedStimulator(
        "127.0.0.1", 0, key, SafetyLimits.model_validate_json(limits_json), arr
    )
    stim.start()
    gc.collect()  # setup objects out of the collector's reach, as in the runtime
    gc.freeze()
    conn.send(stim.port)
    conn.recv()  # any message = stop
    stim.drain()  # the link is closed: let it check every frame already in its buffer
    stim.stop()
    conn.send(stim.stats.snapshot().model_dump_json())


class StimulatorProcess:
    """A SimulatedStimulator in its own process, so it does not compete for the runtime's GIL.

    Why: in one interpreter, the simulator thread's per-frame verification and safety check
    hold the GIL while the real-time loop waits; on 2 cores a separate process is what a
    real stimulator (its own hardware) looks like to the runtime anyway.
    """

    def __init__(self, key: bytes, array: str, limits: SafetyLimits) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(child, key, array, limits.model_dump_json()), daemon=True
        )
        self._proc.start()
        if not self._conn.poll(60):
            self._proc.kill()
            raise OSError("simulated stimulator process did not start within 60 s")
        self.port: int = self._conn.recv()
        self._stats: StimulatorStatsSnapshot | None = None

    def stop(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send("stop")
                if self._conn.poll(10):
                    self._stats = StimulatorStatsSnapshot.model_validate_json(self._conn.recv())
            except (OSError, EOFError):
                pass
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()

    @property
    def stats(self) -> StimulatorStatsSnapshot | None:
        """Its final counters (None until stop() has received them)."""
        return self._stats


@dataclass
class StimulationChain:
    """An open chain: its array, limits, audit log, link and (if simulated) stimulator."""

    array: ElectrodeArray
    limits: SafetyLimits
    audit: AuditLog
    link: StimulatorLink
    stimulator: SimulatedStimulator | StimulatorProcess | None
    link_spec: str

    def close(self) -> None:
        """Close link, then stop the simulator, then close the log (always all three)."""
        try:
            self.link.close()
        finally:
            try:
                if isinstance(self.stimulator, SimulatedStimulator):
                    self.stimulator.drain()  # as the process does: every frame sent is checked
                if self.stimulator is not None:
                    self.stimulator.stop()
            finally:
                self.audit.close()

    def stimulator_stats(self) -> StimulatorStatsSnapshot | None:
        """Stats of the simulated stimulator (for a separate process: after close()); None
        with a real link (its counters are the device's own)."""
        if isinstance(self.stimulator, SimulatedStimulator):
            return self.stimulator.stats.snapshot()
        if isinstance(self.stimulator, StimulatorProcess):
            return self.stimulator.stats
        return None


def start_chain(
    array: ElectrodeArray,
    limits: SafetyLimits,
    audit_path: Path,
    note: str,
    link: str | None = None,
    key: bytes | None = None,
    key_file: Path | None = None,
    simulator: SimulatorMode = SimulatorMode.PROCESS,
    deadman_ms: float | None = None,
    link_audit: bool = False,
    array_spec: str | None = None,
) -> StimulationChain:
    """Open a chain (see the module docstring); on error nothing is left open.

    Args:
        link: a link spec (``udp://``, ``serial://``, ``file://``); None starts a simulated
            stimulator on UDP loopback.
        key: the link's key; default: an ephemeral key for a simulator, else the device key
            file `key_file` (or its default location).
        deadman_ms: the simulator's dead-man interval (only with a thread simulator; default
            the stimulator's own).
        link_audit: let the link log its own events (acks, resends) into the audit log too.
        array_spec: the name or file the array was loaded from (a simulator process loads it
            again; default: the array's name, i.e. a shipped array).
    """
    if link is not None and key is None:
        # Before the audit log exists: a refused key file must leave nothing behind.
        from hardware.keys import load_or_create_device_key

        key = load_or_create_device_key(key_file)
    audit_path.parent.mkdir(parents=True, exist_ok=True)
    audit = AuditLog(audit_path, array, limits, note=note)
    stim: SimulatedStimulator | StimulatorProcess | None = None
    try:
        if link is None:
            key = secrets.token_bytes(32)
            if simulator is SimulatorMode.PROCESS and deadman_ms is None:
                stim = StimulatorProcess(key, array_spec or array.name, limits)
            else:
                kwargs: dict[str, Any] = {} if deadman_ms is None else {"deadman_ms": deadman_ms}
                stim = SimulatedStimulator("127.0.0.1", 0, key, limits, array, **kwargs)
                stim.start()
            link = f"udp://127.0.0.1:{stim.port}"
        assert key is not None
        lnk = open_link(link, key, audit if link_audit else None)
    except BaseException:
        if stim is not None:
            stim.stop()
        audit.close()
        raise
    return StimulationChain(array, limits, audit, lnk, stim, link)


@contextmanager
def open_chain(
    array: ElectrodeArray,
    limits: SafetyLimits,
    audit_path: Path,
    note: str,
    **options: Any,
) -> Iterator[StimulationChain]:
    """`start_chain` as a context manager: the chain is closed in order however the block ends."""
    chain = start_chain(array, limits, audit_path, note, **options)
    try:
        yield chain
    finally:
        chain.close()
