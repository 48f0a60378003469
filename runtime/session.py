"""One live session: the lifecycle `npe run` and `npe bench` share (issue 14).

Why one object: a live run is only safe and its numbers only comparable when it is built,
started and torn down in one order, and that order used to be written twice (the command
and the benchmark). `LiveSession` owns it:

1. open: the ONNX Runtime session, the frame source (a camera gets its watchdog timeout;
   pacing "as fast as possible" is refused for a camera), the preprocessor, then the hardware
   chain (audit log → simulated stimulator → link, `runtime.hardware_chain`; for an implant
   one log and a stimulator and link per array, `build_implant_chain`), then the loop
   with the clock the plan asks for: `RealClock` paced at the bin rate (optionally spinning
   the last µs) or `VirtualClock` as fast as possible. A failure closes whatever was opened.
2. run: SIGINT/SIGTERM (main thread only) ask the loop to stop, so it still sends its final
   zero frame and logs the stop; the GIL switch interval is shortened and the setup heap
   frozen for the run and restored after it; host steal time is read around it. The loop
   warms itself up before its clock starts (`StreamingRuntime.warm_up`).
3. close: the source, then the chain (link closed, the simulated stimulator drains its
   buffer and stops, the log is closed), then the results are collected into a typed
   `SessionOutcome`: the run summary, pipeline events, link counters, the stimulator's
   snapshot and the `DeliverySummary` (sent, received, accepted, refused by reason, lost);
   for an implant one `LinkDelivery` row per array link and their total.
"""

from __future__ import annotations

import dataclasses
import gc
import signal
import sys
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from pydantic import BaseModel, ConfigDict

from hardware.arrays import DEFAULT_ARRAY
from hardware.delivery import DeliverySummary, LinkDelivery
from hardware.link import LinkStats
from hardware.simulator_mode import SimulatorMode
from hardware.stimulator import StimulatorStatsSnapshot
from runtime.clock import BinClock, RealClock, VirtualClock
from runtime.errors import NpeRuntimeError
from runtime.hardware_chain import (
    HardwareChain,
    ImplantHardwareChain,
    build_chain,
    build_implant_chain,
)
from runtime.inference import OrtEngine, SessionSettings
from runtime.loop import LoopConfig, RunSummary, StreamingRuntime
from runtime.preprocess import Preprocessor
from runtime.realtime import freeze_heap, host_steal_s, tune_interpreter
from runtime.sources import CameraSource, FrameSource, SourceError, open_source
from runtime.spec import FormSpec, ModelSpec


class SessionError(NpeRuntimeError, RuntimeError):
    """A session used out of order (run before open, results before close)."""


class Pacing(StrEnum):
    """How the bin clock advances: paced at the bin rate, or as fast as possible."""

    REAL_TIME = "real time"
    AS_FAST_AS_POSSIBLE = "as fast as possible"


@dataclass(frozen=True)
class SessionPlan:
    """What a live session is made of (the command's flags, resolved).

    source: a source spec (`runtime.sources.open_source`); log_path: the audit log;
    link None: a simulated stimulator (`stimulator` says where it runs); spin_us: with
    real-time pacing, busy-wait this long before each deadline; stall_timeout_ms: a camera
    without a new frame this long is stalled; latency_capacity: bins kept for percentiles.
    """

    source: str
    log_path: Path
    pacing: Pacing = Pacing.REAL_TIME
    spin_us: float = 0.0
    array: str = DEFAULT_ARRAY
    calibration: Path | None = None
    limits: Path | None = None
    link: str | None = None
    key_file: Path | None = None
    stimulator: SimulatorMode = SimulatorMode.PROCESS
    camera_fov_deg: float = 60.0
    source_fps: float | None = None
    stall_timeout_ms: float = 250.0
    latency_capacity: int = 100_000
    handle_signals: bool = True
    #: An implant (a shipped name or a file) instead of `array`: one pipeline, one link and
    #: simulated stimulator per array, one version-2 audit log (`build_implant_chain`).
    implant: str | None = None
    #: With `implant`: send to the links its file names instead of simulated stimulators.
    implant_links: bool = False


