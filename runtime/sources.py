"""Frame sources: camera (threaded, newest-frame, watchdog), video file, image folder, synthetic.

All sources answer `poll(now_ns)` with the newest frame captured at or before now that
was not handed out yet (or None), so the live loop is the same for every source:
- clocked sources (video, images, synthetic) have frame i at t0 + i/fps on the loop's
  clock; when the loop runs real time they are paced by it, when it runs on a virtual
  clock (`--as-fast-as-possible`) they are decoded as fast as the loop asks;
- the camera is read on its own thread that keeps only the newest frame (OpenCV backends
  buffer frames, REFERENCES.md "Runtime facts"), stale frames dropped and counted.

`health(now_ns)` is the watchdog: a camera whose newest frame is older than the stall
timeout (or whose read failed/raised) is reported unhealthy; `read()` can keep reporting
success after an unplug, so the frame timestamp age is what is trusted. `reconnect()`
abandons the current capture (even one stuck inside read) and opens a fresh one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from runtime.errors import NpeRuntimeError
from runtime.synthetic_scenes import SCENES, SyntheticScene


class SourceError(NpeRuntimeError, RuntimeError):
    """A source that cannot be opened or read (named in the message)."""


@dataclass
class FrameGrab:
    """One captured frame. `frame` is owned by the source; valid until the next poll.

    frame: [h, w, 3] uint8 BGR or [h, w] uint8 gray; t_ns: capture time on the loop clock;
    seq: capture counter; read_ns: time spent reading/decoding/rendering it in poll.
    """

    frame: NDArray[np.uint8]
    t_ns: int
    seq: int
    read_ns: int = 0


@dataclass(frozen=True)
class SourceHealth:
    ok: bool
    reason: str = ""


#: The answer of a healthy source, shared: the loop asks every bin, and a frozen object per
#: bin was an allocation on the hot path for the common case.
HEALTHY = SourceHealth(True)


@dataclass
class SourceStats:
    frames_captured: int = 0
    frames_dropped: int = 0  # captured but never handed over (a newer one replaced it)
    reconnects: int = 0
    failures: int = 0


class FrameSource(Protocol):
    name: str
    stats: SourceStats
    exhausted: bool

    def start(self, t0_ns: int) -> None: ...
    def poll(self, now_ns: int) -> FrameGrab | None: ...
    def health(self, now_ns: int) -> SourceHealth: ...
    def reconnect(self) -> None: ...
    def close(self) -> None: ...


class _ClockedSource:
    """Base of sources whose frame i is due at t0 + i·period on the loop clock."""

    def __init__(self, name: str, fps: float, loop: bool) -> None:
        if fps <= 0:
            raise SourceError(f"{name}: frame rate must be > 0, got {fps}")
        self.name = name
        self.fps = fps
        self.period_ns = round(1e9 / fps)
        self.loop = loop
        self.t0_ns = 0
        self.next_index = 0  # next frame index not yet read
        self.stats = SourceStats()
        self.exhausted = False
        self._error: str = ""

    def start(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns
        self.next_index = 0

    def _read(self, index: int, keep: bool) -> NDArray[np.uint8] | None:
        """Produce frame `index` (None at the end); keep=False may skip decoding it."""
        raise NotImplementedError

    def poll(self, now_ns: int) -> FrameGrab | None:
        if self.exhausted:
            return None
        due = (now_ns - self.t0_ns) // self.period_ns  # newest frame index captured by now
        if due < self.next_index:
            return None
        t_read = time.monotonic_ns()
        frame: NDArray[np.uint8] | None = None
        for idx in range(self.next_index, due + 1):
            frame = self._read(idx, keep=idx == due)
            if frame is None:
                self.exhausted = True
                return None
            self.stats.frames_captured += 1
            if idx < due:
                self.stats.frames_dropped += 1  # skipped: a newer frame was already due
        self.next_index = due + 1
        assert frame is not None
        return FrameGrab(
            frame, self.t0_ns + due * self.period_ns, due, time.monotonic_ns() - t_read
        )

    def health(self, now_ns: int) -> SourceHealth:
        return SourceHealth(False, self._error) if self._error else HEALTHY

    def reconnect(self) -> None:
        self.stats.reconnects += 1
        self._error = ""

    def close(self) -> None:
        pass


class SyntheticSource(_ClockedSource):
    """A numpy-rendered scene as a camera of `width`×`height` at `fps` frames/s."""

    def __init__(self, kind: str, fps: float = 60.0, width: int = 320, height: int = 240) -> None:
        super().__init__(f"synthetic:{kind}", fps, loop=True)
        self.scene = SyntheticScene(kind, width, height)
        self._buf = np.zeros((height, width), dtype=np.uint8)

    def _read(self, index: int, keep: bool) -> NDArray[np.uint8] | None:
        """Frame `index`: the noise bank's own read-only frame (no copy), or the rendered
        scene in this source's buffer."""
        if not keep:
            return self._buf
        banked = self.scene.frame_at(index / self.fps)
        if banked is not None:
            return banked
        return self.scene.render(index / self.fps, self._buf)


