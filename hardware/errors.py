"""The root of every expected error raised by `hardware` (see npe_errors for the whole tree)."""

from __future__ import annotations

from npe_errors import NpeError

__all__ = ["HardwareError"]


class HardwareError(NpeError):
    """An array, calibration, limits file, key, link or audit log that cannot be used."""
