"""Step bundles of larger models for `npe bench --scale` (issue 17): does a bigger retina model
still fit a 10 ms bin beside mapping + safety for 1,024 electrodes?

Why here: building a bundle needs torch and the encoder's models, which the runtime may not
import; `npe_cli` plugs `build_scale_bundles` into `npe bench --scale` (as it plugs in the
PyTorch-eager timer), and `benchmarks/mapping/scale.py` calls it directly.

The models are built with untrained (seeded) weights and exported through the normal
`export_bundle` path, verification included: a step's cost depends on the graph and its
shapes, not on the weights' values. Rows (beside the shipped `streaming`, 32×32 px → 2,048
rates, 15,648 parameters):

* `streaming` larger: 64×64 px and twice the channels (16/16/24/24) → 8,192 rates;
* `cnn-lstm`: YADLRetina's population CNN-LSTM in its dense layout (8/12 filters, hidden 150,
  ~1.5 M parameters; `cnn-lstm`'s default until 2026-12-04, pinned here so the scaling
  table's largest model stays the same) on 32×32 px, 64 cells spread over the field, in step
  form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.exporter import ExportOptions, export_bundle
from export.source import ExportSource

FRAME_RATE_HZ = 100.0
PIXEL_SIZE_DEG = 0.25
WINDOW_MS = 250.0


@dataclass(frozen=True)
class ScaleModel:
    """One model to build: registry name, config, input size and (cells models) cells."""

    label: str
    name: str
    frame_shape: tuple[int, int]
    config: dict[str, Any] = field(default_factory=dict)
    n_cells: int = 0  # 0: a rate-map model (its output is its type maps)


SCALE_MODELS: tuple[ScaleModel, ...] = (
    ScaleModel(
        "streaming, 64×64 px, 2× channels",
        "streaming",
        (64, 64),
        {"spatial1": 16, "channels1": 16, "spatial2": 24, "channels2": 24},
    ),
    ScaleModel(
        "cnn-lstm (YADLRetina dense layout)",
        "cnn-lstm",
        (32, 32),
        {"readout": "dense", "padding": "valid", "pool": 1},
        n_cells=64,
    ),
)


def _source(m: ScaleModel, seed: int) -> ExportSource:
    import torch

    from encoder.models import build_model

    torch.manual_seed(seed)
    n_cells = m.n_cells
    config = {**m.config, "window_ms": WINDOW_MS}
    model = build_model(m.name, config, max(n_cells, 1), m.frame_shape, FRAME_RATE_HZ).eval()
    rng = np.random.default_rng(seed)
    half = np.array(m.frame_shape[::-1], dtype=np.float64) * PIXEL_SIZE_DEG / 2
    return ExportSource(
        model=model,
        model_name=m.name,
        frame_rate_hz=FRAME_RATE_HZ,
        window_frames=round(WINDOW_MS * FRAME_RATE_HZ / 1000.0),
        frame_shape=m.frame_shape,
        pixel_size_deg=PIXEL_SIZE_DEG,
        cell_ids=tuple(f"c{i}" for i in range(n_cells)),
        cell_types=tuple("ON" if i % 2 == 0 else "OFF" for i in range(n_cells)),
        cell_centers_deg=rng.uniform(-half, half, (n_cells, 2)),
        stimulus_kind="untrained (npe bench --scale)",
    )


def build_scale_bundles(
    out_dir: Path,
    models: tuple[ScaleModel, ...] = SCALE_MODELS,
    progress: Callable[[str], None] = lambda s: None,
    seed: int = 0,
) -> list[tuple[str, Path]]:
    """Export each model's bundle under `out_dir`; (label, bundle directory) per model."""
    built = []
    for i, m in enumerate(models):
        progress(f"exporting {m.label}")
        path = Path(out_dir) / f"scale-{i}-{m.name}"
        export_bundle(_source(m, seed), path, ExportOptions(overwrite=True, seed=seed))
        built.append((m.label, path))
    return built
