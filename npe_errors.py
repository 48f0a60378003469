"""The one error root of npe, its exit codes, and the one way a command reports a failure.

Every expected failure (bad input, a missing file, a refused calibration, a dead link) is an
`NpeError`: each package derives its own root from it (`EncoderError`, `ExportError`,
`NpeRuntimeError`, `HardwareError`, `CalibrationPackageError`) and each module its specific
errors from that, so a CLI catches one class instead of keeping a list. Anything else is a bug
and keeps its traceback.

Messages go to stderr as exactly one line, ``error: …``, written with plain ``sys.stderr`` and
never through rich: rich wraps at the terminal width (80 columns when stderr is a pipe) and reads
``[n_frames, height, width]`` as markup, so what a user or a script saw used to depend on the
terminal and on the length of a path. This module imports nothing from npe and may be imported by
every package (hardware, the leaf, included).
"""

from __future__ import annotations

import sys
from enum import IntEnum
from typing import TextIO

import typer

__all__ = [
    "ExitCode",
    "NpeError",
    "describe",
    "fail",
    "one_line",
    "print_error",
    "print_warning",
]


class NpeError(Exception):
    """Root of every expected npe failure: bad input or a bad environment, not a bug."""


class ExitCode(IntEnum):
    """The one meaning of exit codes across every `npe` command (documented in the README)."""

    OK = 0
    #: A check ran and its verdict is negative (a damaged audit log, a parity that failed).
    CHECK_FAILED = 1
    #: Bad input or usage: a file, flag, device or link that cannot be used. Nothing changed.
    BAD_INPUT = 2
    #: Interrupted by the user (SIGINT) or paused; resumable where the command says so.
    INTERRUPTED = 130


def one_line(message: object) -> str:
    """`message` as one line: line breaks and runs of whitespace become single spaces."""
    return " ".join(str(message).split())


def describe(exc: BaseException) -> str:
    """A one-line description of an exception; its class name when it carries no message."""
    text = one_line(exc)
    return text or type(exc).__name__


def _write(prefix: str, message: object, stream: TextIO | None) -> None:
    out = stream if stream is not None else sys.stderr
    out.write(f"{prefix}: {one_line(message)}\n")
    out.flush()


def print_error(message: object, stream: TextIO | None = None) -> None:
    """Write ``error: message`` as one unwrapped line on stderr (or `stream`)."""
    _write("error", message, stream)


def print_warning(message: object, stream: TextIO | None = None) -> None:
    """Write ``warning: message`` as one unwrapped line on stderr (or `stream`)."""
    _write("warning", message, stream)


def fail(message: object, code: ExitCode | int = ExitCode.BAD_INPUT) -> typer.Exit:
    """Print `message` as one error line and return the `typer.Exit` to raise.

    Usage: ``raise fail(f"{path}: no such audit log")``. Returning instead of raising keeps the
    ``raise`` visible at the call site, so type checkers and readers see that control ends there.
    """
    print_error(message)
    return typer.Exit(code=int(code))
