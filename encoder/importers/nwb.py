"""`nwb`: Neurodata Without Borders files (DANDI) in, and an npe recording out to NWB.

Import reads, through pynwb:
- the stimulus: one `ImageSeries` (or `OpticalSeries`) from `stimulus` or `acquisition`
  (`--series NAME` when there are several) with frames embedded as [n, height, width]
  (rows then columns, as the exporter writes them; colour and external files are refused);
  its own `timestamps` (or starting_time + rate) are the frame times;
- the responses: every unit's `spike_times` in the Units table binned onto those frames,
  bin i = [t_i, t_{i+1}) exactly half-open, the last bin one median interval long. Irregular
  or dropped frames just make longer bins; nothing assumes a uniform rate. The recording's
  frame rate is 1 / the median interval;
- splits and repeats from the trials table (or an intervals table named "trials"), column
  `split` = train | val | test | repeat: a frame belongs to a row when start ≤ t < stop.
  Rows "repeat" are presentations of one clip: equal length, the first presentation's
  frames become /repeats/stimulus, every presentation's counts /repeats/responses, and
  those frames leave the main stimulus. Without a trials table the last 2 × val_fraction of
  the frames become val then test;
- units columns `cell_id`, `cell_type`, `center_x_deg`, `center_y_deg` when present
  (types default to "unknown", centres to NaN); `pixel_size_deg=X` in the series'
  description when present, else --pixel-size-deg is required.

Export writes exactly that: the main frames then each repeat presentation in one
ImageSeries at i / frame_rate, spikes placed evenly inside their frame's bin, a trials table
with the splits and repeats, so export → import gives the same counts. Both directions
stream the frames in chunks; export holds one cell's counts (and the repeats) at a time.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from encoder.importers.base import (
    DEFAULT_CHUNK_FRAMES,
    DatasetImportError,
    ImportOptions,
    Progress,
    Provenance,
    RecordingStreamWriter,
    SourceFile,
    select_cells,
    stimulus_mapping,
    validate_recording_file,
)
from encoder.recording import CellInfo, RecordingFormatError, Repeats

SPLIT_COLUMN = "split"
_PIXEL_RE = re.compile(r"pixel_size_deg=([0-9.eE+-]+)")


def _find_series(nwb: Any, name: str | None, path: Path) -> Any:
    from pynwb.image import ImageSeries

    found: dict[str, Any] = {}
    for where in ("stimulus", "acquisition"):
        for key, obj in getattr(nwb, where).items():
            if isinstance(obj, ImageSeries):
                found[key] = obj
    if name is not None:
        if name not in found:
            raise DatasetImportError(
                f"{path}: --series {name}: no such ImageSeries (found: {sorted(found) or 'none'})"
            )
        return found[name]
    if not found:
        raise DatasetImportError(
            f"{path}: no ImageSeries in stimulus or acquisition (expected the stimulus frames)"
        )
    if len(found) > 1:
        raise DatasetImportError(
            f"{path}: several ImageSeries ({', '.join(sorted(found))}); choose one with --series"
        )
    return next(iter(found.values()))


def _frame_times(series: Any, n: int, path: Path) -> NDArray[np.float64]:
    what = f"{path}: ImageSeries {series.name}"
    if series.timestamps is not None:
        ts = np.asarray(series.timestamps[()], dtype=np.float64)
        if ts.shape != (n,):
            raise DatasetImportError(f"{what}: timestamps: expected [{n}], got {list(ts.shape)}")
    elif series.rate is not None and series.rate > 0:
        ts = float(series.starting_time or 0.0) + np.arange(n, dtype=np.float64) / float(
            series.rate
        )
    else:
        raise DatasetImportError(f"{what}: neither timestamps nor a positive rate")
    dt = np.diff(ts)
    if n < 2 or not np.all(np.isfinite(ts)) or np.any(dt <= 0):
        raise DatasetImportError(
            f"{what}: timestamps must be finite and strictly increasing (≥ 2 frames)"
        )
    return ts


def _bin_edges(ts: NDArray[np.float64]) -> NDArray[np.float64]:
    """n + 1 edges: each frame's time, then one median interval after the last."""
    return np.concatenate([ts, [ts[-1] + float(np.median(np.diff(ts)))]])


def bin_spikes(spikes: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.int64]:
    """Counts of sorted spike times in the half-open bins [edges[i], edges[i+1])."""
    lo = int(np.searchsorted(spikes, edges[0], side="left"))
    hi = int(np.searchsorted(spikes, edges[-1], side="left"))
    idx = np.searchsorted(edges, spikes[lo:hi], side="right") - 1
    return np.bincount(idx, minlength=edges.size - 1)[: edges.size - 1].astype(np.int64)


