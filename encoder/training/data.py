"""The data side of training: sessions, their chunks, and each epoch's batch plan.

One *session* is one recording: its stimulus (left on disk, `encoder.lazy_recording`, unless
the caller passes an in-memory `Recording`), its cells and its training chunks. Single-session
training is the one-session case of the same code; several sessions (`npe train --data a.h5
--data b.h5`) train one shared core with one readout per session.

Why the plan looks the way it does:
* Each session's chunk order is one `rng.permutation` per epoch, drawn in session order from
  the run's single numpy Generator, exactly as the one-session trainer always drew it: the
  same seed gives the same batches as before the refactor.
* Sessions are interleaved per epoch by a seeded shuffle of the batches' session tags
  (proportional sampling without replacement: every batch of every session is used once per
  epoch, and a larger session gets more steps). With one session nothing is drawn.
* Under DDP every rank takes a disjoint share of each session's chunks, cut to equal counts,
  and the tag shuffle is drawn from the same seed on every rank: ranks run the same number of
  steps, each on the same session, or the gradient all-reduce would wait forever.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from encoder.batching import Segment, batches, segments
from encoder.checkpoint import file_sha256
from encoder.lazy_recording import LazyRecording, open_lazy_recording
from encoder.recording import Recording
from encoder.training.config import TrainError

RecordingLike = Recording | LazyRecording


def session_name(recording: RecordingLike, path: Path | None) -> str:
    """The recording's `session` attribute, else its file's stem, else "session"."""
    if isinstance(recording, LazyRecording):
        return recording.session
    value = recording.extra_attrs.get("session", "")
    value = value.decode() if isinstance(value, bytes) else str(value)
    return value or (path.stem if path is not None else "session")


def resolve_cells(recording: RecordingLike, cells: Sequence[int] | None) -> NDArray[np.int64]:
    """Indices of the cells to train on (all by default); TrainError on a bad index."""
    if cells is None:
        return np.arange(recording.n_cells, dtype=np.int64)
    idx = np.asarray(list(cells), dtype=np.int64)
    bad = [int(c) for c in idx if not 0 <= c < recording.n_cells]
    if idx.size == 0 or bad:
        raise TrainError(
            f"--cells: indices must lie in [0, {recording.n_cells}); got {bad or 'none'}"
        )
    return idx


@dataclass
class Session:
    """One recording's share of a training run."""

    name: str
    path: Path | None
    recording: RecordingLike
    cells: NDArray[np.int64]
    train_segs: list[Segment]

    @property
    def cell_types(self) -> list[str]:
        return [self.recording.cells.types[c] for c in self.cells]

    def meta_fields(self, loss_name: str, seed: int) -> dict[str, Any]:
        """Checkpoint meta of this session's model (data geometry, cells, provenance)."""
        rec, cells, path = self.recording, self.cells, self.path
        exists = path is not None and path.exists()
        return {
            "loss": loss_name,
            "frame_rate_hz": rec.frame_rate_hz,
            "pixel_size_deg": rec.pixel_size_deg,
            "stimulus_kind": rec.stimulus_kind,
            "cells": {
                "ids": [rec.cells.ids[c] for c in cells],
                "types": self.cell_types,
                "center_deg": rec.cells.center_deg[cells].tolist(),
            },
            "data_path": str(path.resolve()) if exists and path is not None else str(path or ""),
            "data_sha256": file_sha256(path) if exists and path is not None else "",
            "seed": seed,
        }

    def close(self) -> None:
        if isinstance(self.recording, LazyRecording):
            self.recording.close()


