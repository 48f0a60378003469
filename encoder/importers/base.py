"""What every importer shares: options, provenance, the chunked writer and a streaming check.

Public recordings are large (hours of 50×50 frames), so an importer never holds a whole
stimulus: it appends chunks of frames to resizable HDF5 datasets of the npe layout
(`RecordingStreamWriter`), writes into a temporary file beside the output, checks the finished
file against format v1 chunk by chunk (`validate_recording_file`) and only then renames it
into place, so a refused import changes nothing on disk. Torch-free, like the recording reader.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from encoder.recording import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CellInfo,
    RecordingFormatError,
    Repeats,
    _check_stimulus,
    check_splits,
)

DEFAULT_CHUNK_FRAMES = 2048
UINT16_MAX = int(np.iinfo(np.uint16).max)

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): called as chunks are written (total 0 when unknown)."""


class DatasetImportError(RecordingFormatError):
    """A public dataset file that cannot be imported; the message names the field."""


def no_progress(stage: str, done: int, total: int) -> None:
    """The default progress callback: silent."""


@dataclass(frozen=True)
class ImportOptions:
    """Choices a user makes for one import (the CLI's flags).

    Attributes:
        session: name stored in the recording (default: from the source file names).
        cells: indices (0-based, in the source's order) of the cells to keep; None keeps all.
        pixel_size_deg: visual angle of one pixel; required when the source does not say.
        val_fraction: the last fraction of each training block that becomes the val split.
        chunk_frames: frames per chunk read and written (bounds memory).
        centers_from_sta: fill unknown cell centres from the spike-triggered average.
        frame_rate_hz: override of the frame rate for formats that do not store it.
        series: the NWB ImageSeries to use when a file holds several.
    """

    session: str | None = None
    cells: tuple[int, ...] | None = None
    pixel_size_deg: float | None = None
    val_fraction: float = 0.1
    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    centers_from_sta: bool = False
    frame_rate_hz: float | None = None
    series: str | None = None

    def __post_init__(self) -> None:
        if self.pixel_size_deg is not None and not (
            math.isfinite(self.pixel_size_deg) and self.pixel_size_deg > 0
        ):
            raise DatasetImportError(
                f"--pixel-size-deg: expected a positive number, got {self.pixel_size_deg}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise DatasetImportError(
                f"--val-fraction: expected a number in (0, 1), got {self.val_fraction}"
            )
        if self.chunk_frames < 1:
            raise DatasetImportError(f"chunk_frames: expected >= 1, got {self.chunk_frames}")
        if self.cells is not None and (
            len(self.cells) == 0 or min(self.cells) < 0 or len(set(self.cells)) != len(self.cells)
        ):
            raise DatasetImportError(
                f"--cells: expected distinct non-negative indices, got {list(self.cells)}"
            )
        if self.frame_rate_hz is not None and not (
            math.isfinite(self.frame_rate_hz) and self.frame_rate_hz > 0
        ):
            raise DatasetImportError(
                f"--frame-rate-hz: expected a positive number, got {self.frame_rate_hz}"
            )


@dataclass(frozen=True)
class SourceFile:
    """One input file as provenance: where it was, its bytes and their sha256."""

    path: str
    sha256: str
    size_bytes: int

    @classmethod
    def of(cls, path: Path) -> SourceFile:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return cls(
            path=str(path.resolve()), sha256=digest.hexdigest(), size_bytes=path.stat().st_size
        )


@dataclass
class Provenance:
    """Where a recording came from; written as JSON in the root attribute `provenance`.

    `fields` maps each npe path to the original field name(s) it was read from.
    """

    format: str
    sources: list[SourceFile]
    fields: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": self.format,
                "sources": [vars(s) for s in self.sources],
                "fields": self.fields,
                "notes": self.notes,
            },
            sort_keys=True,
        )


def select_cells(n_available: int, cells: tuple[int, ...] | None, what: str) -> list[int]:
    """The cell indices to keep, refusing indices the source does not have."""
    if n_available < 1:
        raise DatasetImportError(f"{what}: no cells (expected at least one)")
    if cells is None:
        return list(range(n_available))
    bad = [c for c in cells if c >= n_available]
    if bad:
        raise DatasetImportError(
            f"--cells: indices {bad} do not exist ({what} has {n_available} cells, 0..{n_available - 1})"
        )
    return list(cells)


