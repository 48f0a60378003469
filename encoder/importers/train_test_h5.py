"""The "train/test groups" HDF5 layout shared by the Baccus-lab and Goldin et al. files.

Both keep, per file, a `/train` and a `/test` group with `stimulus` [T, H, W], spike counts
binned on the stimulus frames as `response/binned` [n_cells, T] (cells first), and the test
clip's single trials under `/test/repeats/<cell key>` [R, T_test], one dataset per cell.
They differ in names (cell keys, a `time` dataset or a fixed frame rate), which the two
format modules describe with a `TrainTestLayout`.

What becomes what in the npe recording (one output file, sources concatenated in order):
- each source's train frames, then its test frames, are appended to `/stimulus` and
  `/responses` (counts, [T, n_cells]); the last `val_fraction` of each train block is the val
  split, the rest train; the test block is the test split;
- the test block's counts are the first repeat when repeats exist (the file's
  `test/response/binned` is then a trial average, not counts), else `test/response/binned`;
- `/repeats` is the first source's test clip with all its trials [R, T_test, n_cells].
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from encoder.importers.base import (
    DatasetImportError,
    ImportOptions,
    Progress,
    Provenance,
    RecordingStreamWriter,
    SourceFile,
    as_counts,
    select_cells,
    stimulus_mapping,
)
from encoder.recording import CellInfo, Repeats

PARTS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class TrainTestLayout:
    """Names and conventions of one train/test file family.

    Attributes:
        format: the importer's name (provenance, messages).
        response_field: counts dataset inside each part group.
        time_field: per-frame times in seconds inside each part group, or None when the
            family stores none (then `default_frame_rate_hz` or the user's value is used).
        default_frame_rate_hz: frame rate when there is no time dataset.
        repeat_key: parses the cell index out of a `/test/repeats` key (None: not a cell).
    """

    format: str
    response_field: str
    time_field: str | None
    default_frame_rate_hz: float | None
    repeat_key: Callable[[str], int | None]


def cell_number(key: str) -> int | None:
    """'cell07' or 'cell_7' → 7; anything else → None."""
    m = re.fullmatch(r"cell_?(\d+)", key)
    return int(m.group(1)) if m else None


@dataclass
class _Part:
    name: str  # "train" or "test"
    stimulus: h5py.Dataset
    responses: h5py.Dataset
    n_frames: int


@dataclass
class _Source:
    path: Path
    parts: dict[str, _Part]
    n_cells: int
    frame_rate_hz: float
    repeats: list[h5py.Dataset] | None  # per source cell, [R, T_test]


def _dataset(f: h5py.File, name: str, expected: str, where: Path) -> h5py.Dataset:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        what = "missing" if obj is None else "a group, not a dataset"
        raise DatasetImportError(f"{where}: /{name}: {what} (expected {expected})")
    return obj


def _frame_rate(time: NDArray[Any], what: str) -> float:
    """1 / median frame interval; times must be finite and strictly increasing."""
    if time.ndim != 1 or time.size < 2:
        raise DatasetImportError(f"{what}: expected [n_frames] times in s, got {list(time.shape)}")
    dt = np.diff(time.astype(np.float64))
    if not np.all(np.isfinite(dt)) or np.any(dt <= 0):
        raise DatasetImportError(f"{what}: times must be finite and strictly increasing")
    return float(1.0 / np.median(dt))


def _open_source(
    f: h5py.File, path: Path, layout: TrainTestLayout, options: ImportOptions
) -> _Source:
    parts: dict[str, _Part] = {}
    rates: list[float] = []
    n_cells = -1
    for part in PARTS:
        if not isinstance(f.get(part), h5py.Group):
            raise DatasetImportError(
                f"{path}: /{part}: missing group (expected stimulus, {layout.response_field})"
            )
        stim = _dataset(f, f"{part}/stimulus", "[n_frames, height, width]", path)
        resp = _dataset(
            f, f"{part}/{layout.response_field}", "[n_cells, n_frames] spike counts", path
        )
        if stim.ndim != 3:
            raise DatasetImportError(
                f"{path}: /{part}/stimulus: expected [n_frames, height, width], got {list(stim.shape)}"
            )
        n = int(stim.shape[0])
        if resp.ndim != 2 or resp.shape[1] != n:
            raise DatasetImportError(
                f"{path}: /{part}/{layout.response_field}: expected [n_cells, {n}] "
                f"(cells first, one bin per stimulus frame), got {list(resp.shape)}"
            )
        if n_cells not in (-1, resp.shape[0]):
            raise DatasetImportError(
                f"{path}: /{part}/{layout.response_field}: {resp.shape[0]} cells, but train has {n_cells}"
            )
        n_cells = int(resp.shape[0])
        if layout.time_field is not None and options.frame_rate_hz is None:
            time = np.asarray(_dataset(f, f"{part}/{layout.time_field}", "[n_frames] s", path)[()])
            if time.shape != (n,):
                raise DatasetImportError(
                    f"{path}: /{part}/{layout.time_field}: expected [{n}] (one per frame), got {list(time.shape)}"
                )
            rates.append(_frame_rate(time, f"{path}: /{part}/{layout.time_field}"))
        parts[part] = _Part(part, stim, resp, n)
    if parts["train"].stimulus.shape[1:] != parts["test"].stimulus.shape[1:]:
        raise DatasetImportError(
            f"{path}: /test/stimulus: frames {list(parts['test'].stimulus.shape[1:])} differ from "
            f"/train/stimulus {list(parts['train'].stimulus.shape[1:])}"
        )
    if options.frame_rate_hz is not None:
        rate = options.frame_rate_hz
    elif rates:
        rate = rates[0]
        if any(abs(r - rate) > 0.01 * rate for r in rates):
            raise DatasetImportError(f"{path}: /train and /test frame rates differ ({rates} Hz)")
    elif layout.default_frame_rate_hz is not None:
        rate = layout.default_frame_rate_hz
    else:  # pragma: no cover - every layout has a time field or a default
        raise DatasetImportError(f"{path}: no frame rate; give --frame-rate-hz")
    return _Source(
        path, parts, n_cells, rate, _open_repeats(f, path, layout, n_cells, parts["test"].n_frames)
    )


def _open_repeats(
    f: h5py.File, path: Path, layout: TrainTestLayout, n_cells: int, n_test: int
) -> list[h5py.Dataset] | None:
    group = f.get("test/repeats")
    if group is None:
        return None
    if not isinstance(group, h5py.Group):
        raise DatasetImportError(f"{path}: /test/repeats: expected a group of per-cell datasets")
    keyed = sorted((num, key) for key in group if (num := layout.repeat_key(key)) is not None)
    if len(keyed) != n_cells:
        raise DatasetImportError(
            f"{path}: /test/repeats: {len(keyed)} cell datasets, but /test/{layout.response_field} "
            f"has {n_cells} cells"
        )
    out: list[h5py.Dataset] = []
    n_rep = -1
    for _, key in keyed:
        ds = group[key]
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 2 or ds.shape[1] != n_test:
            shape = list(ds.shape) if isinstance(ds, h5py.Dataset) else "a group"
            raise DatasetImportError(
                f"{path}: /test/repeats/{key}: expected [n_repeats, {n_test}], got {shape}"
            )
        if n_rep not in (-1, ds.shape[0]):
            raise DatasetImportError(
                f"{path}: /test/repeats/{key}: {ds.shape[0]} repeats, other cells have {n_rep}"
            )
        n_rep = int(ds.shape[0])
        out.append(ds)
    if n_rep < 1:
        raise DatasetImportError(
            f"{path}: /test/repeats: no trials (expected [n_repeats, {n_test}])"
        )
    return out


def import_train_test(
    layout: TrainTestLayout,
    sources: list[Path],
    out: Path,
    options: ImportOptions,
    progress: Progress,
) -> Path:
    """Import train/test files into one npe recording at `out` (streamed, validated)."""
    if not sources:
        raise DatasetImportError("SRC: give at least one source file")
    with ExitStack() as stack:
        srcs: list[_Source] = []
        for path in sources:
            if not path.is_file():
                raise DatasetImportError(f"{path}: no such file")
            try:
                f = stack.enter_context(h5py.File(path, "r"))
            except OSError as exc:
                raise DatasetImportError(f"{path}: not a readable HDF5 file ({exc})") from None
            srcs.append(_open_source(f, path, layout, options))
        first = srcs[0]
        for s in srcs[1:]:
            if s.n_cells != first.n_cells:
                raise DatasetImportError(
                    f"{s.path}: {s.n_cells} cells, but {first.path} has {first.n_cells}"
                )
            if s.parts["train"].stimulus.shape[1:] != first.parts["train"].stimulus.shape[1:]:
                raise DatasetImportError(
                    f"{s.path}: /train/stimulus frame size differs from {first.path}"
                )
            if abs(s.frame_rate_hz - first.frame_rate_hz) > 0.01 * first.frame_rate_hz:
                raise DatasetImportError(
                    f"{s.path}: frame rate {s.frame_rate_hz:g} Hz differs from {first.path}'s "
                    f"{first.frame_rate_hz:g} Hz"
                )
        keep = select_cells(
            first.n_cells, options.cells, f"{first.path}: /train/{layout.response_field}"
        )
        if options.pixel_size_deg is None:
            raise DatasetImportError(
                f"{first.path}: the pixel size is not stored in the {layout.format} layout; "
                "give --pixel-size-deg (degrees of visual angle per stimulus pixel)"
            )
        stim_sets = [(f"{s.path}: /{p}/stimulus", s.parts[p].stimulus) for s in srcs for p in PARTS]
        progress("scanning stimulus range", 0, 0)
        mapping = stimulus_mapping(stim_sets, options.chunk_frames)
        session = options.session or "+".join(
            f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem for p in sources
        )
        prov = Provenance(
            format=layout.format,
            sources=[SourceFile.of(p) for p in sources],
            fields={
                "/stimulus": "train/stimulus + test/stimulus (per source, in order); "
                + mapping.describe(),
                "/responses": f"train/{layout.response_field} (transposed); test: "
                + ("test/repeats/<cell>[0]" if first.repeats else f"test/{layout.response_field}"),
                "/repeats/stimulus": "test/stimulus" if first.repeats else "",
                "/repeats/responses": "test/repeats/<cell> [R, T] stacked over cells",
                "frame_rate_hz": f"1 / median diff of train/{layout.time_field}"
                if layout.time_field and options.frame_rate_hz is None
                else "given or the layout's fixed rate",
                "cells": f"rows {keep} of train/{layout.response_field}",
            },
        )
        if any(s.repeats for s in srcs[1:]):
            prov.notes.append("test repeats of sources after the first are not kept (one /repeats)")
        total = sum(s.parts[p].n_frames for s in srcs for p in PARTS)
        h, w = (int(x) for x in first.parts["train"].stimulus.shape[1:])
        splits: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}
        with RecordingStreamWriter(
            out,
            (h, w),
            mapping.dtype,
            len(keep),
            first.frame_rate_hz,
            options.pixel_size_deg,
            source=f"{layout.format}: " + ", ".join(p.name for p in sources),
            provenance=prov,
            session=session,
        ) as writer:
            for s in srcs:
                for pname in PARTS:
                    part = s.parts[pname]
                    start = writer.n_frames
                    use_repeat = pname == "test" and s.repeats is not None
                    field = (
                        f"{s.path}: /test/repeats/<cell>[0]"
                        if use_repeat
                        else f"{s.path}: /{pname}/{layout.response_field}"
                    )
                    for a in range(0, part.n_frames, options.chunk_frames):
                        b = min(part.n_frames, a + options.chunk_frames)
                        if use_repeat:
                            assert s.repeats is not None
                            raw = np.stack([s.repeats[c][0, a:b] for c in keep], axis=1)
                        else:
                            raw = np.asarray(part.responses[:, a:b])[keep].T
                        writer.append(mapping.apply(part.stimulus[a:b]), as_counts(raw, field))
                        progress("frames", writer.n_frames, total)
                    stop = writer.n_frames
                    if pname == "test":
                        splits["test"].append((start, stop))
                        continue
                    n_val = round(part.n_frames * options.val_fraction)
                    if n_val < 1 or n_val >= part.n_frames:
                        raise DatasetImportError(
                            f"{s.path}: /train: {part.n_frames} frames cannot give a val split of "
                            f"fraction {options.val_fraction}"
                        )
                    splits["train"].append((start, stop - n_val))
                    splits["val"].append((stop - n_val, stop))
            writer.set_splits(splits)
            ids = tuple(f"cell{c}" for c in keep)
            writer.set_cells(
                CellInfo(
                    ids=ids,
                    types=("unknown",) * len(keep),
                    center_deg=np.full((len(keep), 2), np.nan, dtype=np.float32),
                )
            )
            if first.repeats is not None:
                progress("repeats", 0, 0)
                rep_resp = np.stack(
                    [
                        as_counts(
                            np.asarray(first.repeats[c][()]),
                            f"{first.path}: /test/repeats/cell {c}",
                        )
                        for c in keep
                    ],
                    axis=2,
                )
                writer.set_repeats(
                    Repeats(
                        stimulus=mapping.apply(first.parts["test"].stimulus[()]),
                        responses=rep_resp,
                    )
                )
            progress("validating", 0, 0)
            return writer.commit(options.chunk_frames)
    raise AssertionError("unreachable")  # pragma: no cover
