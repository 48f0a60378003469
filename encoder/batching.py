"""Contiguous chunks of a recording for training and prediction.

Models are trained and evaluated on chunks of `T − 1 + n_out` consecutive frames, producing
`n_out` predictions per chunk (`RetinaModel.forward_chunk`). Chunks never cross a split range
boundary (frames on either side are not contiguous in time), exactly like the windows of
`encoder.windows.WindowedRecording`. The stimulus stays in its stored dtype (uint8 for the
synthetic retina) and is converted to contrast per chunk, so a long recording never exists
as float32 in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from encoder.lazy_recording import LazyFrames
from encoder.recording import stimulus_as_contrast

#: A stimulus in memory or left on disk (`encoder.lazy_recording`): both slice as frames[a:b].
Frames = NDArray[Any] | LazyFrames


@dataclass(frozen=True)
class Segment:
    """Predictions for newest frames [out_start, out_stop); the chunk starts T − 1 earlier."""

    out_start: int
    out_stop: int


def segments(ranges: NDArray[np.int64], window: int, out_frames: int) -> list[Segment]:
    """Tile every range [a, b) into segments of ≤ out_frames predicted frames.

    ranges: [k, 2] half-open frame ranges; frames a + T − 1 … b − 1 are predictable.
    """
    result = []
    for a, b in np.asarray(ranges, dtype=np.int64).reshape(-1, 2).tolist():
        first = a + window - 1
        for s in range(first, b, out_frames):
            result.append(Segment(s, min(s + out_frames, b)))
    return result


def chunk_tensor(stimulus: Frames, seg: Segment, window: int) -> Tensor:
    """Stimulus chunk for `seg`: [L = T − 1 + n_out, H, W] float32 contrast."""
    return torch.from_numpy(
        stimulus_as_contrast(stimulus[seg.out_start - window + 1 : seg.out_stop])
    )


def batches(
    stimulus: Frames,
    responses: NDArray[Any],
    segs: list[Segment],
    window: int,
    batch_size: int,
    cells: NDArray[np.int64],
) -> Iterator[tuple[Tensor, Tensor]]:
    """Group equal-length segments into batches: (x [B, L, H, W], y [B, n_out, n_cells]).

    Segments of different length (range tails) go in their own batches, because a batch must
    be one tensor.
    """
    by_len: dict[int, list[Segment]] = {}
    order: list[int] = []
    for seg in segs:
        n = seg.out_stop - seg.out_start
        if n not in by_len:
            by_len[n] = []
            order.append(n)
        by_len[n].append(seg)
    for seg_group in (by_len[n] for n in order):
        for i in range(0, len(seg_group), batch_size):
            group = seg_group[i : i + batch_size]
            x = torch.stack([chunk_tensor(stimulus, s, window) for s in group])
            y = torch.stack(
                [
                    torch.from_numpy(
                        responses[s.out_start : s.out_stop][:, cells].astype(np.float32)
                    )
                    for s in group
                ]
            )
            yield x, y


@torch.no_grad()
def predict_frames(
    model: torch.nn.Module,
    stimulus: Frames,
    ranges: NDArray[np.int64],
    window: int,
    out_frames: int = 256,
    batch_size: int = 4,
    device: str = "cpu",
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Predict every predictable frame of `ranges`: (frame indices [n], predictions [n, n_out]).

    `model` must have `forward_chunk(x [B, L, H, W]) -> [B, n, n_out]`.
    """
    segs = segments(ranges, window, out_frames)
    frames: list[NDArray[np.int64]] = []
    preds: list[NDArray[np.float32]] = []
    dummy = np.zeros((stimulus.shape[0], 1), dtype=np.float32)
    fwd: Any = model.forward_chunk
    batch_iter = batches(stimulus, dummy, segs, window, batch_size, np.zeros(1, dtype=np.int64))
    by_len: dict[int, list[Segment]] = {}
    for seg in segs:
        by_len.setdefault(seg.out_stop - seg.out_start, []).append(seg)
    ordered = [s for group in by_len.values() for s in group]
    pos = 0
    for x, _ in batch_iter:
        out = fwd(x.to(device)).cpu().numpy().astype(np.float32)
        for k in range(out.shape[0]):
            seg = ordered[pos]
            pos += 1
            frames.append(np.arange(seg.out_start, seg.out_stop, dtype=np.int64))
            preds.append(out[k])
    if not frames:
        raise ValueError(f"no window of {window} frames fits inside the given ranges")
    idx = np.concatenate(frames)
    order = np.argsort(idx, kind="stable")
    return idx[order], np.concatenate(preds)[order]
