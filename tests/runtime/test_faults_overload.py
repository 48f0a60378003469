"""Source faults → zero stimulation within one bin and a reconnect; overload → dropped bins,
bounded latency and memory. Runs the real loop, ORT model and hardware pipeline on a
virtual bin clock (deterministic); only the camera fault itself is scripted. One test paces
on the real clock, with a real stall.
"""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np
import pytest

from runtime.clock import RealClock, VirtualClock
from runtime.inference import OrtEngine
from runtime.loop import ACK_POLL_BINS, BinView, LoopConfig, StreamingRuntime
from runtime.preprocess import Preprocessor
from runtime.sources import FrameGrab, SourceHealth, SourceStats, Watchdog, open_source
from runtime.spec import ModelSpec

from .conftest import RecordingAudit, RecordingLink, is_zero

P = 10_000_000  # ns per bin at 100 Hz


@dataclass
class ScriptedCamera:
    """A 30 fps camera on the virtual clock that fails at `fail_at_ns` until reconnected.

    mode "raise": poll raises (driver error); mode "stall": frames stop coming, and only the
    real `Watchdog` (frame age > 50 ms) can notice. After `reconnect()` frames flow again.
    """

    clock: VirtualClock
    fail_at_ns: int
    mode: str
    name: str = "scripted-camera"
    stats: SourceStats = field(default_factory=SourceStats)
    exhausted: bool = False
    reconnect_calls: list[int] = field(default_factory=list)
    t0_ns: int = 0
    watchdog: Watchdog = field(default_factory=lambda: Watchdog(50_000_000))
    _next_t: int = 0
    _img: np.ndarray = field(default_factory=lambda: np.full((48, 64), 200, np.uint8))

    def start(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns  # the loop's bin 0 starts here (after its warm-up)
        self.watchdog.arm(t0_ns)
        self._next_t = t0_ns

    def _broken(self) -> bool:
        return self.clock.now_ns() >= self.fail_at_ns and not self.reconnect_calls

    def poll(self, now_ns: int) -> FrameGrab | None:
        if self._broken() and self.mode == "raise":
            raise OSError("VIDIOC_DQBUF: No such device")
        grab = None
        while self._next_t <= now_ns:
            if self._broken() and self._next_t >= self.fail_at_ns:
                break  # stalled: no frames after the failure time
            self._img[:, :] = 60 + (self._next_t // 33_333_333) % 2 * 150  # flicker
            grab = FrameGrab(self._img, self._next_t, self.stats.frames_captured)
            self.watchdog.frame(self._next_t)
            self.stats.frames_captured += 1
            self._next_t += 33_333_333
        return grab

    def health(self, now_ns: int) -> SourceHealth:
        return self.watchdog.check(now_ns, self.name)

    def reconnect(self) -> None:
        self.reconnect_calls.append(self.clock.now_ns())
        self.watchdog.arm(self.clock.now_ns())
        self._next_t = max(self._next_t, self.clock.now_ns())

    def close(self) -> None:
        pass


def _runtime(spec: ModelSpec, source: object, clock: VirtualClock, pipeline: object, **kw: object):  # type: ignore[no-untyped-def]
    form = spec.find_form("step")
    assert form is not None
    link, audit = RecordingLink(), RecordingAudit()
    views: list[tuple[int, int, bool, str]] = []

    def obs(v: BinView) -> None:
        views.append((v.index, clock.now_ns(), is_zero(v.stim), v.zero_reason))

    rt = StreamingRuntime(
        spec,
        kw.pop("engine", None) or OrtEngine(form),  # type: ignore[arg-type]
        source,  # type: ignore[arg-type]
        Preprocessor(spec, camera_fov_deg=40.0),
        pipeline,  # type: ignore[arg-type]
        link,
        audit,
        clock=clock,
        observer=obs,
    )
    return rt, link, audit, views


@pytest.mark.parametrize("mode", ["raise", "stall"])
def test_camera_that_stops_gives_zero_stimulation_and_reconnects(
    toy_spec: ModelSpec, utah_pipeline: object, mode: str
) -> None:
    clock = VirtualClock()
    fail_at = 200 * P + P // 2  # mid-bin, after 2 s of good frames
    cam = ScriptedCamera(clock, fail_at, mode)
    rt, link, audit, views = _runtime(toy_spec, cam, clock, utah_pipeline)
    summary = rt.run(max_bins=400)

    by_bin = {k: (t, zero, reason) for k, t, zero, reason in views}
    # Before the fault the model drives the array (the flicker makes it stimulate).
    assert any(not by_bin[k][1] for k in range(50, 200))
    # The fault is acted on in the first bin that can see it: at once for a raising driver,
    # and for a stall in the first bin whose deadline is > 50 ms (watchdog) after the last frame.
    if mode == "raise":
        detect = next(k for k, (t, _, _) in sorted(by_bin.items()) if t > fail_at)
        expected_reason = "No such device"
    else:
        t_last = (fail_at - 1) // 33_333_333 * 33_333_333
        detect = next(k for k in sorted(by_bin) if (k + 1) * P - t_last > 50_000_000)
        expected_reason = "stalled"
    assert by_bin[detect - 1][2] == ""  # the bin before still ran the model
    assert by_bin[detect][1] and expected_reason in by_bin[detect][2]
    assert cam.reconnect_calls and cam.reconnect_calls[0] == by_bin[detect][0]
    # After the reconnect frames flow again and stimulation resumes from a fresh model state.
    assert any(not by_bin[k][1] for k in range(detect + 10, 400))
    kinds = [k for k, _ in audit.events]
    assert "source_fault" in kinds and "source_reconnect" in kinds and "source_recovered" in kinds
    assert summary.counters.source_faults == 1
    assert is_zero(link.frames[-1])  # shutdown always ends on a zero frame
    # The loop reads the link's acks itself, after each ACK_POLL_BINS-th bin's frame is out.
    assert link.polls >= summary.counters.bins_done // ACK_POLL_BINS - 1 > 0


class SlowEngine:
    """Wraps the real ORT engine; each call costs `cost_ns` of virtual time (an overloaded CPU)."""

    def __init__(self, inner: OrtEngine, clock: VirtualClock, cost_ns: int) -> None:
        self.inner, self.clock, self.cost_ns = inner, clock, cost_ns
        self.form = inner.form

    def run(self, x: np.ndarray) -> np.ndarray:
        self.clock.advance(self.cost_ns)
        return self.inner.run(x)

    def reset_state(self) -> None:
        self.inner.reset_state()

    def frame_input(self) -> np.ndarray:
        return self.inner.frame_input()


def _overloaded_run(
    spec: ModelSpec, pipeline: object, n_bins: int
) -> tuple[object, list, RecordingAudit]:  # type: ignore[type-arg]
    clock = VirtualClock()
    cam = ScriptedCamera(clock, fail_at_ns=10**18, mode="raise")
    form = spec.find_form("step")
    assert form is not None
    eng = SlowEngine(OrtEngine(form), clock, cost_ns=int(2.5 * P))
    rt, _, audit, views = _runtime(spec, cam, clock, pipeline, engine=eng)
    summary = rt.run(max_bins=n_bins)
    # bin k's deadline is t0 + (k + 1)·P: express each view's time relative to t0
    return summary, [(k, t - cam.t0_ns, z, r) for k, t, z, r in views], audit


def test_overload_drops_bins_without_backlog(toy_spec: ModelSpec, utah_pipeline: object) -> None:
    summary, views, audit = _overloaded_run(toy_spec, utah_pipeline, 600)
    c = summary.counters  # type: ignore[attr-defined]
    assert c.bins_dropped > 0
    overload_events = [d for k, d in audit.events if k == "overload"]
    assert 1 <= len(overload_events) <= 6  # logged, but at most once per (virtual) second
    # Every bin is accounted for exactly once: processed, zero, or dropped.
    assert c.bins_done + c.bins_zero + c.bins_dropped == summary.bins_total  # type: ignore[attr-defined]
    assert summary.bins_total == 600  # type: ignore[attr-defined]
    # Bounded latency: each processed bin starts less than one bin after its deadline (skip
    # ahead) and so finishes within one bin + its work (2.5 bins), however long the overload
    # lasts — no backlog builds up.
    lateness = [t - (k + 1) * P for k, t, _, _ in views]
    assert max(lateness) < P + int(2.5 * P)
    assert max(lateness[-20:]) <= max(lateness[:40])


class CountingSink:
    """Link and audit stand-in that keeps counts only (so it retains no memory itself)."""

    def __init__(self) -> None:
        self.frames = 0
        self.events = 0

    def send(self, frame: object) -> None:
        self.frames += 1

    def poll(self) -> None:
        pass

    def frame(self, frame: object) -> None:
        self.frames += 1

    def event(self, kind: str, detail: str) -> None:
        self.events += 1

    def close(self) -> None:
        pass


def test_overload_memory_does_not_grow_with_run_length(
    toy_spec: ModelSpec, utah_pipeline: object
) -> None:
    form = toy_spec.find_form("step")
    assert form is not None

    def retained_after(n: int) -> tuple[int, int]:
        """(current, peak) traced bytes with the runtime still alive after n overloaded bins."""
        clock = VirtualClock()
        cam = ScriptedCamera(clock, fail_at_ns=10**18, mode="raise")
        sink = CountingSink()
        eng = SlowEngine(OrtEngine(form), clock, cost_ns=int(2.5 * P))
        rt = StreamingRuntime(
            toy_spec,
            eng,  # type: ignore[arg-type]
            cam,  # type: ignore[arg-type]
            Preprocessor(toy_spec, camera_fov_deg=40.0),
            utah_pipeline,  # type: ignore[arg-type]
            sink,
            sink,
            clock=clock,
            config=LoopConfig(latency_capacity=5000),
        )
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        summary = rt.run(max_bins=n)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert summary.counters.bins_dropped > 0 and sink.frames > 0
        return current - base, peak - base

    short, long = retained_after(150), retained_after(750)
    # 5x more bins must not hold 5x more memory (a backlog queue or per-bin list would).
    assert long[0] < short[0] + 128 * 1024, (short, long)
    assert long[1] < short[1] + 128 * 1024, (short, long)


class StallOnceEngine:
    """The real ORT engine, with one real 35 ms stall at call `at` (a descheduled thread)."""

    def __init__(self, inner: OrtEngine, at: int) -> None:
        self.inner, self.at, self.calls = inner, at, 0
        self.form = inner.form

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.at:
            time.sleep(0.035)
        return self.inner.run(x)

    def reset_state(self) -> None:
        self.inner.reset_state()

    def frame_input(self) -> np.ndarray:
        return self.inner.frame_input()


def test_real_clock_stall_shows_as_lateness_and_drops_bins(
    toy_spec: ModelSpec, utah_pipeline: object
) -> None:
    """Paced on the real clock, a 35 ms stall drops the bins it swallowed (about 2-3 at 10 ms),
    and the "late" stage shows how late the next bin began; the other bins start on time."""
    form = toy_spec.find_form("step")
    assert form is not None
    eng = StallOnceEngine(OrtEngine(form), at=20)
    rt, _, _, _ = _runtime(
        toy_spec, open_source("synthetic:noise"), RealClock(), utah_pipeline, engine=eng
    )
    summary = rt.run(max_bins=60)
    assert 2 <= summary.counters.bins_dropped <= 4
    late = summary.latency_ms["late"]
    assert late.max is not None and late.max >= 20.0  # the bin after the stall began ~25 ms late
    assert late.p50 is not None and late.p50 < 5.0  # the others began on time
    assert summary.bins_total == 60
    # The stall is recorded as an event in time: when, how late, how many bins it dropped
    # (a busy CI machine may add small stalls of its own, so look for the one we caused).
    big = [s for s in summary.stalls if s.late_ms >= 20.0]
    assert len(big) == 1
    assert 2 <= big[0].dropped <= summary.counters.bins_dropped
    # 100 bins/s; call 20 of the engine is bin 16 (three warm-up calls come first)
    assert 0.1 <= big[0].t_s <= 0.6
    run_start = time.monotonic() - summary.duration_s  # ± the few ms after the run
    assert abs(big[0].monotonic_s - run_start - big[0].t_s) < 0.1


class BrokenEngine:
    """An engine whose every call fails, as a model that ONNX Runtime cannot run would."""

    def __init__(self, inner: OrtEngine) -> None:
        self.form = inner.form
        self.inner = inner

    def run(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("ORT: Non-zero status code returned while running Conv node")

    def reset_state(self) -> None:
        pass

    def frame_input(self) -> np.ndarray:
        return self.inner.frame_input()


def test_engine_that_fails_in_warm_up_leaves_zero_stimulation_and_says_why(
    toy_spec: ModelSpec, utah_pipeline: object
) -> None:
    form = toy_spec.find_form("step")
    assert form is not None
    clock = VirtualClock()
    rt, link, audit, views = _runtime(
        toy_spec,
        open_source("synthetic:noise"),
        clock,
        utah_pipeline,
        engine=BrokenEngine(OrtEngine(form)),
    )
    with pytest.raises(RuntimeError, match="Conv node"):
        rt.run(max_bins=10)
    assert views == []  # no bin ran
    assert len(link.frames) == 1 and is_zero(link.frames[0])
    assert any("warm-up failed" in detail and "Conv node" in detail for _, detail in audit.events)


def test_run_summary_names_late_starts(toy_spec: ModelSpec, utah_pipeline: object) -> None:
    """The printed summary says how many bins began late and the worst one; the JSON keeps
    every one (a clinician must be able to see when the stream hiccuped, not only a count)."""
    import io
    import json

    from rich.console import Console

    from runtime.status import print_summary

    form = toy_spec.find_form("step")
    assert form is not None
    rt, _, _, _ = _runtime(
        toy_spec,
        open_source("synthetic:noise"),
        RealClock(),
        utah_pipeline,
        engine=StallOnceEngine(OrtEngine(form), at=10),
    )
    summary = rt.run(max_bins=30)
    out = io.StringIO()
    print_summary(Console(file=out, width=200), summary)
    worst = max(s.late_ms for s in summary.stalls)
    assert worst >= 20.0
    assert f"the worst {worst:.1f} ms" in out.getvalue()
    on_disk = json.loads(json.dumps(summary.to_dict()))
    assert [s["late_ms"] for s in on_disk["stalls"]] == [s.late_ms for s in summary.stalls]