class VideoFileSource(_ClockedSource):
    """A video file decoded with OpenCV, paced at its own frame rate on the loop clock."""

    def __init__(self, path: Path, loop: bool = False, fps: float | None = None) -> None:
        self.path = path
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise SourceError(f"cannot open video file {path}")
        file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        super().__init__(str(path), fps or (file_fps if file_fps > 0 else 30.0), loop)
        self._cap = cap
        self._buf: NDArray[np.uint8] | None = None

    def _read(self, index: int, keep: bool) -> NDArray[np.uint8] | None:
        ok = self._cap.grab()
        if not ok and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok = self._cap.grab()
        if not ok:
            return None
        if not keep:
            return self._buf if self._buf is not None else np.zeros((1, 1), np.uint8)
        ok, img = self._cap.retrieve(self._buf)
        if not ok or img is None:
            return None
        self._buf = np.asarray(img, dtype=np.uint8)
        return self._buf

    def close(self) -> None:
        self._cap.release()


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm")


class ImageFolderSource(_ClockedSource):
    """The images of a folder (sorted by name) as frames at `fps`, looping; preloaded once."""

    MAX_IMAGES = 2000

    def __init__(self, folder: Path, fps: float = 30.0, loop: bool = True) -> None:
        if not folder.is_dir():
            raise SourceError(f"images: {folder} is not a directory")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        if len(files) > self.MAX_IMAGES:
            raise SourceError(f"images: {len(files)} files in {folder}, at most {self.MAX_IMAGES}")
        imgs = []
        for p in files:
            img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise SourceError(f"images: cannot read {p}")
            imgs.append(np.asarray(img, dtype=np.uint8))
        super().__init__(f"images:{folder}", fps, loop)
        self.images: list[NDArray[np.uint8]] = imgs

    def _read(self, index: int, keep: bool) -> NDArray[np.uint8] | None:
        if index >= len(self.images) and not self.loop:
            return None
        return self.images[index % len(self.images)]


class Capture(Protocol):
    """What CameraSource needs of cv2.VideoCapture."""

    def isOpened(self) -> bool: ...
    def read(self, image: Any = None) -> tuple[bool, Any]: ...
    def release(self) -> None: ...


class Watchdog:
    """Frame-age watchdog: unhealthy when the newest frame is older than the stall timeout.

    Why timestamps: after an unplug some OpenCV backends keep returning success from read()
    (REFERENCES.md), so "is the newest frame fresh" is the only reliable signal. Before the
    first frame the age counts from `arm()` (opening the source).
    """

    def __init__(self, stall_timeout_ns: int) -> None:
        if stall_timeout_ns <= 0:
            raise ValueError(f"stall timeout must be > 0, got {stall_timeout_ns} ns")
        self.stall_timeout_ns = stall_timeout_ns
        self.last_ns: int | None = None
        self.armed_ns = 0

    def arm(self, now_ns: int) -> None:
        self.armed_ns = now_ns
        self.last_ns = None

    def frame(self, t_ns: int) -> None:
        self.last_ns = t_ns

    def check(self, now_ns: int, name: str) -> SourceHealth:
        last = self.last_ns if self.last_ns is not None else self.armed_ns
        age = now_ns - last
        if age > self.stall_timeout_ns:
            what = "no frame" if self.last_ns is None else "no new frame"
            return SourceHealth(False, f"{name}: {what} for {age / 1e6:.0f} ms (stalled)")
        return HEALTHY