def open_sessions(
    paths: Sequence[Path], recordings: Sequence[Recording] | None, cells: Sequence[int] | None
) -> list[Session]:
    """Open each recording (lazily unless given in memory) and check they train together.

    Refuses, in one line naming the files: different frame rates or frame shapes, duplicate
    session names, and `--cells` with several recordings (cell indices belong to one file).
    Chunks are filled in later (`plan_chunks`), once the model's window is known.
    """
    if recordings is not None and len(recordings) != len(paths):
        raise TrainError("give one in-memory recording per --data path")
    if len(paths) > 1 and cells is not None:
        raise TrainError(
            "--cells selects cells of one recording; it cannot apply to several --data"
        )
    sessions: list[Session] = []
    try:
        for i, path in enumerate(paths):
            rec: RecordingLike = (
                recordings[i] if recordings is not None else open_lazy_recording(path)
            )
            sessions.append(
                Session(session_name(rec, path), path, rec, resolve_cells(rec, cells), [])
            )
            first = sessions[0]
            if rec.frame_rate_hz != first.recording.frame_rate_hz:
                raise TrainError(
                    f"--data {path} is at {rec.frame_rate_hz:g} Hz but {first.path} is at "
                    f"{first.recording.frame_rate_hz:g} Hz; sessions must share a frame rate"
                )
            if rec.frame_shape != first.recording.frame_shape:
                raise TrainError(
                    f"--data {path} has {rec.frame_shape[0]}×{rec.frame_shape[1]} px frames but "
                    f"{first.path} has {first.recording.frame_shape[0]}×"
                    f"{first.recording.frame_shape[1]}; sessions must share a frame shape"
                )
            names = [s.name for s in sessions]
            if names.count(sessions[-1].name) > 1:
                other = sessions[names.index(sessions[-1].name)].path
                raise TrainError(
                    f"--data {path} and {other} are both session {sessions[-1].name!r}; "
                    "session names must be unique"
                )
    except BaseException:
        for s in sessions:
            s.close()
        raise
    return sessions


def plan_chunks(sessions: list[Session], window: int, chunk_frames: int) -> None:
    """Each session's training chunks: full-length ones only (one tensor shape per batch, and
    the same step count on every DDP rank), all of them when none is full-length."""
    for s in sessions:
        segs = segments(s.recording.splits["train"], window, chunk_frames)
        if not segs:
            where = f" of session {s.name!r}" if len(sessions) > 1 else ""
            raise TrainError(f"train split{where} has no window of {window} frames")
        full = [sg for sg in segs if sg.out_stop - sg.out_start == chunk_frames]
        s.train_segs = full or segs


def n_batches(segs: Sequence[Segment], batch_size: int) -> int:
    """Batches `encoder.batching.batches` makes of `segs` (equal-length groups)."""
    by_len: dict[int, int] = {}
    for sg in segs:
        by_len[sg.out_stop - sg.out_start] = by_len.get(sg.out_stop - sg.out_start, 0) + 1
    return sum(math.ceil(n / batch_size) for n in by_len.values())


@dataclass(frozen=True)
class EpochPlan:
    """One epoch on this rank: each session's chunks in order, and the session of each step."""

    chunks: tuple[list[Segment], ...]
    steps: tuple[int, ...]  # session index per optimiser step

    def steps_of(self, session: int) -> int:
        return sum(1 for s in self.steps if s == session)


def plan_epoch(
    sessions: list[Session],
    rng: np.random.Generator,
    epoch_frames: int | None,
    chunk_frames: int,
    batch_size: int,
    rank: int,
    world_size: int,
) -> EpochPlan:
    """Draw the epoch's chunk order per session, then interleave the sessions' batches."""
    chunks: list[list[Segment]] = []
    for s in sessions:
        order = rng.permutation(len(s.train_segs))
        if epoch_frames is not None:
            order = order[: max(1, math.ceil(epoch_frames / chunk_frames))]
        mine = [s.train_segs[i] for i in order[rank::world_size]]
        if world_size > 1:  # equal step counts on every rank
            mine = mine[: len(order) // world_size]
        chunks.append(mine)
    counts = [n_batches(c, batch_size) for c in chunks]
    tags = np.repeat(np.arange(len(sessions), dtype=np.int64), counts)
    if len(sessions) > 1:
        tags = tags[rng.permutation(tags.shape[0])]
    return EpochPlan(tuple(chunks), tuple(int(t) for t in tags))


def batch_stream(
    sessions: list[Session], plan: EpochPlan, window: int, batch_size: int
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """(session index, x [B, L, H, W], y [B, n_out, n_cells]) in the plan's step order."""
    iters = [
        batches(
            s.recording.stimulus, s.recording.responses, plan.chunks[i], window, batch_size, s.cells
        )
        for i, s in enumerate(sessions)
    ]
    for k in plan.steps:
        x, y = next(iters[k])
        yield k, x, y
