"""A recording whose stimulus stays on disk: frames are read from HDF5 when a slice asks.

Why: Maheswaranathan et al. 2023's training set is about 360,000 frames of 50×50 px; as uint8
that is 900 MB, and `read_recording` would hold all of it (plus any float32 copy) in memory.
Training only ever needs a few chunks of ~100 frames at a time, so `open_lazy_recording`
checks the file like `read_recording` does but leaves `/stimulus` in the file, behind
`LazyFrames`: an array-like that answers `frames[a:b]` from an LRU of chunk-aligned blocks
(a block is a whole number of the dataset's HDF5 chunks, so no HDF5 chunk is decompressed
twice for one block). Responses, cells and splits are small and are loaded.

Torch-free, like `encoder.recording` (the import rules check it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from encoder.recording import (
    CellInfo,
    RecordingFormatError,
    _dataset,
    _strings,
    check_splits,
    open_recording_file,
)

#: Frames per cache block at least (rounded up to whole HDF5 chunks).
MIN_BLOCK_FRAMES = 256
#: Bytes of decoded frames the LRU keeps; a few hundred blocks of 50×50 uint8.
DEFAULT_CACHE_BYTES = 96 * 1024**2
#: Frames checked per read when validating a float32 stimulus at open.
_VALIDATE_FRAMES = 4096


class LazyFrames:
    """`[n_frames, H, W]` frames of an HDF5 dataset, read on demand through a block LRU.

    Supports what the trainer asks of a stimulus: `shape`, `dtype`, `ndim`, `len()` and
    `frames[a:b]` with a step-1 slice (a new array, never a view of the cache). Thread-safe:
    the prefetch thread and the main thread may read at once.
    """

    def __init__(self, dataset: h5py.Dataset, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if dataset.ndim != 3:
            raise RecordingFormatError(
                f"/stimulus: expected shape [n_frames, height, width], got {list(dataset.shape)}"
            )
        self._ds = dataset
        self.shape: tuple[int, int, int] = tuple(int(s) for s in dataset.shape)  # type: ignore[assignment]
        self.dtype = np.dtype(dataset.dtype)
        self.ndim = 3
        rows = int(dataset.chunks[0]) if dataset.chunks is not None else 1
        self.block_frames = rows * max(1, -(-MIN_BLOCK_FRAMES // rows))
        frame_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        self.max_blocks = max(2, cache_bytes // max(1, self.block_frames * frame_bytes))
        self._blocks: OrderedDict[int, NDArray[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.blocks_read = 0  # cache misses, for the benchmark

    def __len__(self) -> int:
        return self.shape[0]

    def _block(self, k: int) -> NDArray[Any]:
        block = self._blocks.get(k)
        if block is not None:
            self._blocks.move_to_end(k)
            return block
        a = k * self.block_frames
        block = np.asarray(self._ds[a : min(a + self.block_frames, self.shape[0])])
        self.blocks_read += 1
        self._blocks[k] = block
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)
        return block

    def __getitem__(self, index: slice) -> NDArray[Any]:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("LazyFrames supports frames[a:b] slices only")
        start, stop, _ = index.indices(self.shape[0])
        stop = max(start, stop)
        out = np.empty((stop - start, self.shape[1], self.shape[2]), dtype=self.dtype)
        bf = self.block_frames
        with self._lock:
            pos = start
            while pos < stop:
                k = pos // bf
                block = self._block(k)
                lo = pos - k * bf
                n = min(stop - pos, block.shape[0] - lo)
                out[pos - start : pos - start + n] = block[lo : lo + n]
                pos += n
        return out


@dataclass(frozen=True)
class LazyRecording:
    """A checked recording with its stimulus left in the file (`LazyFrames`).

    Same attribute names as `encoder.recording.Recording` for what training reads (stimulus,
    responses, cells, splits, frame_rate_hz, pixel_size_deg, session); no repeats or truth
    (evaluation reads the whole file with `read_recording`). Close it, or use it as a context
    manager.
    """

    path: Path
    stimulus: LazyFrames
    responses: NDArray[np.uint16]
    cells: CellInfo
    splits: dict[str, NDArray[np.int64]]
    frame_rate_hz: float
    pixel_size_deg: float
    session: str
    _file: h5py.File = field(repr=False)

    @property
    def n_frames(self) -> int:
        return self.stimulus.shape[0]

    @property
    def n_cells(self) -> int:
        return self.cells.n_cells

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (self.stimulus.shape[1], self.stimulus.shape[2])

    @property
    def stimulus_kind(self) -> str:
        return "uint8" if self.stimulus.dtype == np.uint8 else "contrast"

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LazyRecording:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _positive_attr(f: h5py.File, name: str) -> float:
    if name not in f.attrs:
        raise RecordingFormatError(f"/ attrs {name}: missing (expected a positive number)")
    value = f.attrs[name]
    numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    if not (numeric and bool(np.isfinite(value)) and float(value) > 0):
        raise RecordingFormatError(
            f"/ attrs {name}: expected a positive finite number, got {value!r}"
        )
    return float(value)


def _check_float_stimulus(ds: h5py.Dataset) -> None:
    """float32 contrast must be finite and in [-1, 1]: checked block by block, never whole."""
    for a in range(0, int(ds.shape[0]), _VALIDATE_FRAMES):
        block = np.asarray(ds[a : a + _VALIDATE_FRAMES])
        if (
            not np.all(np.isfinite(block))
            or block.min(initial=0.0) < -1
            or block.max(initial=0.0) > 1
        ):
            raise RecordingFormatError(
                f"/stimulus: frames from {a} hold NaN, infinite or out-of-range values "
                "(expected uint8 0..255 or float32 contrast in [-1, 1])"
            )


def open_lazy_recording(path: str | Path, cache_bytes: int = DEFAULT_CACHE_BYTES) -> LazyRecording:
    """Open `path` for training without loading its stimulus; RecordingFormatError names a fault.

    Checks what `read_recording` checks for the parts training uses: format and version,
    frame rate and pixel size, stimulus shape and dtype (float32 values too, streamed),
    responses `[n_frames, n_cells]` uint16, cells and splits. The session name is the root
    `session` attribute (written by `npe dataset import`), else the file name's stem.
    """
    path = Path(path)
    f = open_recording_file(path)
    try:
        rate = _positive_attr(f, "frame_rate_hz")
        pixel = _positive_attr(f, "pixel_size_deg")
        stim = f.get("stimulus")
        if not isinstance(stim, h5py.Dataset) or stim.ndim != 3:
            raise RecordingFormatError(
                f"{path}: /stimulus: expected a [n_frames, height, width] dataset"
            )
        if stim.dtype == np.float32:
            _check_float_stimulus(stim)
        elif stim.dtype != np.uint8:
            raise RecordingFormatError(
                f"{path}: /stimulus: expected dtype uint8 or float32, got {stim.dtype}"
            )
        n_frames = int(stim.shape[0])
        responses = _dataset(f, "responses", "[n_frames, n_cells] uint16")
        if responses.dtype != np.uint16 or responses.ndim != 2 or responses.shape[0] != n_frames:
            raise RecordingFormatError(
                f"{path}: /responses: expected [{n_frames}, n_cells] uint16, "
                f"got {list(responses.shape)} {responses.dtype}"
            )
        if "cells" not in f:
            raise RecordingFormatError(
                f"{path}: /cells: missing group (expected id, type, center_deg)"
            )
        cells = CellInfo(
            ids=_strings(f, "cells/id", "[n_cells] str"),
            types=_strings(f, "cells/type", "[n_cells] str"),
            center_deg=_dataset(f, "cells/center_deg", "[n_cells, 2] float32").astype(np.float32),
        )
        if cells.n_cells != responses.shape[1]:
            raise RecordingFormatError(
                f"{path}: /responses: {responses.shape[1]} cells, /cells/id has {cells.n_cells}"
            )
        if "splits" not in f:
            raise RecordingFormatError(
                f"{path}: /splits: missing group (expected train, val, test)"
            )
        splits = {
            name: _dataset(f, f"splits/{name}", "[k, 2] int64").astype(np.int64)
            for name in f["splits"]
        }
        check_splits(splits, n_frames)
        session = f.attrs.get("session", "")
        session = session.decode() if isinstance(session, bytes) else str(session)
        return LazyRecording(
            path=path,
            stimulus=LazyFrames(stim, cache_bytes),
            responses=responses,
            cells=cells,
            splits=splits,
            frame_rate_hz=rate,
            pixel_size_deg=pixel,
            session=session or path.stem,
            _file=f,
        )
    except RecordingFormatError as exc:
        f.close()
        if str(exc).startswith(str(path)):
            raise
        raise RecordingFormatError(f"{path}: {exc}") from None
    except BaseException:
        f.close()
        raise
