"""The live loop: one iteration per bin of the model's frame clock.

Per bin k (deadline = t0 + (k+1)·P on the bin clock):
  capture → preprocess (newest frame, sample-and-hold) → bin (a window model's ring; a step
  model holds the frame in its own bound input) → infer (ORT step or window) → map
  (`RateField` → hardware pipeline: mapping + safety) → send (link + audit log). Each stage
  is timed with time.monotonic_ns into a fixed LatencyRecorder; the bin's bookkeeping (the
  active-electrode count, reading the stimulator's acks) follows the send, untimed.

Safety and boundedness (ARCHITECTURE.md "Principles"):
- a source that fails, raises or stalls (watchdog: frame age) → a zero stimulation frame
  that very bin, a reconnect, zero frames every bin until frames flow again, and the model
  restarts from a blank (grey) window and zero state;
- overload: if the bin's work ends after the next bin's deadline, the loop skips straight to
  the newest due bin (skipped bins counted as dropped; the ring still advances with the held
  frame so the window's time axis stays right); there is never a backlog;
- shutdown (stop event, duration, end of a file, or an exception): a zero frame is sent and
  logged in `finally`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from hardware import compiled as compiled_forms
from hardware.delivery import DeliverySummary, LinkDelivery
from hardware.link import POLL_EVERY, LinkStats
from hardware.stimulator import StimulatorStatsSnapshot
from hardware.types import RateField, StimulationFrame, count_active
from runtime.binning import RingWindow, SampleAndHoldBinner
from runtime.clock import BinClock, RealClock
from runtime.latency import STAGES, LatencyRecorder, LatencyStats, Stage
from runtime.preprocess import Preprocessor
from runtime.sources import FrameSource, SourceStats
from runtime.spec import FormSpec, ModelSpec


class Engine(Protocol):
    """`runtime.inference.OrtEngine`'s interface as the loop uses it (tests wrap it)."""

    @property
    def form(self) -> FormSpec: ...
    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]: ...
    def reset_state(self) -> None: ...
    def frame_input(self) -> NDArray[np.float32]: ...


class Pipeline(Protocol):
    """`hardware.pipeline.StimulationPipeline`'s interface as the loop uses it."""

    def process(self, rate_field: RateField) -> StimulationFrame: ...
    def zero(self, reason: str) -> StimulationFrame: ...
    def warm_up(self, rate_field: RateField) -> None: ...


class Link(Protocol):
    """`hardware.link.StimulatorLink`'s interface."""

    def send(self, frame: StimulationFrame) -> None: ...
    def poll(self) -> None: ...
    def close(self) -> None: ...


class Audit(Protocol):
    """`hardware.audit.AuditLog`'s interface."""

    def frame(self, frame: StimulationFrame) -> None: ...
    def event(self, kind: str, detail: str) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class BinView:
    """What an observer (preview, tests) may look at after a bin; valid during the callback.

    frame: [H, W] float32 model input of this bin; rates: [n] spikes/s or None (zero bin);
    stim: the frame sent.
    """

    index: int
    frame: NDArray[np.float32]
    rates: NDArray[np.float32] | None
    stim: StimulationFrame
    zero_reason: str


@dataclass(frozen=True)
class Stall:
    """A bin whose work began more than half a period after its deadline (real clock).

    Why kept: a dropped bin is an event in time, and its cause is usually outside the loop
    (the host, another process); the monotonic time lets it be matched against a witness
    such as `benchmarks/latency/jitter.py` running beside the loop.
    t_s: seconds since the run started; monotonic_s: time.monotonic() of the late start;
    late_ms: how late the work began; dropped: bins skipped because of it.
    """

    t_s: float
    monotonic_s: float
    late_ms: float
    dropped: int


#: At most this many stalls are kept per run (the first ones): memory stays bounded.
MAX_STALLS = 1000

