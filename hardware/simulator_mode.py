"""Where a simulated stimulator runs (a light module: CLIs declare the option at import time)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["SimulatorMode"]


class SimulatorMode(StrEnum):
    """Where the simulated stimulator runs when no real link is given.

    PROCESS: its own, niced process (what a stimulator's own hardware looks like to the runtime,
    and what `npe bench` measures). THREAD: in the caller's process (competes for the GIL).
    """

    PROCESS = "process"
    THREAD = "thread"
