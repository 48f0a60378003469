"""`npe run --preview`: camera view | predicted rate map | phosphene preview, side by side.

Why a thread: rendering phosphenes (`hardware.phosphene_preview.PhospheneRenderer`) and encoding video
take milliseconds, far too much for the 10 ms bin. The loop's observer only copies the
newest bin into a preallocated slot; the preview thread renders the newest slot at ~30 fps
and shows it in a window, or writes a video when there is no display (headless OpenCV has
no GUI; CI has no display).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from hardware.arrays import ElectrodeArray
from hardware.calibration_file import PatientCalibration
from hardware.implant import Implant
from hardware.phosphene_preview import PhospheneRenderer
from hardware.types import StimulationFrame
from runtime.loop import BinView
from runtime.spec import ModelSpec

PANEL = 256


def has_display() -> bool:
    """Whether an OpenCV window can be opened here (a display and a GUI-enabled OpenCV)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("npe-probe")
        cv2.destroyWindow("npe-probe")
        return True
    except cv2.error:
        return False


def rate_map_image(
    spec: ModelSpec, rates: NDArray[np.float32] | None, size: int = PANEL
) -> NDArray[np.uint8]:
    """[size, size] uint8 picture of one bin's rates.

    ratemap models: the ON minus OFF maps (or the first type) on a grey background;
    cell models: one dot per cell at its position, brightness ∝ rate.
    """
    img = np.full((size, size), 0, np.uint8)
    if rates is None:
        return img
    r = np.nan_to_num(rates.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    grid = spec.extra.get("grid_shape")
    if spec.kind == "ratemap" and grid:
        k, h, w = grid
        maps = r.reshape(k, h, w)
        pol = spec.polarity.reshape(k, h, w)[:, 0, 0]
        on = maps[pol > 0].sum(0) if (pol > 0).any() else maps[0]
        off = maps[pol < 0].sum(0) if (pol < 0).any() else np.zeros_like(on)
        d = on - off  # ON brighter than grey, OFF darker; scaled to this bin's range
        m = np.clip(0.5 + 0.5 * d / max(float(np.abs(d).max()), 1e-6), 0, 1)
        return cv2.resize((m * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    scale = max(float(np.percentile(r, 99)), 1e-6)
    fw, fh = spec.field_deg
    for (x, y), v in zip(spec.positions_deg, r, strict=True):
        if not np.isfinite(x) or not np.isfinite(y):
            continue
        col = int((x / fw + 0.5) * (size - 1))
        row = int((0.5 - y / fh) * (size - 1))
        cv2.circle(img, (col, row), 3, int(np.clip(v / scale, 0, 1) * 255), -1)
    return img


class PreviewThread:
    """Renders the newest bin on its own thread; `observe` is the loop's observer.

    `array` is the run's array, or its implant (then `calibration` is one per array label and
    the loop's frames hold every electrode of the implant).
    """

    def __init__(
        self,
        spec: ModelSpec,
        array: ElectrodeArray | Implant,
        calibration: PatientCalibration | Mapping[str, PatientCalibration] | None,
        video_path: Path | None,
        fps: float = 30.0,
    ) -> None:
        self.spec = spec
        self.renderer = PhospheneRenderer(array, calibration, size_px=PANEL, frame_ms=1000.0 / fps)
        self.fps = fps
        self.window = video_path is None
        self.video_path = video_path
        self._frame = np.zeros((spec.height, spec.width), np.float32)
        self._rates = np.zeros(spec.n_out, np.float32)
        self._has_rates = False
        self._stim: StimulationFrame | None = None
        self._new = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="npe-preview", daemon=True)
        self.frames_written = 0

    def observe(self, view: BinView) -> None:
        with self._lock:
            np.copyto(self._frame, view.frame)
            if view.rates is not None:
                np.copyto(self._rates, view.rates)
            self._has_rates = view.rates is not None
            # A copy into a frame of our own: the pipeline refills its frames in a ring
            # (hardware.pipeline.RING_FRAMES), so the loop's frame is not ours to keep.
            src = view.stim
            mine = self._stim
            fields = ("amplitude_ua", "phase_width_us", "interphase_gap_us", "pulse_rate_hz")
            if mine is None or mine.electrode_ids != src.electrode_ids:
                self._stim = StimulationFrame(
                    src.sequence,
                    src.timestamp_ns,
                    src.electrode_ids,
                    src.amplitude_ua.copy(),
                    src.phase_width_us.copy(),
                    src.interphase_gap_us.copy(),
                    src.pulse_rate_hz.copy(),
                    src.n_pulses.copy(),
                )
            else:
                for f in fields:
                    np.copyto(getattr(mine, f), getattr(src, f))
                np.copyto(mine.n_pulses, src.n_pulses)
                mine._restamp(src.sequence, src.timestamp_ns)
            self._new = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def compose(self) -> NDArray[np.uint8] | None:
        """[PANEL, 3·PANEL, 3] BGR image of the newest bin, or None before the first bin."""
        with self._lock:
            if self._stim is None:
                return None
            frame = self._frame.copy()
            rates = self._rates.copy() if self._has_rates else None
            stim = self._stim
        cam = cv2.resize(
            # back from the model's contrast to luminance, by the bundle's own convention
            (frame * self.spec.contrast_scale + self.spec.contrast_offset)
            .clip(0, 255)
            .astype(np.uint8),
            (PANEL, PANEL),
            interpolation=cv2.INTER_NEAREST,
        )
        rmap = rate_map_image(self.spec, rates)
        phos = (self.renderer.render(stim) * 255).astype(np.uint8)
        img = np.asarray(cv2.cvtColor(np.hstack([cam, rmap, phos]), cv2.COLOR_GRAY2BGR), np.uint8)
        for i, label in enumerate(("camera (model input)", "predicted rates", "phosphenes")):
            cv2.putText(
                img, label, (i * PANEL + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 200, 255), 1
            )
        return img

    def _run(self) -> None:
        writer = None
        if not self.window and self.video_path is not None:
            writer = cv2.VideoWriter(
                str(self.video_path), cv2.VideoWriter.fourcc(*"MJPG"), self.fps, (3 * PANEL, PANEL)
            )
        try:
            while not self._stop.wait(1.0 / self.fps):
                img = self.compose()
                if img is None:
                    continue
                if writer is not None:
                    writer.write(img)
                else:
                    cv2.imshow("npe run", img)
                    cv2.waitKey(1)
                self.frames_written += 1
        finally:
            if writer is not None:
                writer.release()
            if self.window:
                try:
                    cv2.destroyAllWindows()
                except cv2.error:
                    pass
