"""The root of every expected error raised by `runtime` (see npe_errors for the whole tree)."""

from __future__ import annotations

from npe_errors import NpeError

__all__ = ["NpeRuntimeError"]


class NpeRuntimeError(NpeError):
    """A bundle, source, frame or device the live path cannot use."""
