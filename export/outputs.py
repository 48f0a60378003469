"""The bundle's output description: which rate sits where in the visual field.

Cells-kind models output one rate per recorded cell (id, type, receptive-field centre from the
checkpoint). Rate-map models output [1, n_types, H', W'] maps; each entry becomes one output
with the map pixel's centre converted to degrees (x right, y up from the field centre, the
recording's convention) and the polarity of its type, flattened in C order (type, row, col).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from encoder.models.base import polarity_of
from export.source import ExportError, ExportSource
from runtime.bundle import OutputSpec, RateMapGrid


def px_to_deg(
    xs_px: Any, ys_px: Any, frame_shape: tuple[int, int], pixel_size_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Input-pixel index coordinates (pixel k's centre is k) → degrees from the field centre.

    x_deg = (x − (W − 1)/2)·s, y_deg = −(y − (H − 1)/2)·s (image rows grow downwards, y up).
    """
    h, w = frame_shape
    x = (np.asarray(xs_px, dtype=np.float64) - (w - 1) / 2.0) * pixel_size_deg
    y = -(np.asarray(ys_px, dtype=np.float64) - (h - 1) / 2.0) * pixel_size_deg
    return x, y


def _finite_or_none(v: Any) -> float | None:
    f = float(v)
    return f if np.isfinite(f) else None


def cells_output(source: ExportSource, n_out: int) -> OutputSpec:
    """One entry per recorded cell, in the model's output order."""
    if n_out != len(source.cell_ids):
        raise ExportError(
            f"model outputs {n_out} rates but the checkpoint lists {len(source.cell_ids)} cells"
        )
    return OutputSpec(
        n=n_out,
        ids=source.cell_ids,
        types=source.cell_types,
        polarity=tuple(polarity_of(t) for t in source.cell_types),
        positions_deg=tuple(
            (_finite_or_none(x), _finite_or_none(y)) for x, y in np.asarray(source.cell_centers_deg)
        ),
    )


def ratemap_output(source: ExportSource, map_shape: tuple[int, ...]) -> OutputSpec:
    """map_shape: [1, K, H', W'] of the exported rate output → K·H'·W' entries with positions."""
    model = source.model
    if len(map_shape) != 4 or map_shape[0] != 1:
        raise ExportError(f"rate-map output has shape {list(map_shape)}, expected [1, K, H', W']")
    _, k, hh, ww = map_shape
    ys_px, xs_px = model.map_grid(*source.frame_shape)
    labels = [str(v) for v in model.type_labels()]
    pol = [int(v) for v in model.type_polarity()]
    if (len(ys_px), len(xs_px), len(labels), len(pol)) != (hh, ww, k, k):
        raise ExportError(
            f"map_grid/type_labels give {len(labels)} types on {len(ys_px)}x{len(xs_px)}, "
            f"but the rate map is {k}x{hh}x{ww}"
        )
    xs_deg, ys_deg = px_to_deg(xs_px, ys_px, source.frame_shape, source.pixel_size_deg)
    ids, types, polarity, positions = [], [], [], []
    for t, label in enumerate(labels):
        for i, y in enumerate(ys_deg):
            for j, x in enumerate(xs_deg):
                ids.append(f"{label}@r{i}c{j}")
                types.append(label)
                polarity.append(pol[t])
                positions.append((float(x), float(y)))
    return OutputSpec(
        n=k * hh * ww,
        ids=tuple(ids),
        types=tuple(types),
        polarity=tuple(polarity),
        positions_deg=tuple(positions),
        grid=RateMapGrid(
            type_labels=tuple(labels),
            ys_deg=tuple(float(v) for v in ys_deg),
            xs_deg=tuple(float(v) for v in xs_deg),
        ),
    )