def _trial_rows(nwb: Any, ts: NDArray[np.float64], path: Path) -> list[tuple[str, int, int]] | None:
    table = nwb.trials
    if table is None and "trials" in nwb.intervals:
        table = nwb.intervals["trials"]
    if table is None:
        return None
    if SPLIT_COLUMN not in table.colnames:
        raise DatasetImportError(
            f"{path}: trials: column '{SPLIT_COLUMN}' missing (expected train, val, test or "
            "repeat per row)"
        )
    starts = np.asarray(table["start_time"][:], dtype=np.float64)
    stops = np.asarray(table["stop_time"][:], dtype=np.float64)
    kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in table[SPLIT_COLUMN][:]]
    rows = []
    for i, (start, stop, kind) in enumerate(zip(starts, stops, kinds, strict=True)):
        if kind not in ("train", "val", "test", "repeat"):
            raise DatasetImportError(
                f"{path}: trials row {i}: {SPLIT_COLUMN}={kind!r} (expected train, val, test or repeat)"
            )
        a = int(np.searchsorted(ts, start, side="left"))
        b = int(np.searchsorted(ts, stop, side="left"))
        if not (math.isfinite(start) and math.isfinite(stop)) or b <= a:
            raise DatasetImportError(
                f"{path}: trials row {i}: [{start}, {stop}) s holds no stimulus frame"
            )
        rows.append((kind, a, b))
    return rows


def _column(table: Any, name: str, n: int) -> list[Any] | None:
    return list(table[name][:]) if name in table.colnames else None


