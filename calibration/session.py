"""The session file: an append-only log of every trial, from which a session resumes.

One JSON object per line. The first line is the `SessionHeader` (procedure, patient, array,
settings); every trial follows as a `TrialRecord` the moment its answer is known, flushed and
fsync'ed (a train delivered but never answered, because the session paused at its prompt,
is kept as an `unanswered` line for the audit trail and repeated on resume), so an interrupted session (Ctrl-C, crash, power loss) loses at most the trial
whose answer had not yet been given. A final `{"kind": "complete"}` line marks a finished
session. Resuming reads the header and the trials, replays them into the procedures (which
are deterministic given their history) and carries on where it stopped.

A torn last line (the process died mid-write) is ignored with a warning; anything else that
does not parse is refused with the line number, because a session file that lies about what
was delivered must not be silently trusted. The file is read through the untrusted loader
(regular file, size limit, UTF-8) and every line parsed with its depth, NaN/Infinity and
duplicate-key checks, so a hostile file is one line of error, never a traceback.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from calibration.errors import CalibrationPackageError
from hardware.untrusted_json import (
    UntrustedFileError,
    error_location,
    parse_untrusted_json,
    read_untrusted_text,
)
from npe_errors import print_warning

SESSION_SCHEMA = "npe.calibration-session"
SESSION_VERSION = 1
#: Largest session file read (bytes): a trial line is ~300 bytes, a session a few thousand.
MAX_SESSION_BYTES = 64 << 20


class SessionError(CalibrationPackageError, ValueError):
    """A session file that cannot be resumed (missing, foreign, corrupt, mismatched)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SessionHeader(_Strict):
    """Everything needed to rerun the same session from its log."""

    kind: Literal["header"] = "header"
    schema_name: Literal["npe.calibration-session"] = "npe.calibration-session"
    version: int = SESSION_VERSION
    procedure: Literal["threshold", "brightness", "map"]
    patient_id: str = Field(min_length=1)
    operator: str = "unknown"
    array: str
    electrodes: tuple[str, ...] = Field(min_length=1)
    calibration_path: str
    link: str
    method: Literal["quest", "staircase"] = "quest"
    budget: int = Field(default=60, ge=1, le=1000)
    ci_target_ua: float = Field(default=12.0, gt=0.0)
    max_current_ua: float = Field(default=100.0, gt=0.0)
    levels: int = Field(default=5, ge=3, le=20)
    repeats: int = Field(default=3, ge=1, le=20)
    reports: int = Field(default=2, ge=1, le=20)
    simulated_patient: int | None = None
    started: datetime
    #: A session on one array of an implant (`calibration.implant_session`): the implant, the
    #: array's label and the implant's calibration file its results are merged into.
    implant: str | None = None
    implant_array: str | None = None
    implant_calibration: str | None = None


class TrialRecord(_Strict):
    """One delivered trial and the patient's answer."""

    kind: Literal["trial"] = "trial"
    index: int = Field(ge=0)
    electrode: str
    sequence: int
    requested_ua: float
    delivered_ua: float = Field(ge=0.0)
    response: float | None = None
    reported_deg: tuple[float, float] | None = None
    safety_events: tuple[str, ...] = ()
    time: datetime


def _first_error(exc: ValidationError) -> str:
    """The first validation error as 'field: message' (one line)."""
    err = exc.errors()[0]
    where = error_location(err["loc"], "")
    return f"{where}: {err['msg']}" if where else str(err["msg"])


class SessionLog:
    """Append-only, fsync'ed JSON-lines log of one session."""

    def __init__(self, path: Path, header: SessionHeader, trials: list[TrialRecord]) -> None:
        self.path = path
        self.header = header
        self.trials = trials
        self.complete = False
        self.unanswered = 0
        self._fh: IO[str] | None = None

    @classmethod
    def create(cls, path: str | Path, header: SessionHeader) -> SessionLog:
        p = Path(path)
        if p.exists():
            raise SessionError(f"{p}: session file exists; resume it with --resume {p}")
        p.parent.mkdir(parents=True, exist_ok=True)
        log = cls(p, header, [])
        log._write(header.model_dump_json())
        return log

    @classmethod
    def open(cls, path: str | Path) -> SessionLog:
        """Read an existing session file for resuming (or inspecting)."""
        p = Path(path)
        try:
            text = read_untrusted_text(p, "session file", MAX_SESSION_BYTES)
        except UntrustedFileError as exc:
            raise SessionError(str(exc)) from exc
        lines = text.split("\n")
        torn = lines[-1] != ""  # a complete file ends with a newline
        body = [(n, ln) for n, ln in enumerate(lines[:-1], start=1) if ln.strip()]
        if not body:
            raise SessionError(f"{p}: empty session file")

        def record(n: int, line: str) -> dict[str, object]:
            source = f"{p}: line {n}"
            try:
                obj = parse_untrusted_json(line, source=source)
            except UntrustedFileError as exc:
                reason = str(exc).removeprefix(source + ": ")
                raise SessionError(f"{source} is not JSON npe accepts: {reason}") from exc
            if not isinstance(obj, dict):
                raise SessionError(f"{p}: line {n}: expected a JSON object")
            return obj

        try:
            header = SessionHeader.model_validate(record(*body[0]))
        except ValidationError as exc:
            raise SessionError(
                f"{p}: line {body[0][0]} is not a calibration session header: {_first_error(exc)}"
            ) from exc
        trials: list[TrialRecord] = []
        complete = False
        unanswered = 0
        for n, line in body[1:]:
            obj = record(n, line)
            kind = obj.get("kind")
            if kind == "complete":
                complete = True
                continue
            if kind == "unanswered":
                unanswered += 1
                continue
            try:
                rec = TrialRecord.model_validate(obj)
            except ValidationError as exc:
                raise SessionError(f"{p}: line {n}: bad trial record: {_first_error(exc)}") from exc
            if rec.index != len(trials):
                raise SessionError(
                    f"{p}: line {n}: trial index {rec.index}, expected {len(trials)}"
                )
            trials.append(rec)
        if torn and lines[-1].strip():
            # Only now: a file refused above gets its one error line, not a warning too.
            print_warning(f"{p}: ignoring a torn last line (interrupted mid-write)")
        log = cls(p, header, trials)
        log.complete = complete
        log.unanswered = unanswered
        if torn:
            # Cut the torn bytes off so the next append starts on a clean line.
            raw = p.read_bytes()
            with open(p, "r+b") as fh:
                fh.truncate(raw.rfind(b"\n") + 1)
        return log

    def _write(self, line: str) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, record: TrialRecord) -> None:
        if record.index != len(self.trials):
            raise SessionError(f"trial index {record.index} out of order (have {len(self.trials)})")
        self._write(record.model_dump_json())
        self.trials.append(record)

    def note_unanswered(self, electrode_id: str, sequence: int, delivered_ua: float) -> None:
        """A train that was delivered but never answered (the session paused at its prompt):
        kept for the audit trail, not a trial (it is repeated on resume)."""
        self._write(
            json.dumps(
                {
                    "kind": "unanswered",
                    "electrode": electrode_id,
                    "sequence": sequence,
                    "delivered_ua": delivered_ua,
                    "time": datetime.now(UTC).isoformat(),
                }
            )
        )
        self.unanswered += 1

    def mark_complete(self) -> None:
        self._write(json.dumps({"kind": "complete", "time": datetime.now(UTC).isoformat()}))
        self.complete = True

    def trials_for(self, electrode_id: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.electrode == electrode_id]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
