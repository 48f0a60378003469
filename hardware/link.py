"""Transports that carry wire frames to a stimulator: UDP loopback, serial, file sink.

(Skeleton: final signatures; implementation follows.)
"""

from __future__ import annotations

from hardware.types import StimulationFrame

DEFAULT_PORT = 9750


class LinkError(OSError):
    """A link that cannot be opened or written."""


class StimulatorLink:
    """Sends authenticated wire frames over one transport."""

    def send(self, frame: StimulationFrame) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def open_link(spec: str, key: bytes) -> StimulatorLink:
    """`udp://127.0.0.1:PORT`, `serial:///dev/ttyX` (or a pyserial URL), `file:///path`."""
    raise NotImplementedError
