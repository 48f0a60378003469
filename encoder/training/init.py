"""Weights before the first step: from the data (STA locations, mean rates) or another run.

Moved unchanged from the former 240-line `encoder.train.train`; see each function for why.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from encoder.checkpoint import load_checkpoint
from encoder.models import RetinaModel
from encoder.models.base import RateMapMixin
from encoder.models.ln import spike_triggered_average
from encoder.recording import stimulus_as_contrast
from encoder.training.config import TrainError
from encoder.training.data import RecordingLike


def init_selector_from_sta(
    model: RetinaModel, recording: RecordingLike, cells: NDArray[np.int64], max_frames: int = 20000
) -> None:
    """Start each cell's map location at its STA peak (fast, convention-free convergence).

    For rate-map models (the selector's location and type) and for models with a per-cell
    spatial readout (`init_cell_locations(ys_px, xs_px)`, the map-readout CNN-LSTM).
    """
    locate = getattr(model, "init_cell_locations", None)
    if not isinstance(model, RateMapMixin) and not callable(locate):
        return
    ranges = recording.splits["train"]
    kept, total = [], 0
    for a, b in ranges.tolist():
        if total >= max_frames:
            break
        b = min(b, a + max_frames - total)
        kept.append((a, b))
        total += b - a
    lo = min(a for a, _ in kept)
    hi = max(b for _, b in kept)
    stim_c = stimulus_as_contrast(recording.stimulus[lo:hi])
    rel = np.asarray([(a - lo, b - lo) for a, b in kept], dtype=np.int64)
    sta = spike_triggered_average(
        stim_c, recording.responses[lo:hi][:, cells], rel, model.window_frames
    )
    energy = (sta**2).sum((2, 3))
    lag = energy.argmax(1)
    spatial = sta[np.arange(sta.shape[0]), lag]  # [C, H, W]
    flat = np.abs(spatial.reshape(spatial.shape[0], -1)).argmax(1)
    ys, xs = np.unravel_index(flat, spatial.shape[1:])
    if not isinstance(model, RateMapMixin):
        assert callable(locate)
        locate(ys.astype(np.float64), xs.astype(np.float64))
        return
    s = float(getattr(model.config, "map_stride", 1))
    model.selector.init_locations(ys / s, xs / s, sigma=1.5)
    types = [recording.cells.types[c] for c in cells]
    distinct = list(dict.fromkeys(types))
    if distinct != ["unknown"] and len(distinct) <= int(getattr(model.config, "n_types", 0)):
        model.selector.init_types(np.asarray([distinct.index(t) for t in types], dtype=np.int64))


def init_output_from_mean(
    model: RetinaModel, recording: RecordingLike, cells: NDArray[np.int64]
) -> None:
    """Start the output at each cell's mean training count, for models that offer it.

    Models with an `init_output_bias(mean_counts [n_cells])` method (the CNN-LSTM) set their
    readout bias from it: starting far from the mean rate gave the CNN-LSTM a large, same-sign
    gradient that saturated its LSTM gates before it learned anything.
    """
    init = getattr(model, "init_output_bias", None)
    if not callable(init):
        return
    ranges = recording.splits["train"].reshape(-1, 2).tolist()
    total = sum(recording.responses[a:b][:, cells].astype(np.float64).sum(0) for a, b in ranges)
    n = sum(b - a for a, b in ranges)
    if n > 0:
        init(np.asarray(total, dtype=np.float64) / n)


def apply_init_from(model: RetinaModel, init_from: str, freeze: str) -> None:
    """Copy matching weights from another run; freeze the core if asked (transfer learning)."""
    source = load_checkpoint(init_from)
    if source.meta.model_name != model.name:
        raise TrainError(
            f"--init-from {init_from}: holds model {source.meta.model_name!r}, "
            f"this run trains {model.name!r}"
        )
    src = source.model.state_dict()
    own = model.state_dict()
    copied = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    core_names = {
        f"{mod_name}.{p}"
        for mod_name, mod in model.named_modules()
        if any(mod is m for m in model.core_modules())
        for p, _ in mod.named_parameters()
    }
    missing_core = sorted(core_names - set(copied))
    if freeze == "core" and missing_core:
        raise TrainError(
            f"--init-from {init_from}: core weights {missing_core[:3]} do not match this model "
            "(different window or config); cannot freeze them"
        )
    own.update(copied)
    model.load_state_dict(own)
    if freeze == "core":
        for mod in model.core_modules():
            for p in mod.parameters():
                p.requires_grad_(False)


def label_types(model: RetinaModel, cell_types: list[str]) -> None:
    """Name each rate map after the cell types assigned to it (rate-map models only)."""
    if isinstance(model, RateMapMixin):
        labels = model.label_types_from_cells(cell_types)
        model.config = model.config.model_copy(update={"type_labels": tuple(labels)})