class CameraSource:
    """A camera read on its own thread; `poll` hands over only the newest frame.

    Triple buffering without allocation: the reader thread fills `back`, then swaps it with
    `middle` under the lock; `poll` swaps `middle` with `front` (owned by the consumer).
    Frames that were replaced in `middle` before anyone took them are counted as dropped.

    Watchdog: `health` is bad when the newest frame is older than `stall_timeout_s` or the
    reader reported a failure. `reconnect` starts a new reader generation with a fresh
    capture; an old reader stuck inside read() notices it is stale when it returns, and exits.
    """

    def __init__(
        self,
        open_capture: Callable[[], Capture],
        name: str = "camera",
        stall_timeout_s: float = 0.25,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.name = name
        self._open = open_capture
        self.watchdog = Watchdog(int(stall_timeout_s * 1e9))
        self._clock = clock
        self.stats = SourceStats()
        self.exhausted = False
        self._lock = threading.Lock()
        self._bufs: list[NDArray[np.uint8] | None] = [None, None, None]  # back, middle, front
        self._middle_t = 0
        self._middle_seq = -1
        self._middle_new = False
        self._front_seq = -1
        self._error = ""
        self._generation = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, t0_ns: int) -> None:
        self.watchdog.arm(self._clock())
        self._spawn()

    def _spawn(self) -> None:
        self._generation += 1
        gen = self._generation
        t = threading.Thread(
            target=self._reader, args=(gen,), name=f"{self.name}-reader-{gen}", daemon=True
        )
        self._threads = [th for th in self._threads if th.is_alive()] + [t]
        t.start()

    def _fail(self, gen: int, reason: str) -> None:
        with self._lock:
            if gen == self._generation and not self._error:
                self._error = reason
                self.stats.failures += 1

    def _reader(self, gen: int) -> None:
        cap: Capture | None = None
        try:
            try:
                cap = self._open()
            except Exception as exc:
                self._fail(gen, f"{self.name}: open failed: {exc}")
                return
            if not cap.isOpened():
                self._fail(gen, f"{self.name}: cannot be opened")
                return
            seq = 0
            while not self._stop.is_set() and gen == self._generation:
                try:
                    ok, img = cap.read(self._bufs[0])
                except Exception as exc:
                    self._fail(gen, f"{self.name}: read raised {type(exc).__name__}: {exc}")
                    return
                t = self._clock()
                if gen != self._generation:
                    return
                if not ok or img is None:
                    self._fail(gen, f"{self.name}: read returned no frame")
                    return
                with self._lock:
                    if gen != self._generation:
                        return
                    if self._middle_new:
                        self.stats.frames_dropped += 1
                    self._bufs[0] = self._bufs[1]
                    self._bufs[1] = img
                    self._middle_t, self._middle_seq, self._middle_new = t, seq, True
                    self.watchdog.frame(t)
                    self.stats.frames_captured += 1
                seq += 1
        finally:
            if cap is not None:
                try:
                    cap.release()
                except Exception:
                    pass

    def poll(self, now_ns: int) -> FrameGrab | None:
        with self._lock:
            if not self._middle_new:
                return None
            self._bufs[1], self._bufs[2] = self._bufs[2], self._bufs[1]
            self._middle_new = False
            front, t, seq = self._bufs[2], self._middle_t, self._middle_seq
        assert front is not None
        return FrameGrab(front, t, seq, 0)

    def health(self, now_ns: int) -> SourceHealth:
        with self._lock:
            if self._error:
                return SourceHealth(False, self._error)
            return self.watchdog.check(self._clock(), self.name)

    def reconnect(self) -> None:
        """Abandon the current capture and open a fresh one on a new reader thread."""
        with self._lock:
            self._error = ""
            self._middle_new = False
            self.watchdog.arm(self._clock())
            self.stats.reconnects += 1
        self._spawn()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._generation += 1
        for t in self._threads:
            t.join(timeout=0.5)


def camera_opens(index: int, timeout_s: float = 2.0) -> bool:
    """Whether camera `index` opens and delivers a frame (checked on a thread, bounded time)."""
    result: list[bool] = []

    def probe() -> None:
        cap = cv2.VideoCapture(index)
        try:
            result.append(bool(cap.isOpened() and cap.read()[0]))
        finally:
            cap.release()

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout_s)
    return bool(result and result[0])


def open_source(spec: str, *, fps: float | None = None) -> FrameSource:
    """Parse `camera:N | FILE | images:DIR | synthetic:bar|grating|noise` into a source."""
    if spec.startswith("camera:"):
        try:
            index = int(spec.split(":", 1)[1])
        except ValueError:
            raise SourceError(
                f"bad camera source {spec!r}; expected camera:N (e.g. camera:0)"
            ) from None
        return CameraSource(lambda: cv2.VideoCapture(index), name=spec)
    if spec.startswith("synthetic:"):
        kind = spec.split(":", 1)[1]
        if kind not in SCENES:
            raise SourceError(
                f"unknown synthetic scene {kind!r}; choose one of {', '.join(SCENES)}"
            )
        return SyntheticSource(kind, fps=fps or 60.0)
    if spec.startswith("images:"):
        return ImageFolderSource(Path(spec.split(":", 1)[1]), fps=fps or 30.0)
    path = Path(spec)
    if not path.exists():
        raise SourceError(
            f"source {spec!r} is neither camera:N, images:DIR, synthetic:bar|grating|noise "
            "nor an existing video file"
        )
    return VideoFileSource(path, fps=fps)