def as_counts(values: NDArray[Any], what: str) -> NDArray[np.uint16]:
    """Spike counts from a source array: finite, non-negative, whole, at most 65535."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise DatasetImportError(f"{what}: expected numeric spike counts, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise DatasetImportError(
                f"{what}: contains NaN or infinite values (expected spike counts)"
            )
        if not np.all(arr == np.round(arr)):
            raise DatasetImportError(
                f"{what}: holds fractional values, not spike counts (a firing rate or a "
                "trial average cannot become counts)"
            )
    if arr.size and (arr.min() < 0 or arr.max() > UINT16_MAX):
        raise DatasetImportError(
            f"{what}: expected spike counts in [0, {UINT16_MAX}], found [{arr.min()}, {arr.max()}]"
        )
    return arr.astype(np.uint16)


@dataclass(frozen=True)
class StimulusMapping:
    """How source pixel values become npe stimulus values (decided from the whole range).

    kind "uint8": integral values in [0, 255], stored as uint8. kind "contrast": float32 in
    [-1, 1], computed as (x - offset) / scale.
    """

    kind: str
    offset: float = 0.0
    scale: float = 1.0

    @property
    def dtype(self) -> type[np.generic]:
        return np.uint8 if self.kind == "uint8" else np.float32

    def apply(self, chunk: NDArray[Any]) -> NDArray[Any]:
        if self.kind == "uint8":
            return np.asarray(chunk).astype(np.uint8)
        out = (np.asarray(chunk, dtype=np.float64) - self.offset) / self.scale
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def describe(self) -> str:
        if self.kind == "uint8":
            return "uint8 luminance, unchanged"
        return f"float32 contrast = (x - {self.offset:g}) / {self.scale:g}"


def stimulus_mapping(datasets: list[tuple[str, Any]], chunk_frames: int) -> StimulusMapping:
    """One pass over every stimulus dataset (chunked) to choose the value mapping.

    uint8 stays uint8; whole numbers in [0, 255] (max > 1) become uint8; other non-negative
    values are luminance, mapped from [0, max] to [-1, 1]; signed values within [-1, 1] are
    already contrast; other signed values (z-scored noise) are divided by their largest
    magnitude. NaN or infinite values are refused. The choice is recorded in the provenance.
    """
    lo, hi, integral, all_uint8 = math.inf, -math.inf, True, True
    for name, ds in datasets:
        if ds.dtype.kind not in "biuf":
            raise DatasetImportError(f"{name}: expected numeric pixel values, got dtype {ds.dtype}")
        all_uint8 &= ds.dtype == np.uint8
        for start in range(0, int(ds.shape[0]), chunk_frames):
            chunk = np.asarray(ds[start : start + chunk_frames])
            if chunk.dtype.kind == "f":
                if not np.all(np.isfinite(chunk)):
                    raise DatasetImportError(
                        f"{name}: contains NaN or infinite values (expected pixel values)"
                    )
                integral &= bool(np.all(chunk == np.round(chunk)))
            if chunk.size:
                lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    if all_uint8:
        return StimulusMapping("uint8")
    if not math.isfinite(lo):
        return StimulusMapping("contrast")
    if integral and lo >= 0 and hi <= 255 and hi > 1:
        return StimulusMapping("uint8")
    if lo >= 0 and hi > 0:  # luminance (e.g. 0/1 noise, 0..1 images): [0, max] → [-1, 1]
        return StimulusMapping("contrast", offset=hi / 2.0, scale=hi / 2.0)
    if lo >= -1.0 and hi <= 1.0:
        return StimulusMapping("contrast")
    return StimulusMapping("contrast", offset=0.0, scale=max(abs(lo), abs(hi)))


class RecordingStreamWriter:
    """Writes a format-v1 recording chunk by chunk into a temporary file, then renames it.

    Use as a context manager: `append` stimulus/response chunks, set cells, splits and
    repeats, and `commit()`; leaving the block without commit (an error) deletes the
    temporary file, so the output path is untouched.
    """

    def __init__(
        self,
        path: Path,
        frame_shape: tuple[int, int],
        stimulus_dtype: type[np.generic],
        n_cells: int,
        frame_rate_hz: float,
        pixel_size_deg: float,
        source: str,
        provenance: Provenance,
        session: str,
    ) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.part")
        self._made_dir = not self.path.parent.exists()  # removed again if the import fails
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = h5py.File(self.tmp, "w")
        f = self._f
        f.attrs["format"] = FORMAT_NAME
        f.attrs["version"] = FORMAT_VERSION
        f.attrs["frame_rate_hz"] = float(frame_rate_hz)
        f.attrs["pixel_size_deg"] = float(pixel_size_deg)
        f.attrs["source"] = source
        f.attrs["session"] = session
        self.provenance = provenance
        h, w = frame_shape
        self.frame_shape = frame_shape
        self._stim = f.create_dataset(
            "stimulus",
            shape=(0, h, w),
            maxshape=(None, h, w),
            dtype=stimulus_dtype,
            chunks=(max(1, min(256, (1 << 20) // max(1, h * w))), h, w),
            compression="gzip",
            compression_opts=1,
        )
        self._stim.attrs["kind"] = "uint8" if stimulus_dtype == np.uint8 else "contrast"
        self._resp = f.create_dataset(
            "responses",
            shape=(0, n_cells),
            maxshape=(None, n_cells),
            dtype=np.uint16,
            chunks=(max(1, min(4096, (1 << 18) // max(1, n_cells))), n_cells),
            compression="gzip",
        )
        self.n_cells = n_cells
        self._committed = False

    @property
    def n_frames(self) -> int:
        return int(self._stim.shape[0])

    def append(self, stimulus: NDArray[Any], responses: NDArray[np.uint16]) -> None:
        """Append frames [k, h, w] and their counts [k, n_cells]."""
        k = stimulus.shape[0]
        if stimulus.shape[1:] != self.frame_shape or responses.shape != (k, self.n_cells):
            raise DatasetImportError(
                f"internal: chunk of {list(stimulus.shape)} frames and {list(responses.shape)} "
                f"counts does not fit frames {list(self.frame_shape)} and {self.n_cells} cells"
            )
        n = self.n_frames
        self._stim.resize(n + k, axis=0)
        self._stim[n : n + k] = stimulus
        self._resp.resize(n + k, axis=0)
        self._resp[n : n + k] = responses

    def set_cells(self, cells: CellInfo) -> None:
        str_dtype = h5py.string_dtype(encoding="utf-8")
        g = self._f.require_group("cells")
        for name in ("id", "type", "center_deg"):
            if name in g:
                del g[name]
        g.create_dataset("id", data=np.array(cells.ids, dtype=object), dtype=str_dtype)
        g.create_dataset("type", data=np.array(cells.types, dtype=object), dtype=str_dtype)
        g.create_dataset("center_deg", data=cells.center_deg.astype(np.float32))

    def set_splits(self, splits: dict[str, list[tuple[int, int]]]) -> None:
        g = self._f.require_group("splits")
        for name, ranges in splits.items():
            g.create_dataset(name, data=np.asarray(ranges, dtype=np.int64).reshape(-1, 2))

    def set_repeats(self, repeats: Repeats) -> None:
        rep = self._f.create_group("repeats")
        rs = rep.create_dataset("stimulus", data=repeats.stimulus, compression="gzip")
        rs.attrs["kind"] = "uint8" if repeats.stimulus.dtype == np.uint8 else "contrast"
        rep.create_dataset("responses", data=repeats.responses, compression="gzip")

    def commit(self, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> Path:
        """Write provenance, close, validate the file against v1, and move it into place."""
        self._f.attrs["provenance"] = self.provenance.to_json()
        self._f.close()
        validate_recording_file(self.tmp, chunk_frames)
        os.replace(self.tmp, self.path)
        self._committed = True
        return self.path

    def __enter__(self) -> RecordingStreamWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            if self._f.id.valid:
                self._f.close()
            self.tmp.unlink(missing_ok=True)
            if self._made_dir and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()


def _ds(f: h5py.File, name: str, expected: str) -> h5py.Dataset:
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise RecordingFormatError(f"/{name}: missing (expected {expected})")
    return f[name]


def validate_recording_file(path: Path, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> None:
    """Check a file against format v1 like `read_recording`, but chunk by chunk.

    Same rules and messages (the small parts go through the same dataclasses and
    `check_splits`); the stimulus and responses are read `chunk_frames` at a time.
    """
    with h5py.File(path, "r") as f:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != FORMAT_NAME or int(f.attrs.get("version", -1)) != FORMAT_VERSION:
            raise RecordingFormatError(
                f"/ attrs format/version: not {FORMAT_NAME} v{FORMAT_VERSION}"
            )
        for attr in ("frame_rate_hz", "pixel_size_deg"):
            value = float(f.attrs.get(attr, math.nan))
            if not (math.isfinite(value) and value > 0):
                raise RecordingFormatError(
                    f"/ attrs {attr}: expected a positive number, got {value}"
                )
        stim = _ds(f, "stimulus", "[n_frames, height, width]")
        resp = _ds(f, "responses", "[n_frames, n_cells] uint16")
        ids = tuple(
            v.decode() if isinstance(v, bytes) else str(v)
            for v in _ds(f, "cells/id", "[n_cells] str")[()].tolist()
        )
        types = tuple(
            v.decode() if isinstance(v, bytes) else str(v)
            for v in _ds(f, "cells/type", "[n_cells] str")[()].tolist()
        )
        center = np.asarray(_ds(f, "cells/center_deg", "[n_cells, 2]")[()], dtype=np.float32)
        cells = CellInfo(ids=ids, types=types, center_deg=center)
        n_frames = int(stim.shape[0])
        if stim.ndim != 3 or resp.shape != (n_frames, cells.n_cells) or resp.dtype != np.uint16:
            raise RecordingFormatError(
                f"/responses: expected shape [{n_frames}, {cells.n_cells}] uint16, "
                f"got {list(resp.shape)} {resp.dtype}"
            )
        for start in range(0, n_frames, chunk_frames):
            _check_stimulus("/stimulus", np.asarray(stim[start : start + chunk_frames]))
        splits = {name: np.asarray(ds[()], dtype=np.int64) for name, ds in f["splits"].items()}
        check_splits(splits, n_frames)
        if "repeats" in f:
            rep = Repeats(
                stimulus=np.asarray(_ds(f, "repeats/stimulus", "[n_rep, h, w]")[()]),
                responses=np.asarray(_ds(f, "repeats/responses", "[R, n_rep, n_cells]")[()]),
            )
            if rep.stimulus.shape[1:] != stim.shape[1:] or rep.responses.shape[2] != cells.n_cells:
                raise RecordingFormatError(
                    f"/repeats: expected frames {list(stim.shape[1:])} and {cells.n_cells} cells, "
                    f"got {list(rep.stimulus.shape[1:])} and {rep.responses.shape[2]}"
                )
