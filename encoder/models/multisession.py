"""Several sessions (retinas with different cells): one shared core, one readout per session.

openretina's layout (REFERENCES): the core learns the retina's feature extraction from every
recording at once; each session's readout learns where its own cells sit and how they scale.
`session_model(name)` is an ordinary single-session model made of the shared core and that
session's readout (parameters shared, not copied), so it exports, evaluates and steps like any
model of its kind.

All sessions share one frame rate and one frame shape: the core's temporal and spatial
kernels are in frames and pixels (`common_geometry` refuses recordings that differ; resampling
is out of scope).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor, nn

from encoder.models.base import ModelConfig, ModelConfigError, RetinaModel
from encoder.models.config import check_geometry, sum_penalties
from encoder.models.core import Core
from encoder.models.readout import Readout
from encoder.models.registry import get_spec, make_config

#: Session names are module keys and CLI values: letters, digits, '_', '-' (no '.').
SESSION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_session_name(name: str) -> str:
    """`name` if it can name a session, else a refusal saying what is allowed."""
    if not SESSION_NAME.match(name):
        raise ModelConfigError(
            f"session name {name!r}: use 1–64 letters, digits, '_' or '-' (no '.' or spaces)"
        )
    return name


def common_geometry(
    sessions: Mapping[str, tuple[tuple[int, int], float]],
) -> tuple[tuple[int, int], float]:
    """The (frame_shape, frame_rate_hz) all sessions share, or one line naming who differs.

    sessions: name → ((height, width), frame_rate_hz) of its recording.
    """
    if not sessions:
        raise ModelConfigError("a multi-session model needs at least one session")
    items = list(sessions.items())
    first_name, (shape0, rate0) = items[0]
    for name, (shape, rate) in items[1:]:
        if tuple(shape) != tuple(shape0) or abs(rate - rate0) > 1e-9 * rate0:
            raise ModelConfigError(
                f"sessions {first_name!r} ({shape0[0]}×{shape0[1]} px at {rate0:g} Hz) and "
                f"{name!r} ({shape[0]}×{shape[1]} px at {rate:g} Hz) differ: all sessions "
                "must share frame rate and frame shape (resampling is not supported)"
            )
    return (int(shape0[0]), int(shape0[1])), float(rate0)


class MultiSessionModel(RetinaModel):
    """One shared core + `readouts[session]`: `forward(x, session) -> [B, n_cells(session)]`.

    Not exportable itself (its output size depends on the session); `session_model(name)` is.
    `n_cells` is the total over sessions; `model_name` the registered model it is made of.
    """

    name = "multi-session"

    def __init__(
        self,
        model_name: str,
        config: ModelConfig,
        core: Core,
        readouts: Mapping[str, Readout],
    ) -> None:
        nn.Module.__init__(self)
        if not readouts:
            raise ModelConfigError("a multi-session model needs at least one session")
        for session, readout in readouts.items():
            check_session_name(session)
            if readout.feature_shape != core.feature_shape:
                raise ModelConfigError(
                    f"session {session!r}: readout reads features of "
                    f"{list(readout.feature_shape)}, the core makes {list(core.feature_shape)}"
                )
        self.model_name = model_name
        self.model_cls = get_spec(model_name).model_cls
        self.default_loss_name = get_spec(model_name).default_loss
        self.core = core
        self.readouts = nn.ModuleDict(dict(readouts))
        self.config = config
        self.sessions: tuple[str, ...] = tuple(readouts)
        self.n_cells_per_session: dict[str, int] = {s: r.n_cells for s, r in readouts.items()}
        self.n_cells = sum(self.n_cells_per_session.values())
        self.frame_shape = core.frame_shape
        self.frame_rate_hz = core.frame_rate_hz
        self.window_frames = core.window_frames

    def readout_of(self, session: str) -> Readout:
        """The readout of `session`, or a refusal listing the sessions."""
        if session not in self.n_cells_per_session:
            raise ModelConfigError(
                f"unknown session {session!r}; this model has {', '.join(self.sessions)}"
            )
        readout = self.readouts[session]
        assert isinstance(readout, Readout)
        return readout

    def _prepare(self, session: str) -> Readout:
        """The session's readout; in training, forget the other readouts' recorded terms.

        Why: `penalty()` sums core and every readout, and a readout not run by this forward
        would otherwise contribute terms whose graph an earlier backward already freed.
        """
        readout = self.readout_of(session)
        if self.training:
            for name in self.sessions:
                if name != session:
                    self.readout_of(name).clear_penalty()
        return readout

    def forward(self, x: Tensor, session: str) -> Tensor:  # type: ignore[override]
        """x: [B, T, H, W] contrast → [B, n_cells(session)] expected counts in the newest bin."""
        readout = self._prepare(session)
        return readout(self.core(x))

    def forward_chunk(self, x: Tensor, session: str) -> Tensor:  # type: ignore[override]
        """x: [B, L, H, W] → [B, L − T + 1, n_cells(session)] (like `RetinaModel.forward_chunk`)."""
        readout = self._prepare(session)
        return readout.forward_chunk(self.core.forward_chunk(x))

    def penalty(self) -> Tensor:
        """Core's terms plus every readout's, from the latest training forward (0 if none)."""
        return sum_penalties(
            [self.core.penalty(), *(self.readout_of(s).penalty() for s in self.sessions)]
        )

    def session_model(self, session: str) -> RetinaModel:
        """`session`'s single-session model: the shared core + its readout (no copies).

        Changing its weights changes this model's; `eval()`/`train()` on it set the shared
        core's mode too.
        """
        return self.model_cls.compose(self.core, self.readout_of(session), self.config)

    def init_output_bias(self, mean_counts: NDArray[np.floating], session: str) -> None:
        """Start `session`'s readout at its cells' mean counts (`Readout.init_output_bias`)."""
        self.readout_of(session).init_output_bias(mean_counts)

    def first_layer_filters(self) -> Tensor:
        return self.session_model(self.sessions[0]).first_layer_filters()


def build_multisession_model(
    name: str,
    config: ModelConfig | dict[str, Any] | None,
    *,
    frame_shape: tuple[int, int],
    frame_rate_hz: float,
    cells_per_session: dict[str, int],
) -> MultiSessionModel:
    """Model `name` with one shared core and a readout of `cells_per_session[s]` cells per session.

    Sessions keep the dict's order (the training order). The initialisation is the model's
    own: core and readouts are built, then their `reset_parameters` applied.
    """
    spec = get_spec(name)
    cfg = make_config(name, config)
    check_geometry(frame_shape, frame_rate_hz)
    if not cells_per_session:
        raise ModelConfigError(f"{name}: a multi-session model needs at least one session")
    for session, n in cells_per_session.items():
        check_session_name(session)
        if n < 1:
            raise ModelConfigError(f"session {session!r}: n_cells must be ≥ 1, got {n}")
    core = spec.model_cls.build_core(cfg, tuple(frame_shape), frame_rate_hz)  # type: ignore[arg-type]
    readouts = {s: spec.model_cls.build_readout(core, n) for s, n in cells_per_session.items()}
    core.reset_parameters()
    for readout in readouts.values():
        readout.reset_parameters()
    return MultiSessionModel(name, cfg, core, readouts)
