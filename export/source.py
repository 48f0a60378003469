"""What an export needs to know about a trained model, independent of how it was stored.

`ExportSource` gathers the model and the data geometry it was trained on (frame rate, window,
frame size, pixel size, cells) so nothing is guessed at export time; `load_source` builds it
from a checkpoint run directory (`encoder.checkpoint`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.errors import ExportPackageError


class ExportError(ExportPackageError, RuntimeError):
    """An export that cannot proceed or did not verify (the message says which check failed)."""


@dataclass(frozen=True)
class ExportSource:
    """A model ready to export, with its training geometry.

    Attributes:
        model: the torch retina model (eval mode) following the `encoder.models` interface.
        model_name: registry name ("single-cnn", "cnn-lstm", "fullyconv", "streaming", ...).
        frame_rate_hz: bins (frames) per second; model outputs × this = spikes/s.
        window_frames: T, frames of history per window.
        frame_shape: (H, W) input frame size in pixels.
        pixel_size_deg: visual angle of one pixel.
        cell_ids / cell_types: [n_cells] recorded cells (cells-kind outputs).
        cell_centers_deg: [n_cells, 2] (x, y) degrees, NaN if unknown.
        data_path: the training recording, if known (default source of real windows).
        data_sha256: its sha256 as recorded in the checkpoint.
        checkpoint_sha256: sha256 of the checkpoint weights (provenance in the manifest).
        stimulus_kind: stimulus the model was trained on.
        session: the session of a multi-session checkpoint whose cells this is ("" for a
            single-session checkpoint, and for the session-independent rate maps of a
            multi-session one exported without a session).
        sessions: every session of a multi-session checkpoint (() for a single-session one).
    """

    model: Any
    model_name: str
    frame_rate_hz: float
    window_frames: int
    frame_shape: tuple[int, int]
    pixel_size_deg: float
    cell_ids: tuple[str, ...]
    cell_types: tuple[str, ...]
    cell_centers_deg: NDArray[np.float64]
    data_path: Path | None = None
    data_sha256: str = ""
    checkpoint_sha256: str = ""
    stimulus_kind: str = ""
    session: str = ""
    sessions: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.cell_ids)
        if len(self.cell_types) != n or np.asarray(self.cell_centers_deg).shape != (n, 2):
            raise ExportError(
                f"checkpoint cells: {n} ids, {len(self.cell_types)} types, centres of shape "
                f"{list(np.asarray(self.cell_centers_deg).shape)}; expected [n] [n] [n, 2]"
            )
        if not (self.frame_rate_hz > 0 and self.window_frames > 0 and self.pixel_size_deg > 0):
            raise ExportError(
                "checkpoint geometry: frame_rate_hz, window_frames and pixel_size_deg must be "
                f"positive, got {self.frame_rate_hz}, {self.window_frames}, {self.pixel_size_deg}"
            )

    @property
    def is_stateful(self) -> bool:
        return bool(getattr(self.model, "stateful", False))

    @property
    def is_ratemap(self) -> bool:
        return bool(getattr(self.model, "ratemap", False))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _get(meta: Any, *names: str, default: Any = None) -> Any:
    """First attribute of `meta` among `names` (the checkpoint meta's field names)."""
    for name in names:
        if hasattr(meta, name):
            return getattr(meta, name)
    return default


def _session_to_load(run_dir: Path, session: str | None) -> tuple[str | None, tuple[str, ...]]:
    """(session to load, all sessions) of `run_dir`; refuses a multi-session checkpoint
    without a session unless its model is a rate-map model.

    Why rate maps need no session: their maps are computed by the shared core and describe
    cell types, not any session's cells, so every session's view exports the same maps.
    """
    from encoder.checkpoint import MultiSessionMeta, read_any_meta
    from encoder.models import get_spec

    meta = read_any_meta(run_dir)
    if not isinstance(meta, MultiSessionMeta):
        return session, ()
    names = meta.session_names
    if session is not None:
        meta.session(session)  # refuses an unknown name, listing the sessions
        return session, names
    if get_spec(meta.model_name).model_cls.ratemap:
        return names[0], names
    raise ExportError(
        f"{run_dir}: a multi-session checkpoint (sessions {', '.join(names)}); choose whose "
        "cells to export with --session NAME"
    )


def load_source(run_dir: Path, session: str | None = None) -> ExportSource:
    """Load a checkpoint run directory (model.safetensors + checkpoint.json) for export.

    A multi-session checkpoint exports one session's cells (`session`, via its
    single-session view); a rate-map model's maps need no session.
    """
    from encoder.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such checkpoint run directory")
    try:
        chosen, sessions = _session_to_load(run_dir, session)
        loaded = load_checkpoint(run_dir, chosen)
    except ExportError:
        raise
    except Exception as exc:  # the checkpoint loader's own errors name the problem
        raise ExportError(f"{run_dir}: cannot load checkpoint ({exc})") from exc
    meta = loaded.meta
    model = loaded.model.eval()
    cells = _get(meta, "cells")
    ids = tuple(str(v) for v in _get(cells, "ids", default=()))
    types = tuple(str(v) for v in _get(cells, "types", default=()))
    raw_centers = _get(cells, "center_deg", "centers_deg", default=())
    centers = np.array(
        [[np.nan if v is None else float(v) for v in xy] for xy in raw_centers], dtype=np.float64
    ).reshape(len(ids), 2)
    data_path = _get(meta, "training_data_path", "data_path")
    weights = run_dir / "model.safetensors"
    shape = tuple(int(v) for v in _get(meta, "frame_shape"))
    return ExportSource(
        model=model,
        model_name=str(_get(meta, "model_name", "model", "name")),
        frame_rate_hz=float(_get(meta, "frame_rate_hz")),
        window_frames=int(_get(meta, "window_frames")),
        frame_shape=(shape[0], shape[1]),
        pixel_size_deg=float(_get(meta, "pixel_size_deg")),
        cell_ids=ids,
        cell_types=types,
        cell_centers_deg=centers,
        data_path=Path(data_path) if data_path else None,
        data_sha256=str(_get(meta, "training_data_sha256", "data_sha256", default="") or ""),
        checkpoint_sha256=_sha256(weights) if weights.is_file() else "",
        stimulus_kind=str(_get(meta, "stimulus_kind", "stimulus", default="") or ""),
        session=session or "",
        sessions=sessions,
    )
