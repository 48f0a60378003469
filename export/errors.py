"""The root of every expected error raised by `export` (see npe_errors for the whole tree)."""

from __future__ import annotations

from npe_errors import NpeError

__all__ = ["ExportPackageError"]


class ExportPackageError(NpeError):
    """A checkpoint that cannot be exported or a bundle that cannot be written."""
