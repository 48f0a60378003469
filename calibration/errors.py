"""The root of every expected error raised by `calibration` (see npe_errors for the whole tree)."""

from __future__ import annotations

from npe_errors import NpeError

__all__ = ["CalibrationPackageError"]


class CalibrationPackageError(NpeError):
    """A calibration session, procedure or frame set that cannot be used."""
