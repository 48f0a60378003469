"""Synthetic camera scenes generated in numpy: a moving bar, a drifting grating, noise.

Why: `npe run` must work at once on a machine without a camera (CI, a newcomer's laptop),
and benchmarks need a deterministic video-like source. Scenes are rendered as uint8
grayscale camera frames (like a 320×240 webcam) into a caller's buffer, so the source
allocates nothing per frame.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

SceneKind = Literal["bar", "grating", "noise"]
#: Mean grey level of the rendered camera pictures (uint8). A property of the scene, as a
#: real camera's exposure would be, not the model's contrast convention: what contrast a
#: pixel becomes is decided by the bundle's preprocessing, not here.
SCENE_MEAN_U8 = 127.5
SCENES: tuple[SceneKind, ...] = ("bar", "grating", "noise")


class SyntheticScene:
    """Renders scene `kind` at time t (seconds) into a [height, width] uint8 frame.

    bar: a bright vertical bar (1/10 of the width) sweeping left→right once per 2 s on grey.
    grating: a full-contrast sinusoidal grating, 1 cycle per 1/4 width, drifting at 2 Hz.
    noise: a fixed bank of 64 smoothed random frames cycled at the render times (seeded).
    """

    def __init__(self, kind: str, width: int = 320, height: int = 240, seed: int = 0) -> None:
        if kind not in SCENES:
            raise ValueError(f"unknown synthetic scene {kind!r}; choose one of {', '.join(SCENES)}")
        self.kind = kind
        self.width, self.height = width, height
        self._x = np.arange(width, dtype=np.float32)
        self._row = np.zeros(width, dtype=np.float32)
        self._row_u8 = np.zeros(width, dtype=np.uint8)
        self._bank: NDArray[np.uint8] | None = None
        if kind == "noise":
            rng = np.random.default_rng(seed)
            small = rng.uniform(0, 255, (64, max(1, height // 8), max(1, width // 8)))
            # Nearest-neighbour upsampling gives blocky, camera-resolvable texture.
            big = small.repeat(8, axis=1).repeat(8, axis=2)[:, :height, :width]
            bank = np.full((64, height, width), 127, dtype=np.uint8)
            bank[:, : big.shape[1], : big.shape[2]] = big.astype(np.uint8)
            bank.flags.writeable = False  # handed out as views (`frame_at`)
            self._bank = bank

    def frame_at(self, t_s: float) -> NDArray[np.uint8] | None:
        """The scene at t_s as a read-only [height, width] view of the noise bank, without a
        copy; None for scenes that are rendered (`render`).

        Why: a camera hands over the buffer its driver filled; copying a 77 kB frame out of
        the bank on the loop's thread (~9 µs per bin, cache-cold after the model step) was a
        cost of the simulation that no camera run pays, and it sat inside `npe bench`'s
        capture stage (issue 17).
        """
        if self._bank is None:
            return None
        return self._bank[int(t_s * 30.0) % self._bank.shape[0]]

    def render(self, t_s: float, out: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Write the scene at time t_s into out [height, width] uint8 and return it."""
        banked = self.frame_at(t_s)
        if banked is not None:
            np.copyto(out, banked)
            return out
        if self.kind == "bar":
            centre = (t_s / 2.0 % 1.0) * self.width
            half = self.width / 20.0
            np.subtract(self._x, centre, out=self._row)
            np.abs(self._row, out=self._row)
            self._row_u8[:] = 127
            self._row_u8[self._row < half] = 255
        else:
            np.multiply(self._x, 2 * np.pi * 4.0 / self.width, out=self._row)
            np.subtract(self._row, 2 * np.pi * 2.0 * t_s, out=self._row)
            np.cos(self._row, out=self._row)
            np.multiply(self._row, 127.0, out=self._row)
            np.add(self._row, SCENE_MEAN_U8, out=self._row)
            np.copyto(self._row_u8, self._row, casting="unsafe")
        out[:] = self._row_u8  # broadcast one row over every line (vertical structure)
        return out
