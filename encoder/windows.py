"""Windowed view of a recording: (last `window_frames` stimulus frames, newest frame's counts).

Every retina model sees a fixed history of stimulus frames (250 ms in the original work,
see REFERENCES.md, YADLRetina) and predicts the spike counts of the newest frame. This
module turns a `Recording` into that sample stream as a PyTorch Dataset.

Why it looks the way it does:

* The stimulus is converted to float32 contrast once, per split, and every sample is a
  slice (a view) of that tensor, never a per-sample copy: a 25-frame window over a
  75 000-frame recording would otherwise cost 25x the stimulus in memory.
* Only frames of the requested split are converted, so a training run does not hold the
  validation and test stimulus as float32 too.
* A window never straddles two split ranges (nor two separate ranges of one split),
  because frames on either side of a range boundary are not contiguous in time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from encoder.recording import Recording, stimulus_as_contrast
from encoder.timebase import DEFAULT_WINDOW_MS, frames_from_ms


def window_frames_for(frame_rate_hz: float, window_ms: float = DEFAULT_WINDOW_MS) -> int:
    """Number of frames covering `window_ms` at `frame_rate_hz` (25 at 100 Hz, 30 at 120 Hz)."""
    if not (np.isfinite(window_ms) and window_ms > 0):
        raise ValueError(f"window_ms must be a positive number, got {window_ms}")
    return frames_from_ms(window_ms, frame_rate_hz)


class WindowedRecording(Dataset[tuple[Tensor, Tensor]]):
    """Samples (stimulus window, newest-frame spike counts) of one split of a recording.

    Args:
        recording: a validated recording.
        split: split name ("train", "val", "test", ...); ignored for source="repeats",
            where the whole repeated clip is one range.
        window_frames: frames per window; default `window_frames_for(recording.frame_rate_hz)`.
        cells: indices of the cells to return (default all, in file order).
        source: "main" for the single-trial stream, "repeats" for the repeated test clip
            (target = mean spike count over repeats).

    Attributes:
        end_frames: [n_samples] int64 index (in the source's frame numbering: the main
            stimulus, or the repeat clip) of the newest frame of each sample.
        contrast: [n_kept_frames, H, W] float32 contrast of the split's frames, concatenated
            range after range; samples are views of it.
        targets: [n_kept_frames, n_cells] float32 counts (or repeat means) aligned with `contrast`.
        window_frames: T.
    """

    def __init__(
        self,
        recording: Recording,
        split: str,
        window_frames: int | None = None,
        cells: Sequence[int] | None = None,
        source: Literal["main", "repeats"] = "main",
    ) -> None:
        T = window_frames_for(recording.frame_rate_hz) if window_frames is None else window_frames
        if T < 1:
            raise ValueError(f"window_frames must be >= 1, got {T}")
        self.window_frames = int(T)
        cell_idx = np.arange(recording.n_cells) if cells is None else np.asarray(cells, np.int64)
        if cell_idx.ndim != 1 or cell_idx.size == 0:
            raise ValueError("cells: expected a non-empty sequence of cell indices")
        if cell_idx.min() < 0 or cell_idx.max() >= recording.n_cells:
            raise ValueError(
                f"cells: indices must lie in [0, {recording.n_cells}), got {cell_idx.tolist()}"
            )
        self.cells: NDArray[np.int64] = cell_idx

        if source == "main":
            if split not in recording.splits:
                raise ValueError(
                    f"split {split!r} not in recording (has {sorted(recording.splits)})"
                )
            ranges = np.asarray(recording.splits[split], dtype=np.int64).reshape(-1, 2)
            ranges = ranges[np.argsort(ranges[:, 0])]
            stimulus = recording.stimulus
            counts = recording.responses[:, cell_idx].astype(np.float32)
        elif source == "repeats":
            if recording.repeats is None:
                raise ValueError("source='repeats': the recording has no /repeats group")
            stimulus = recording.repeats.stimulus
            ranges = np.array([[0, stimulus.shape[0]]], dtype=np.int64)
            counts = recording.repeats.responses[:, :, cell_idx].astype(np.float32).mean(axis=0)
        else:
            raise ValueError(f"source must be 'main' or 'repeats', got {source!r}")

        # Convert only this split's frames, range by range, into one contiguous tensor.
        pieces = [stimulus_as_contrast(stimulus[s:e]) for s, e in ranges.tolist()]
        self.contrast: Tensor = torch.from_numpy(np.ascontiguousarray(np.concatenate(pieces)))
        self.targets: Tensor = torch.from_numpy(
            np.ascontiguousarray(np.concatenate([counts[s:e] for s, e in ranges.tolist()]))
        )

        # For each range: sample ends run from start+T-1 to stop-1 (original numbering);
        # `_offsets` maps them to rows of `contrast`.
        ends: list[NDArray[np.int64]] = []
        rows: list[NDArray[np.int64]] = []
        base = 0
        for s, e in ranges.tolist():
            if e - s >= T:
                local = np.arange(T - 1, e - s, dtype=np.int64)
                ends.append(s + local)
                rows.append(base + local)
            base += e - s
        self.end_frames: NDArray[np.int64] = (
            np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
        )
        self._end_rows: NDArray[np.int64] = (
            np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        )

    def __len__(self) -> int:
        return int(self.end_frames.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        """Sample i: (x [T, H, W] float32 contrast view, y [n_cells] float32 counts)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        row = int(self._end_rows[i])
        return self.contrast[row - self.window_frames + 1 : row + 1], self.targets[row]

    def batch(self, indices: Sequence[int] | NDArray[np.int64]) -> tuple[Tensor, Tensor]:
        """Gather several samples at once: (x [B, T, H, W] float32, y [B, n_cells] float32).

        Faster than a DataLoader's per-item collation for small CPU models; this does copy
        (a batch is new memory), unlike `__getitem__`.
        """
        idx = np.asarray(indices, dtype=np.int64)
        rows = self._end_rows[idx]
        offsets = np.arange(-self.window_frames + 1, 1, dtype=np.int64)
        gather = torch.from_numpy(rows[:, None] + offsets[None, :])
        return self.contrast[gather], self.targets[torch.from_numpy(rows)]

    @property
    def n_cells(self) -> int:
        return int(self.cells.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (int(self.contrast.shape[1]), int(self.contrast.shape[2]))
