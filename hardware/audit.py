"""The append-only audit log of frames and safety events (crash-safe framed records).

(Skeleton: final signatures; implementation follows.)
"""

from __future__ import annotations

from pathlib import Path

from hardware.types import StimulationFrame


class AuditLog:
    def __init__(self, path: str | Path) -> None:
        raise NotImplementedError

    def frame(self, frame: StimulationFrame) -> None:
        raise NotImplementedError

    def event(self, kind: str, detail: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def inspect_log(path: str | Path) -> object:
    raise NotImplementedError