#: The loop reads the link's acknowledgements every this many bins, after the bin's frame is
#: out; half the link's own interval, so a send never has to read them itself.
ACK_POLL_BINS = max(1, POLL_EVERY // 2)


@dataclass
class LoopCounters:
    """Live counters, read by the status line from another thread (ints only: atomic enough)."""

    frames_in: int = 0
    bins_done: int = 0  # bins that ran the model and sent its stimulation
    bins_zero: int = 0  # bins that sent zero stimulation (no frame yet, source fault)
    bins_dropped: int = 0  # bins skipped under overload
    source_faults: int = 0
    reconnects: int = 0
    active_electrodes: int = 0
    active_sum: int = 0
    state: str = "starting"


class RunContext(BaseModel):
    """What a run was made of (the caller fills it: the loop does not know its chain)."""

    model_config = ConfigDict(extra="forbid")

    bundle: str
    model_sha256: str
    #: `runtime.bundle.bundle_digest` of the bundle that ran (compare with a pinned one)
    bundle_digest: str = ""
    array: str
    link: str
    audit_log: str
    session: dict[str, str | int | bool]
    clock: str
    scheduling: str
    camera_fov_deg: float
    pipeline_events: dict[str, int]
    link_stats: LinkStats
    #: The simulated stimulator's final counters (None with a real link).
    stimulator: StimulatorStatsSnapshot | None
    #: Frames sent against accepted, refused by reason and lost (`hardware.delivery`).
    delivery: DeliverySummary
    #: An implant run: one row per array link (`delivery` is then their total); empty for
    #: a single array.
    links: list[LinkDelivery] = Field(default_factory=list)
    preview: str | None = None
    #: The signed deployment package the run came from (path, key id, manifest sha256).
    package: dict[str, str] | None = None
    #: Whether unsigned inputs were allowed explicitly (--dev-unsigned; logged in the audit).
    dev_unsigned: bool = False


class RunSummary(BaseModel):
    """The result of a run (printed, and written as JSON by `npe run` / `npe bench`).

    A typed model at the boundary: `npe run` writes it with its own JSON dump, and readers
    (tests, `npe bench`, tools) get field names checked instead of string keys.
    """

    model_config = ConfigDict(extra="forbid")

    source: str
    model: str
    form: str
    stop_reason: str
    duration_s: float
    bins_total: int
    counters: LoopCounters
    source_stats: SourceStats
    latency_ms: dict[str, LatencyStats]
    bins_over_period: int = 0  # bins whose own work took longer than one bin period
    mean_active_electrodes: float = 0.0
    stalls: list[Stall] = Field(default_factory=list)
    #: Filled by the caller after the run (None for runs driven directly, as in tests).
    extra: RunContext | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (what `npe bench` embeds in its report)."""
        return self.model_dump(mode="json")


@dataclass
class LoopConfig:
    """Tunables of the loop. reconnect_every_s: retry interval while a source stays bad."""

    reconnect_every_s: float = 0.5
    latency_capacity: int = 100_000


class StreamingRuntime:
    """Frames → rates → stimulation, one bin at a time (see module docstring)."""

    def __init__(
        self,
        spec: ModelSpec,
        engine: Engine,
        source: FrameSource,
        preprocessor: Preprocessor,
        pipeline: Pipeline,
        link: Link,
        audit: Audit,
        clock: BinClock | None = None,
        config: LoopConfig | None = None,
        observer: Callable[[BinView], None] | None = None,
    ) -> None:
        self.spec = spec
        self.engine = engine
        self.source = source
        self.pre = preprocessor
        self.pipeline = pipeline
        self.link = link
        self.audit = audit
        self.clock = clock or RealClock()
        self.config = config or LoopConfig()
        self.observer = observer
        self.window_form = engine.form.form == "window"
        # Capture timestamps share the monotonic time base only with the real clock.
        self._real_clock = isinstance(self.clock, RealClock)
        self.ring = RingWindow(spec.window_frames, spec.height, spec.width)
        # A step model reads only the newest bin: its frames are held in the model's own bound
        # input (no copy into a ring, none into the model); a window model reads the ring.
        self._bin_ring: RingWindow | None = self.ring if self.window_form else None
        self.period_ns = spec.bin_period_ns
        self.latency = LatencyRecorder(STAGES, self.config.latency_capacity)
        self.counters = LoopCounters()
        self.bins_over_period = 0
        self._field: RateField | None = None  # the run's one rate field (refilled per bin)
        self._positions = np.ascontiguousarray(spec.positions_deg, dtype=np.float32)
        self._polarity = np.ascontiguousarray(spec.polarity, dtype=np.int8)
        self._stop = threading.Event()
        self._have_frame = False
        self._fault = ""
        self._last_reconnect_ns = 0
        self._last_overload_event_ns = -(10**18)
        self.stalls: list[Stall] = []

    def stop(self) -> None:
        """Ask the loop to stop after the current bin (safe from signal handlers/threads)."""
        self._stop.set()

    # -- the per-bin pieces -------------------------------------------------------------
    def _send(self, frame: StimulationFrame) -> None:
        self._deliver(frame)
        self._count(frame)

    def _deliver(self, frame: StimulationFrame) -> None:
        """What stimulation needs: the frame on the link and its record in the audit log."""
        self.link.send(frame)
        self.audit.frame(frame)

    def _count(self, frame: StimulationFrame) -> None:
        """The status line's count of active electrodes: bookkeeping, done after the send
        (the timed bin ends when the frame and its log record are written)."""
        self.counters.active_electrodes = count_active(frame)
        self.counters.active_sum += self.counters.active_electrodes

    def _send_zero(self, reason: str) -> StimulationFrame:
        z = self.pipeline.zero(reason)
        self._send(z)
        self.counters.bins_zero += 1
        return z

    def _restart_model(self) -> None:
        """Blank window and zero state: after a fault the old history is meaningless."""
        self.ring.reset()
        self.engine.reset_state()
        self._have_frame = False

    def _handle_fault(self, reason: str, now_ns: int) -> None:
        if not self._fault:
            self.counters.source_faults += 1
            self.audit.event("source_fault", reason)
            self._restart_model()
            self._last_reconnect_ns = now_ns - int(self.config.reconnect_every_s * 1e9) - 1
        self._fault = reason
        self.counters.state = "source fault"
        if now_ns - self._last_reconnect_ns >= int(self.config.reconnect_every_s * 1e9):
            self._last_reconnect_ns = now_ns
            self.counters.reconnects += 1
            self.audit.event("source_reconnect", self.source.name)
            try:
                self.source.reconnect()
            except Exception as exc:  # a failing reconnect is retried next interval
                self.audit.event("source_reconnect_failed", f"{type(exc).__name__}: {exc}")

    def warm_up(self, calls: int = 3) -> None:
        """Run the per-bin compute path `calls` times before the clock starts; send nothing.

        Why: first calls are slow (ONNX Runtime's first runs allocate its arena, numpy and
        the mapping fault in their buffers): unwarmed, the first bins of a paced run took
        8–10 ms and could drop a bin before the stream was even under way. The model's state
        is reset afterwards, so the run starts exactly as it would have.
        """
        x = self.ring.window() if self.window_form else self.ring.newest()
        for _ in range(calls):
            rates = self.engine.run(x)
            self.pipeline.warm_up(RateField(rates, self._positions, self._polarity, 0))
        self.engine.reset_state()

    # -- the loop -------------------------------------------------------------------------
    def run(
        self,
        duration_s: float | None = None,
        max_bins: int | None = None,
    ) -> RunSummary:
        """Run until stop(), duration_s (bin clock), max_bins, or the source is exhausted."""
        clock, P = self.clock, self.period_ns
        try:
            self.warm_up()
        except Exception as exc:  # nothing was sent yet; say why and leave zero stimulation
            reason = f"warm-up failed: {type(exc).__name__}: {exc}"
            self.audit.event("error", reason)
            self._send(self.pipeline.zero(reason))
            raise
        self.stalls = []
        t_wall0 = time.monotonic_ns()
        t0 = clock.now_ns()
        self.source.start(t0)
        held = None if self.window_form else self.engine.frame_input()
        binner = SampleAndHoldBinner(P, t0, self.spec.height, self.spec.width, held=held)
        end_bin = None if duration_s is None else int(duration_s * 1e9 // P)
        if max_bins is not None:
            end_bin = max_bins if end_bin is None else min(end_bin, max_bins)
        self.audit.event(
            "start",
            f"source={self.source.name} model={self.spec.name} form={self.engine.form.form} "
            f"rate={self.spec.frame_rate_hz:g}Hz window={self.spec.window_frames} "
            f"live_path={compiled_forms.describe()}",
        )
        k = 0
        stop_reason = "stopped"
        mono = time.monotonic_ns
        cpu = time.thread_time_ns
        try:
            while True:
                if self._stop.is_set():
                    stop_reason = "stop requested"
                    break
                if end_bin is not None and k >= end_bin:
                    stop_reason = "duration reached" if duration_s is not None else "bins reached"
                    break
                deadline = t0 + (k + 1) * P
                clock.sleep_until(deadline)
                row = self.latency.row()
                t_a = mono()
                cpu_a = cpu()
                now = clock.now_ns()
                late_ns = t_a - deadline  # how late this bin's work starts (before any skip)
                # Overload: bins that already ended beyond this one are skipped, not queued.
                behind = (now - t0) // P - (k + 1)
                if behind > 0 and end_bin is not None:
                    behind = min(behind, end_bin - 1 - k)
                if self._real_clock and 2 * late_ns > P and len(self.stalls) < MAX_STALLS:
                    self.stalls.append(
                        Stall((t_a - t_wall0) / 1e9, t_a / 1e9, late_ns / 1e6, max(0, behind))
                    )
                if behind > 0:
                    for _ in range(behind):
                        binner.close_bin(self._bin_ring)  # keep the window's time axis right
                    self.counters.bins_dropped += behind
                    if now - self._last_overload_event_ns >= 1_000_000_000:
                        # At most one log record per second: the log must not add to the load.
                        self._last_overload_event_ns = now
                        self.audit.event(
                            "overload",
                            f"{behind} bin(s) dropped at bin {k}; "
                            f"{self.counters.bins_dropped} dropped so far",
                        )
                    k += behind
                    deadline = t0 + (k + 1) * P
                # Capture: newest frame captured before this bin's end.
                health = self.source.health(now)
                grab = None
                if health.ok:
                    try:
                        grab = self.source.poll(deadline - 1)
                    except Exception as exc:
                        health = type(health)(
                            False, f"{self.source.name}: {type(exc).__name__}: {exc}"
                        )
                if self.source.exhausted and grab is None:
                    stop_reason = "source ended"
                    break
                t_b = mono()
                if grab is not None and binner.accepts(grab.t_ns):
                    self.pre(grab.frame, out=binner.held)
                    binner.held_t_ns = grab.t_ns
                    binner.frames_in += 1
                    self.counters.frames_in += 1
                    self._have_frame = True
                    row[Stage.CAPTURE] = grab.read_ns
                t_c = mono()
                if not health.ok:
                    self._handle_fault(health.reason, now)
                    binner.next_bin += 1
                    z = self._send_zero(health.reason)
                    self._observe(k, binner.held, None, z, health.reason)
                    k += 1
                    continue
                if self._fault:
                    self.audit.event("source_recovered", self.source.name)
                    self._fault = ""
                self.counters.state = "running"
                if not self._have_frame:
                    binner.next_bin += 1
                    z = self._send_zero("waiting for the first frame")
                    self._observe(k, binner.held, None, z, "waiting for the first frame")
                    k += 1
                    continue
                binner.close_bin(self._bin_ring)
                t_d = mono()
                x = self.ring.window() if self.window_form else binner.held
                rates = self.engine.run(x)
                t_e = mono()
                rf = self._field
                if rf is None or rates.shape != rf.rates_hz.shape:
                    rf = self._field = RateField(rates, self._positions, self._polarity, deadline)
                else:
                    rf._refill(rates, deadline)  # one field per run: no object per bin
                stim = self.pipeline.process(rf)
                t_f = mono()
                self._deliver(stim)
                t_g = mono()
                self._count(stim)
                if k % ACK_POLL_BINS == 0:
                    self.link.poll()  # the stimulator's acks, read after the frame is out
                row[Stage.PREPROCESS] = t_c - t_b
                row[Stage.BIN] = t_d - t_c
                row[Stage.INFER] = t_e - t_d
                row[Stage.MAP] = t_f - t_e
                row[Stage.SEND] = t_g - t_f
                row[Stage.TOTAL] = row[Stage.CAPTURE] + t_g - t_b
                row[Stage.CPU] = cpu() - cpu_a
                if self._real_clock:
                    row[Stage.LATE] = late_ns
                    if binner.held_t_ns is not None:
                        row[Stage.FRAME_AGE] = (
                            t_g - binner.held_t_ns
                        )  # photon (capture) → stimulation written
                self.latency.commit()
                if t_g - t_a > P:
                    self.bins_over_period += 1
                self.counters.bins_done += 1
                self._observe(k, binner.held, rates, stim, "")
                k += 1
        except BaseException as exc:
            stop_reason = f"error: {type(exc).__name__}: {exc}"
            if isinstance(exc, KeyboardInterrupt):
                stop_reason = "interrupted"
            raise
        finally:
            self.counters.state = "stopping"
            try:
                self._send(self.pipeline.zero(f"shutdown: {stop_reason}"))
            finally:
                self.audit.event("stop", stop_reason)
        wall = (time.monotonic_ns() - t_wall0) / 1e9
        c = self.counters
        return RunSummary(
            source=self.source.name,
            model=self.spec.name,
            form=f"{self.engine.form.form}/{self.engine.form.precision}",
            stop_reason=stop_reason,
            duration_s=wall,
            bins_total=c.bins_done + c.bins_zero + c.bins_dropped,
            counters=replace(c),  # a copy: the live counters keep changing until stop
            source_stats=replace(self.source.stats),
            latency_ms={
                k: LatencyStats.of(v)
                for k, v in self.latency.summary_ms().items()
                if k not in ("frame_age", "late") or self._real_clock  # real time only
            },
            bins_over_period=self.bins_over_period,
            mean_active_electrodes=c.active_sum / max(1, c.bins_done + c.bins_zero),
            stalls=list(self.stalls),
        )

    def _observe(
        self,
        k: int,
        frame: NDArray[np.float32],
        rates: NDArray[np.float32] | None,
        stim: StimulationFrame,
        reason: str,
    ) -> None:
        if self.observer is not None:
            self.observer(BinView(k, frame, rates, stim, reason))
