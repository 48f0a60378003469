"""Wiring the hardware side of a live run: array, limits, pipeline, link, audit log.

Why here: `npe run` with no arguments must work on any machine, so by default a
`hardware.stimulator.SimulatedStimulator` in a child process (`StimulatorProcess`; or on a
thread in this process, `stimulator="thread"`) listens on UDP loopback and the runtime sends to it
through the real `hardware.link` (real sockets, real authentication, the stimulator's own
safety check and dead-man stop). With the simulator the key is an ephemeral
random one (this run made both ends); a real stimulator (`--link`) uses the device key
file (`hardware.keys.load_or_create_device_key`).

The audit log is written by the loop (`AuditLog.frame` for every frame sent, events for
faults); the pipeline logs its safety events into the same log.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from hardware.arrays import ElectrodeArray, load_array
from hardware.audit import AuditLog
from hardware.calibration_file import PatientCalibration, load_calibration
from hardware.link import StimulatorLink, open_link
from hardware.pipeline import StimulationPipeline
from hardware.safety import SafetyLimits
from hardware.stimulator import SimulatedStimulator

StimulatorMode = Literal["thread", "process"]


#: Niceness of the simulated stimulator's process. Why: it stands in for a stimulator's own
#: hardware, but on a 2-core computer it shares the runtime's cores; at the default niceness
#: each datagram woke it on the loop's core and preempted the loop until the frame was
#: checked (send stage 1.3 ms at p50); at +10 it
#: runs beside or after the loop instead (send 0.4 ms), and still keeps up at 100 frames/s.
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
    stim.stop()
    conn.send(stim.stats.as_dict())


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
        self._stats: dict[str, Any] = {}

    def stop(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send("stop")
                if self._conn.poll(10):
                    self._stats = self._conn.recv()
            except (OSError, EOFError):
                pass
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()

    @property
    def stats_dict(self) -> dict[str, Any]:
        return self._stats


@dataclass
class HardwareChain:
    """Everything downstream of the model for one run (close() releases it in order)."""

    array: ElectrodeArray
    limits: SafetyLimits
    calibration: PatientCalibration | None
    pipeline: StimulationPipeline
    link: StimulatorLink
    audit: AuditLog
    stimulator: SimulatedStimulator | StimulatorProcess | None
    link_spec: str

    def close(self) -> None:
        """Close link, then stop the simulator, then close the log (always all three)."""
        try:
            self.link.close()
        finally:
            try:
                if self.stimulator is not None:
                    self.stimulator.stop()
            finally:
                self.audit.close()

    def stimulator_stats(self) -> dict[str, Any]:
        """Stats of the simulated stimulator (for a separate process: after close())."""
        if isinstance(self.stimulator, SimulatedStimulator):
            return self.stimulator.stats.as_dict()
        if isinstance(self.stimulator, StimulatorProcess):
            return self.stimulator.stats_dict
        return {}


def build_chain(
    array: str = "utah96",
    calibration: Path | None = None,
    limits: Path | None = None,
    link: str | None = None,
    log_path: Path = Path("audit.log"),
    key_file: Path | None = None,
    stimulator: StimulatorMode = "process",
) -> HardwareChain:
    """Open the hardware chain; on error nothing is left open (and the error names the part)."""
    arr = load_array(array)
    lim = SafetyLimits.load(limits) if limits is not None else SafetyLimits()
    cal = load_calibration(calibration) if calibration is not None else None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    audit = AuditLog(log_path, arr, lim, note="npe run")
    stim: SimulatedStimulator | StimulatorProcess | None = None
    try:
        pipeline = StimulationPipeline(arr, cal, lim, audit=audit)
        if link is None:
            key = os.urandom(32)
            if stimulator == "process":
                stim = StimulatorProcess(key, array, lim)
            else:
                stim = SimulatedStimulator("127.0.0.1", 0, key, lim, arr)
                stim.start()
            link = f"udp://127.0.0.1:{stim.port}"
        else:
            from hardware.keys import load_or_create_device_key

            key = load_or_create_device_key(key_file)
        lnk = open_link(link, key)
    except BaseException:
        if stim is not None:
            stim.stop()
        audit.close()
        raise
    return HardwareChain(arr, lim, cal, pipeline, lnk, audit, stim, link)