class SessionOutcome(BaseModel):
    """What a closed session leaves: its results, typed (written with the model's JSON).

    summary: None when the run did not complete (an error, or never run);
    stimulator: a single array's simulated stimulator (None with a real link or an implant);
    switch_interval_s: the GIL switch interval the loop ran with;
    host_steal_s: CPU time the hypervisor took during the run (None off Linux).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pacing: Pacing
    summary: RunSummary | None
    pipeline_events: dict[str, int]
    link_stats: LinkStats
    stimulator: StimulatorStatsSnapshot | None
    #: For an implant: the total over `links` (`DeliverySummary.total`).
    delivery: DeliverySummary
    #: For an implant: one row per array link (its own stimulator's snapshot); else empty.
    links: tuple[LinkDelivery, ...] = ()
    switch_interval_s: float | None = None
    host_steal_s: float | None = None


class LiveSession:
    """Build, run and close one live stream (see the module docstring). A context manager:

    ```
    with LiveSession(spec, form, settings, plan) as s:
        s.run(duration_s=10)
    s.outcome.delivery.line()
    ```
    """

    def __init__(
        self, spec: ModelSpec, form: FormSpec, settings: SessionSettings, plan: SessionPlan
    ) -> None:
        self.spec = spec
        self.form = form
        self.settings = settings
        self.plan = plan
        self._engine: OrtEngine | None = None
        self._source: FrameSource | None = None
        self._chain: HardwareChain | ImplantHardwareChain | None = None
        self._runtime: StreamingRuntime | None = None
        self._summary: RunSummary | None = None
        self._outcome: SessionOutcome | None = None
        self._switch_interval_s: float | None = None
        self._steal_s: float | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def open(self) -> LiveSession:
        """Open everything in order; on an error close what was opened and re-raise."""
        if self._runtime is not None:
            return self
        plan = self.plan
        engine = OrtEngine(self.form, self.settings)
        src = open_source(plan.source, fps=plan.source_fps)
        try:
            if isinstance(src, CameraSource):
                src.watchdog.stall_timeout_ns = int(plan.stall_timeout_ms * 1e6)
                if plan.pacing is Pacing.AS_FAST_AS_POSSIBLE:
                    raise SourceError(
                        "--as-fast-as-possible needs a file, images or synthetic source"
                    )
            pre = Preprocessor(self.spec, plan.camera_fov_deg)
            chain: HardwareChain | ImplantHardwareChain
            if plan.implant is not None:
                chain = build_implant_chain(
                    plan.implant,
                    plan.calibration,
                    plan.limits,
                    plan.log_path,
                    plan.key_file,
                    plan.stimulator,
                    plan.implant_links,
                )
            else:
                chain = build_chain(
                    plan.array,
                    plan.calibration,
                    plan.limits,
                    plan.link,
                    plan.log_path,
                    plan.key_file,
                    plan.stimulator,
                )
        except BaseException:
            src.close()
            raise
        clock: BinClock = (
            VirtualClock()
            if plan.pacing is Pacing.AS_FAST_AS_POSSIBLE
            else RealClock(int(plan.spin_us * 1e3))
        )
        self._engine, self._source, self._chain = engine, src, chain
        self._runtime = StreamingRuntime(
            self.spec,
            engine,
            src,
            pre,
            chain.pipeline,
            chain.link,
            chain.audit,
            clock=clock,
            config=LoopConfig(latency_capacity=max(1, plan.latency_capacity)),
        )
        return self

    def __enter__(self) -> LiveSession:
        """Open (unless open() was called already, to tell open errors from run errors)."""
        return self if self._runtime is not None else self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(self, duration_s: float | None = None, max_bins: int | None = None) -> RunSummary:
        """Run until stop(), a signal, duration_s, max_bins or the end of the source."""
        rt = self.runtime
        handlers: dict[int, object] = {}
        if self.plan.handle_signals and threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, _frame: object) -> None:
                rt.stop()

            handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        switch_interval = sys.getswitchinterval()
        # As a prosthesis computer would run it: a short GIL switch interval (a display or
        # reader thread must not hold the loop up) and the setup heap out of the collector's
        # reach; both restored afterwards (a benchmark runs several sessions in one process).
        tune_interpreter()
        freeze_heap()
        steal0 = host_steal_s()
        try:
            self._summary = rt.run(duration_s=duration_s, max_bins=max_bins)
        finally:
            steal1 = host_steal_s()
            self._steal_s = None if steal0 is None or steal1 is None else steal1 - steal0
            self._switch_interval_s = sys.getswitchinterval()
            sys.setswitchinterval(switch_interval)
            gc.unfreeze()
            for s, h in handlers.items():
                signal.signal(s, h)  # type: ignore[arg-type]
        return self._summary

    def stop(self) -> None:
        """Ask the loop to stop after its current bin (safe from threads and handlers)."""
        if self._runtime is not None:
            self._runtime.stop()

    def close(self) -> SessionOutcome:
        """Close the source, then the chain in its order; collect the outcome (idempotent)."""
        if self._outcome is not None:
            return self._outcome
        if self._chain is None or self._source is None:
            raise SessionError("session was never opened")
        chain = self._chain
        try:
            self._source.close()
        finally:
            pipe_events = chain.pipeline_events()
            link_stats = dataclasses.replace(chain.link.stats)
            chain.close()
        stim = chain.stimulator_stats()
        links = tuple(chain.link_delivery())
        delivery = (
            DeliverySummary.total([row.delivery for row in links])
            if links
            else DeliverySummary.of(link_stats, stim)
        )
        self._outcome = SessionOutcome(
            pacing=self.plan.pacing,
            summary=self._summary,
            pipeline_events=pipe_events,
            link_stats=link_stats,
            stimulator=stim,
            delivery=delivery,
            links=links,
            switch_interval_s=self._switch_interval_s,
            host_steal_s=self._steal_s,
        )
        return self._outcome

    # -- parts, for callers that add to the run (audit events, preview, status) ---------
    @property
    def runtime(self) -> StreamingRuntime:
        if self._runtime is None:
            raise SessionError("session is not open")
        return self._runtime

    @property
    def chain(self) -> HardwareChain | ImplantHardwareChain:
        if self._chain is None:
            raise SessionError("session is not open")
        return self._chain

    @property
    def source(self) -> FrameSource:
        if self._source is None:
            raise SessionError("session is not open")
        return self._source

    @property
    def engine(self) -> OrtEngine:
        if self._engine is None:
            raise SessionError("session is not open")
        return self._engine

    @property
    def outcome(self) -> SessionOutcome:
        """The results (after close())."""
        if self._outcome is None:
            raise SessionError("session is not closed yet")
        return self._outcome
