"""Sources: threaded camera (newest frame, stale frames counted, watchdog + reconnect),
image folders, synthetic scenes and source-spec errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from runtime.sources import (
    CameraSource,
    ImageFolderSource,
    SourceError,
    SyntheticSource,
    Watchdog,
    open_source,
)


def _wait_for(cond: Any, timeout: float = 10.0) -> bool:
    """Poll a condition (threads make progress at their own pace; no timing is asserted)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


class FakeCapture:
    """A camera driver: numbered frames as fast as asked; after `stall_after` reads it blocks
    forever (an unplugged USB camera whose read never returns) until released."""

    def __init__(
        self, stall_after: int | None = None, delay_s: float = 0.0, value: int = -1
    ) -> None:
        self.value = value  # pixel value of every frame (-1: the frame number)
        self.count = 0
        self.stall_after = stall_after
        self.delay_s = delay_s
        self.released = threading.Event()

    def isOpened(self) -> bool:
        return True

    def read(self, image: Any = None) -> tuple[bool, Any]:
        if self.stall_after is not None and self.count >= self.stall_after:
            self.released.wait(30)
            return False, None
        if self.delay_s:
            time.sleep(self.delay_s)
        img = image if image is not None and image.shape == (8, 8) else np.zeros((8, 8), np.uint8)
        img[:] = self.count % 256 if self.value < 0 else self.value
        self.count += 1
        return True, img

    def release(self) -> None:
        self.released.set()


def test_camera_hands_over_only_the_newest_frame_and_counts_stale_ones() -> None:
    cap = FakeCapture()
    cam = CameraSource(lambda: cap, stall_timeout_s=5.0)
    cam.start(0)
    try:
        assert _wait_for(lambda: cap.count > 200)
        grab = cam.poll(0)
        assert grab is not None
        # Everything captured before this frame and never handed over was dropped.
        assert _wait_for(lambda: cam.poll(0) is not None)
        stats = cam.stats
        assert stats.frames_dropped > 100
        assert stats.frames_captured >= stats.frames_dropped + 2
    finally:
        cam.close()
    later = cam.poll(0)
    assert later is None or later.seq > grab.seq  # never an older frame


def test_watchdog_detects_a_stalled_camera_and_reconnect_recovers() -> None:
    caps = [FakeCapture(stall_after=5, value=255), FakeCapture(delay_s=0.001, value=7)]
    opened: list[FakeCapture] = []

    def open_next() -> FakeCapture:
        opened.append(caps[len(opened)])
        return opened[-1]

    cam = CameraSource(open_next, stall_timeout_s=0.05)
    cam.start(0)
    try:
        assert _wait_for(lambda: caps[0].count == 5)
        assert _wait_for(lambda: not cam.health(0).ok)  # read() hangs; only frame age tells
        assert "stalled" in cam.health(0).reason
        cam.reconnect()
        assert _wait_for(lambda: len(opened) == 2 and caps[1].count > 3)
        assert _wait_for(lambda: cam.health(0).ok)
        assert _wait_for(lambda: (g := cam.poll(0)) is not None and g.frame[0, 0] == 7)
        assert cam.stats.reconnects == 1
    finally:
        cam.close()  # returns although the abandoned reader is still stuck inside read()
    assert not caps[0].released.is_set()  # (it is released when its read finally returns)


def test_camera_that_raises_is_reported_with_the_reason() -> None:
    class Broken(FakeCapture):
        def read(self, image: Any = None) -> tuple[bool, Any]:
            if self.count == 3:
                raise OSError("VIDIOC_DQBUF: No such device")
            return super().read(image)

    cam = CameraSource(Broken, stall_timeout_s=5.0)
    cam.start(0)
    try:
        assert _wait_for(lambda: not cam.health(0).ok)
        assert "No such device" in cam.health(0).reason and cam.stats.failures == 1
    finally:
        cam.close()


def test_watchdog_counts_from_arming_before_the_first_frame() -> None:
    w = Watchdog(100)
    w.arm(1000)
    assert w.check(1100, "cam").ok and not w.check(1101, "cam").ok
    w.frame(1500)
    assert w.check(1600, "cam").ok and "no new frame" in w.check(1601, "cam").reason


def test_image_folder_source_paces_and_loops(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((20, 30), 10 * (i + 1), np.uint8))
    src = ImageFolderSource(tmp_path, fps=10.0)
    src.start(0)
    period = 100_000_000
    assert src.poll(0) is not None and src.poll(period - 1) is None  # frame 1 not yet due
    g = src.poll(4 * period)  # frames 1..4 due: 1-3 skipped (counted), 4 = image 4 % 3 = 1
    assert g is not None and g.frame[0, 0] == 20 and g.t_ns == 4 * period
    assert src.stats.frames_dropped == 3


def test_synthetic_scenes_move() -> None:
    for kind in ("bar", "grating", "noise"):
        src = SyntheticSource(kind, fps=50.0)
        src.start(0)
        a = src.poll(0)
        assert a is not None
        first = a.frame.copy()
        b = src.poll(200_000_000)
        assert b is not None and b.frame.dtype == np.uint8 and b.frame.shape == (240, 320)
        assert not np.array_equal(first, b.frame), kind


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("synthetic:plaid", "unknown synthetic scene"),
        ("camera:x", "expected camera:N"),
        ("/no/such/video.mp4", "neither camera:N"),
        ("images:/no/such/dir", "not a directory"),
    ],
)
def test_bad_source_specs_are_refused_with_a_reason(spec: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_source(spec)
