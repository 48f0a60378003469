"""The root of every expected error raised by `encoder` (see npe_errors for the whole tree)."""

from __future__ import annotations

from npe_errors import NpeError

__all__ = ["EncoderError"]


class EncoderError(NpeError):
    """Bad recordings, model configurations, checkpoints, training or evaluation input."""
