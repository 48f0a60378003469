"""The one loader for JSON files a user hands to npe (manifests, calibrations, limits, arrays).

Every such file is untrusted until checked. `json.loads` alone turns a hostile file into a
traceback (RecursionError at ~100,000 nested brackets, UnicodeDecodeError, IsADirectoryError)
or into silently wrong values (NaN, a duplicate key where the last one wins). This module
checks, in order: the path is a regular file, its size is under a limit (before reading it),
it decodes as UTF-8, its bracket nesting is shallow enough (counted by a linear scan, without
recursion, before the parser sees it), and it parses with NaN/Infinity and duplicate keys
refused. Any refusal is an `UntrustedFileError` whose message is one line naming the file.
`hardware` is the leaf package, so every other package may import this.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from hardware.errors import HardwareError

#: Largest JSON file npe reads (bytes); the biggest real one (a 1024-electrode calibration
#: with its trials) is a few MB.
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
#: Deepest bracket nesting accepted; npe's own files nest fewer than 8 levels.
DEFAULT_MAX_DEPTH = 64
#: Longest string accepted (characters): npe's strings are ids, names, paths, dates and
#: hex digests; a megabyte "patient id" is a hostile file, not a patient.
DEFAULT_MAX_STRING = 64 * 1024


class UntrustedFileError(HardwareError, ValueError):
    """A user-supplied file refused before use; the message is one line naming the file."""


def error_location(loc: tuple[int | str, ...] | list[int | str], empty: str = "<root>") -> str:
    """A pydantic error's location as one printable line: `a.b.0`, with any part that holds a
    line break or other unprintable character quoted (`'\\n'`). Why: the keys come from the
    untrusted file, and a refusal must stay one line whatever the file's keys are."""
    text = ".".join(str(p) if str(p).isprintable() else repr(p) for p in loc)
    return text or empty


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _max_depth(text: str, limit: int, max_string: int = 1 << 62) -> int:
    """Deepest bracket nesting outside strings; stops early once past `limit` (linear scan).

    Raises ValueError for a string longer than `max_string` characters (escapes counted as
    written)."""
    depth = deepest = 0
    in_string = escaped = False
    start = 0
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if i - start - 1 > max_string:
                    raise ValueError(f"a string of {i - start - 1} characters (limit {max_string})")
        elif ch == '"':
            in_string = True
            start = i
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(token: str) -> float:
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {token[:40]} overflows to infinity")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def parse_untrusted_json(
    text: str, source: str = "<json>", max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """Parse JSON text with the depth, string length, NaN/Infinity and duplicate-key checks."""
    try:
        depth = _max_depth(text, max_depth, DEFAULT_MAX_STRING)
    except ValueError as exc:
        raise UntrustedFileError(f"{source}: refused: {exc}") from exc
    if depth > max_depth:
        raise UntrustedFileError(f"{source}: JSON nested deeper than {max_depth} levels; refused")
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise UntrustedFileError(f"{source}: not valid JSON ({_one_line(str(exc))})") from exc
    except (ValueError, RecursionError) as exc:
        raise UntrustedFileError(f"{source}: refused: {_one_line(str(exc))}") from exc


def read_untrusted_bytes(
    path: str | Path, what: str = "file", max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """The bytes of a user-supplied file: a regular file (not a directory, device or FIFO)
    of at most `max_bytes`, checked from its size before reading and again while reading
    (a file that grows meanwhile). Raise UntrustedFileError with a one-line reason.

    Why a FIFO is refused: reading one blocks forever; a device may never end."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError as exc:
        raise UntrustedFileError(f"{p}: no such {what}") from exc
    except OSError as exc:
        raise UntrustedFileError(
            f"{p}: cannot read {what} ({_one_line(exc.strerror or str(exc))})"
        ) from exc
    if stat.S_ISDIR(st.st_mode):
        raise UntrustedFileError(f"{p}: is a directory, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise UntrustedFileError(f"{p}: not a regular file, expected a {what}")
    if st.st_size > max_bytes:
        raise UntrustedFileError(
            f"{p}: {what} is {st.st_size} bytes, above the {max_bytes}-byte limit"
        )
    try:
        with p.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise UntrustedFileError(
            f"{p}: cannot read {what} ({_one_line(exc.strerror or str(exc))})"
        ) from exc
    if len(data) > max_bytes:
        raise UntrustedFileError(f"{p}: {what} is above the {max_bytes}-byte limit")
    return data


def read_untrusted_text(
    path: str | Path, what: str = "file", max_bytes: int = DEFAULT_MAX_BYTES
) -> str:
    """`read_untrusted_bytes` decoded as UTF-8 (strictly: a bad byte is a refusal)."""
    data = read_untrusted_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UntrustedFileError(
            f"{Path(path)}: {what} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from exc


def load_untrusted_json(
    path: str | Path,
    what: str = "file",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Read, check and parse one JSON file; raise UntrustedFileError with a one-line reason.

    `what` names the kind of file in the message ("calibration file", "manifest").
    """
    text = read_untrusted_text(path, what, max_bytes)
    return parse_untrusted_json(text, source=str(Path(path)), max_depth=max_depth)
