"""A test-only stand-in for `encoder.models.multisession` (being built on another branch).

It implements the agreed interface, and nothing more, so the multi-session *data side* of the
trainer can be tested before the real model lands: one registered model over all sessions'
cells is the shared core, and each session's readout is its slice of the outputs. Tests install
it with `install(monkeypatch)`, which puts it in `sys.modules` as
`encoder.models.multisession`; once the real module is merged, drop the `install` calls.

    class MultiSessionModel(RetinaModel):
        sessions: tuple[str, ...]; n_cells_per_session: dict[str, int]
        def forward(self, x, session) / forward_chunk(self, x, session) / penalty(self)
        def session_model(self, session) -> RetinaModel
    def build_multisession_model(name, config, *, frame_shape, frame_rate_hz, cells_per_session)
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from torch import Tensor

from encoder.models import RetinaModel, build_model


class SessionView(RetinaModel):
    """One session's cells of the shared model (shares every parameter with it)."""

    def __init__(self, base: RetinaModel, start: int, stop: int) -> None:
        super().__init__(base.config, stop - start, base.frame_shape, base.frame_rate_hz)
        self.name = base.name  # type: ignore[misc]
        self.base = base
        self._slice = slice(start, stop)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x)[:, self._slice]

    def forward_chunk(self, x: Tensor) -> Tensor:
        return self.base.forward_chunk(x)[..., self._slice]

    def penalty(self) -> Tensor:
        return self.base.penalty()


class MultiSessionModel(RetinaModel):
    """Shared core + one readout per session, as the agreed interface describes."""

    name = "multisession-standin"

    def __init__(self, base: RetinaModel, cells_per_session: dict[str, int]) -> None:
        super().__init__(base.config, base.n_cells, base.frame_shape, base.frame_rate_hz)
        self.base = base
        self.sessions = tuple(cells_per_session)
        self.n_cells_per_session = dict(cells_per_session)
        self._slices: dict[str, slice] = {}
        start = 0
        for name, n in cells_per_session.items():
            self._slices[name] = slice(start, start + n)
            start += n

    def forward(self, x: Tensor, session: str) -> Tensor:  # type: ignore[override]
        return self.base(x)[:, self._slices[session]]

    def forward_chunk(self, x: Tensor, session: str) -> Tensor:  # type: ignore[override]
        return self.base.forward_chunk(x)[..., self._slices[session]]

    def penalty(self) -> Tensor:
        return self.base.penalty()

    def session_model(self, session: str) -> RetinaModel:
        sl = self._slices[session]
        return SessionView(self.base, sl.start, sl.stop)


def build_multisession_model(
    name: str,
    config: dict[str, Any],
    *,
    frame_shape: tuple[int, int],
    frame_rate_hz: float,
    cells_per_session: dict[str, int],
) -> MultiSessionModel:
    base = build_model(name, config, sum(cells_per_session.values()), frame_shape, frame_rate_hz)
    return MultiSessionModel(base, cells_per_session)


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import encoder.models.multisession` find this stand-in (for one test)."""
    module = types.ModuleType("encoder.models.multisession")
    module.MultiSessionModel = MultiSessionModel  # type: ignore[attr-defined]
    module.build_multisession_model = build_multisession_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "encoder.models.multisession", module)
