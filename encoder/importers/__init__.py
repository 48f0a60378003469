"""Importers of the field's public recordings into the npe recording format (torch-free).

One module per source format (`deep_retina`, `goldin2022`, `nwb`), a shared base with the
chunked writer and streaming validation, and `import_dataset`, the function the CLI calls.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from encoder.importers.base import (
    DatasetImportError,
    ImportOptions,
    Progress,
    no_progress,
)
from encoder.importers.deep_retina import import_deep_retina
from encoder.importers.goldin2022 import import_goldin2022
from encoder.importers.nwb import export_nwb, import_nwb

Importer = Callable[[list[Path], Path, ImportOptions, Progress], Path]

FORMATS: dict[str, Importer] = {
    "deep-retina": import_deep_retina,
    "goldin2022": import_goldin2022,
    "nwb": import_nwb,
}

__all__ = [
    "FORMATS",
    "DatasetImportError",
    "ImportOptions",
    "export_nwb",
    "fill_centers_from_sta",
    "import_dataset",
]


def fill_centers_from_sta(path: Path, window_ms: float = 250.0) -> int:
    """Write the STA's centre for every cell whose centre is NaN; return how many were filled.

    Reads the whole recording (the STA needs every frame), so memory is the file's size.
    """
    from encoder.recording import read_recording
    from encoder.sta import compute_sta
    from encoder.windows import window_frames_for

    rec = read_recording(path)
    unknown = np.isnan(rec.cells.center_deg).any(axis=1)
    if not unknown.any():
        return 0
    result = compute_sta(rec, window_frames_for(rec.frame_rate_hz, window_ms))
    centers = rec.cells.center_deg.copy()
    centers[unknown] = result.center_deg[unknown].astype(np.float32)
    with h5py.File(path, "r+") as f:
        f["cells/center_deg"][...] = centers
    return int(np.isfinite(centers[unknown]).all(axis=1).sum())


def import_dataset(
    fmt: str,
    sources: list[Path],
    out: Path,
    options: ImportOptions,
    progress: Progress = no_progress,
) -> Path:
    """Import `sources` of format `fmt` into the recording `out` (validated against v1)."""
    if fmt not in FORMATS:
        raise DatasetImportError(f"FORMAT {fmt!r}: expected one of {', '.join(FORMATS)}")
    path = FORMATS[fmt](sources, out, options, progress)
    if options.centers_from_sta:
        progress("STA centres", 0, 0)
        fill_centers_from_sta(path)
    return path