def import_nwb(sources: list[Path], out: Path, options: ImportOptions, progress: Progress) -> Path:
    """Import one NWB file's stimulus, units and trials into an npe recording (streamed)."""
    from pynwb import NWBHDF5IO

    if len(sources) != 1:
        raise DatasetImportError(f"SRC: the nwb importer takes one file, got {len(sources)}")
    path = sources[0]
    if not path.is_file():
        raise DatasetImportError(f"{path}: no such file")
    try:
        io = NWBHDF5IO(str(path), "r")
        nwb = io.read()
    except Exception as exc:  # pynwb raises many kinds for a file that is not NWB
        raise DatasetImportError(
            f"{path}: not a readable NWB file ({type(exc).__name__}: {exc})"
        ) from None
    with io:
        series = _find_series(nwb, options.series, path)
        if (series.external_file is not None and series.data is None) or (
            series.data is not None and len(series.data) == 0
        ):
            raise DatasetImportError(
                f"{path}: ImageSeries {series.name}: frames are in external files; embed them"
            )
        data = series.data
        if data.ndim != 3:
            raise DatasetImportError(
                f"{path}: ImageSeries {series.name}: data: expected [n_frames, height, width] "
                f"greyscale, got {list(data.shape)}"
            )
        n = int(data.shape[0])
        ts = _frame_times(series, n, path)
        edges = _bin_edges(ts)
        frame_rate = float(1.0 / np.median(np.diff(ts)))
        units = nwb.units
        if units is None or len(units) == 0:
            raise DatasetImportError(
                f"{path}: units: missing or empty (expected spike_times per unit)"
            )
        if "spike_times" not in units.colnames:
            raise DatasetImportError(f"{path}: units: column 'spike_times' missing")
        keep = select_cells(len(units), options.cells, f"{path}: units")
        spikes: list[NDArray[np.float64]] = []
        for c in keep:
            st = np.asarray(units["spike_times"][c], dtype=np.float64)
            if st.ndim != 1 or not np.all(np.isfinite(st)):
                raise DatasetImportError(
                    f"{path}: units row {c}: spike_times must be finite seconds"
                )
            spikes.append(np.sort(st))
        pixel = options.pixel_size_deg
        if pixel is None:
            m = _PIXEL_RE.search(series.description or "")
            pixel = float(m.group(1)) if m else None
        if pixel is None or not (math.isfinite(pixel) and pixel > 0):
            raise DatasetImportError(
                f"{path}: ImageSeries {series.name}: pixel size unknown; give --pixel-size-deg"
            )
        rows = _trial_rows(nwb, ts, path)
        repeat_ranges = [(a, b) for kind, a, b in rows or [] if kind == "repeat"]
        if len({b - a for a, b in repeat_ranges}) > 1:
            raise DatasetImportError(
                f"{path}: trials: repeat rows cover different numbers of frames "
                f"({sorted({b - a for a, b in repeat_ranges})}); a repeat must show one clip"
            )
        main = np.ones(n, dtype=bool)
        for a, b in repeat_ranges:
            main[a:b] = False
        main_before = np.concatenate([[0], np.cumsum(main)])  # main frames before index i
        n_main = int(main_before[-1])
        splits: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}
        if rows is None:
            n_hold = round(n_main * options.val_fraction)
            if n_hold < 1 or 2 * n_hold >= n_main:
                raise DatasetImportError(f"{path}: {n_main} frames are too few to split")
            splits["train"].append((0, n_main - 2 * n_hold))
            splits["val"].append((n_main - 2 * n_hold, n_main - n_hold))
            splits["test"].append((n_main - n_hold, n_main))
        else:
            for kind, a, b in rows:
                if kind != "repeat" and main_before[b] > main_before[a]:
                    splits[kind].append((int(main_before[a]), int(main_before[b])))
        mapping = stimulus_mapping(
            [(f"{path}: ImageSeries {series.name}", data)], options.chunk_frames
        )
        ids = _column(units, "cell_id", len(units))
        types = _column(units, "cell_type", len(units))
        cx, cy = (
            _column(units, "center_x_deg", len(units)),
            _column(units, "center_y_deg", len(units)),
        )
        unit_ids = list(units.id[:])
        cells = CellInfo(
            ids=tuple(str(ids[c]) if ids else str(unit_ids[c]) for c in keep),
            types=tuple(str(types[c]) if types and str(types[c]) else "unknown" for c in keep),
            center_deg=np.array(
                [[cx[c], cy[c]] if cx and cy else [np.nan, np.nan] for c in keep], dtype=np.float32
            ),
        )
        prov = Provenance(
            format="nwb",
            sources=[SourceFile.of(path)],
            fields={
                "/stimulus": f"ImageSeries {series.name} data (non-repeat frames); {mapping.describe()}",
                "/responses": "units.spike_times binned on [t_i, t_{i+1}) of the series' timestamps",
                "frame_rate_hz": "1 / median interval of the series' timestamps",
                "/splits": f"trials.{SPLIT_COLUMN}"
                if rows is not None
                else "last 2 x val_fraction",
                "/repeats": f"trials rows with {SPLIT_COLUMN}=repeat",
                "cells": "units.cell_id, cell_type, center_x_deg, center_y_deg (when present)",
            },
        )
        h, w = int(data.shape[1]), int(data.shape[2])
        with RecordingStreamWriter(
            out,
            (h, w),
            mapping.dtype,
            len(keep),
            frame_rate,
            pixel,
            source=f"nwb: {path.name}",
            provenance=prov,
            session=options.session or str(nwb.identifier or path.stem),
        ) as writer:
            for a in range(0, n, options.chunk_frames):
                b = min(n, a + options.chunk_frames)
                counts = np.stack([bin_spikes(s, edges[a : b + 1]) for s in spikes], axis=1)
                if counts.max(initial=0) > np.iinfo(np.uint16).max:
                    raise DatasetImportError(f"{path}: units: more than 65535 spikes in one frame")
                sel = main[a:b]
                writer.append(
                    mapping.apply(np.asarray(data[a:b])[sel]), counts[sel].astype(np.uint16)
                )
                progress("frames", b, n)
            writer.set_splits(splits)
            writer.set_cells(cells)
            if repeat_ranges:
                a0, b0 = repeat_ranges[0]
                resp = np.stack(
                    [
                        np.stack([bin_spikes(s, edges[a : b + 1]) for s in spikes], axis=1)
                        for a, b in repeat_ranges
                    ]
                ).astype(np.uint16)
                writer.set_repeats(
                    Repeats(stimulus=mapping.apply(np.asarray(data[a0:b0])), responses=resp)
                )
            progress("validating", 0, 0)
            return writer.commit(options.chunk_frames)


def _spike_times(
    counts: NDArray[np.uint16], t0: NDArray[np.float64], dt: float
) -> NDArray[np.float64]:
    """k spikes of frame i at t_i + dt (j + 0.5) / k, j = 0..k-1: inside [t_i, t_i + dt)."""
    k = counts.astype(np.int64)
    frame = np.repeat(np.arange(k.size), k)
    first = np.concatenate([[0], np.cumsum(k)[:-1]])
    j = np.arange(frame.size) - first[frame]
    return t0[frame] + dt * (j + 0.5) / k[frame]


def export_nwb(recording_path: Path, out: Path, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> Path:
    """Write a recording as NWB (stimulus ImageSeries, Units, trials) for sharing on DANDI.

    The recording is checked against v1 first (streamed), and its frames are streamed into
    the NWB file in chunks; each unit's spike times are built from one column of counts.
    """
    import h5py
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from hdmf.data_utils import DataChunkIterator
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.image import ImageSeries

    if not recording_path.is_file():
        raise RecordingFormatError(f"{recording_path}: no such file")
    try:
        validate_recording_file(recording_path, chunk_frames)
    except OSError as exc:
        raise RecordingFormatError(f"{recording_path}: not a readable HDF5 file ({exc})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.part{out.suffix}")
    with h5py.File(recording_path, "r") as f:
        stim, resp = f["stimulus"], f["responses"]
        n_main, n_cells = int(resp.shape[0]), int(resp.shape[1])
        fr = float(f.attrs["frame_rate_hz"])
        dt = 1.0 / fr
        rep_stim = np.asarray(f["repeats/stimulus"][()]) if "repeats" in f else None
        rep_resp = np.asarray(f["repeats/responses"][()]) if "repeats" in f else None
        n_rep = 0 if rep_stim is None else int(rep_stim.shape[0])
        n_trials = 0 if rep_resp is None else int(rep_resp.shape[0])
        n_total = n_main + n_rep * n_trials
        t = np.arange(n_total, dtype=np.float64) * dt

        def frames() -> Iterator[NDArray[Any]]:
            for a in range(0, n_main, chunk_frames):
                yield from np.asarray(stim[a : a + chunk_frames])
            for _ in range(n_trials):
                assert rep_stim is not None
                yield from rep_stim

        def strings(name: str) -> list[str]:
            return [v.decode() if isinstance(v, bytes) else str(v) for v in f[name][()].tolist()]

        kind = "uint8" if stim.dtype == np.uint8 else "contrast"
        pixel = float(f.attrs["pixel_size_deg"])
        session = f.attrs.get("session", "")
        source = f.attrs.get("source", "")
        nwb = NWBFile(
            session_description=f"npe recording {recording_path.name}: {source}",
            identifier=str(session) or str(uuid.uuid4()),
            session_start_time=datetime.now(UTC),
        )
        iterator = DataChunkIterator(
            data=frames(),
            maxshape=(None, *stim.shape[1:]),
            dtype=stim.dtype,
            buffer_size=chunk_frames,
        )
        nwb.add_stimulus(
            ImageSeries(
                name="stimulus",
                data=H5DataIO(iterator, compression="gzip"),
                unit="n.a.",
                format="raw",
                timestamps=t,
                description=f"npe stimulus ({kind}); pixel_size_deg={pixel!r}",
            )
        )
        ids, types = strings("cells/id"), strings("cells/type")
        centers = np.asarray(f["cells/center_deg"][()], dtype=np.float64)
        nwb.add_unit_column("cell_id", "npe cell id")
        nwb.add_unit_column("cell_type", "cell type or 'unknown'")
        nwb.add_unit_column("center_x_deg", "receptive-field centre x (deg), NaN if unknown")
        nwb.add_unit_column("center_y_deg", "receptive-field centre y (deg), NaN if unknown")
        for c in range(n_cells):
            parts = [np.asarray(resp[:, c])]
            if rep_resp is not None:
                parts.extend(rep_resp[r, :, c] for r in range(n_trials))
            nwb.add_unit(
                spike_times=_spike_times(np.concatenate(parts), t, dt),
                cell_id=ids[c],
                cell_type=types[c],
                center_x_deg=float(centers[c, 0]),
                center_y_deg=float(centers[c, 1]),
            )
        nwb.add_trial_column(
            SPLIT_COLUMN, "train, val, test, or repeat (a presentation of the clip)"
        )
        end = float(t[-1]) + dt
        rows: list[tuple[float, float, str]] = []
        for name, ds in f["splits"].items():
            for a, b in np.asarray(ds[()], dtype=np.int64).tolist():
                rows.append((float(t[a]), float(t[b]) if b < n_total else end, name))
        for r in range(n_trials):
            a = n_main + r * n_rep
            b = a + n_rep
            rows.append((float(t[a]), float(t[b]) if b < n_total else end, "repeat"))
        for start, stop, name in sorted(rows):
            nwb.add_trial(start_time=start, stop_time=stop, **{SPLIT_COLUMN: name})
        try:
            with NWBHDF5IO(str(tmp), "w") as io:
                io.write(nwb)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    return out
