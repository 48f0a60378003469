"""Setting up and running one calibration session end to end (the library call behind
`npe calibrate threshold|brightness|map`).

`start_session` writes a new session file; `calibrate(session_path, ...)` opens the hardware
(array, safety limits, link — or an in-process simulated stimulator on UDP loopback when the
patient is simulated and no link is given — and the `hardware.audit` log `SESSION.audit`,
which records every frame sent and every safety intervention), replays and continues the session, and on
completion writes the calibration file atomically (`save_calibration`) plus a results JSON.
A pause (Ctrl-C, `p`) leaves the session file complete up to the last answer and the
calibration file untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from calibration.patient import simulated_patient_for_array
from calibration.procedures import SessionResult, TrialCallback, run_session
from calibration.responders import Responder, SimulatedResponder, TerminalResponder
from calibration.session import SessionError, SessionHeader, SessionLog
from calibration.trial_stimulator import TrialStimulator
from calibration.update import apply_session, results_json
from hardware.arrays import ElectrodeArray, load_array
from hardware.calibration_file import (
    PatientCalibration,
    load_calibration,
    save_calibration,
)
from hardware.chain import SimulatorMode, open_chain
from hardware.link import DEFAULT_PORT
from hardware.safety import SafetyLimits
from hardware.stimulator import SimulatedStimulator

#: Link spec recorded for sessions that ran against an in-process simulated stimulator.
INPROCESS_LINK = "inprocess-simulator"


@dataclass(frozen=True)
class CalibrateOutcome:
    """What one call of `calibrate` did.

    Attributes:
        result: fitted values (None if the session was paused before finishing).
        complete: True when every planned trial was done.
        calibration_path: the calibration file written (None if nothing was written).
        results_path: the results JSON written beside the session file (None if paused).
        n_trials: trials in the session file now.
        stimulator_stats: the in-process simulated stimulator's counters, when one ran.
    """

    result: SessionResult | None
    complete: bool
    calibration_path: Path | None
    results_path: Path | None
    n_trials: int
    stimulator_stats: dict[str, Any] | None


def resolve_electrodes(array: ElectrodeArray, spec: str) -> tuple[str, ...]:
    """`all`, a comma list of ids, or `first:N`; unknown ids are refused by name."""
    if spec == "all":
        return array.electrode_ids
    if spec.startswith("first:"):
        n = int(spec.split(":", 1)[1])
        if not 1 <= n <= array.n:
            raise ValueError(f"first:{n}: the array has {array.n} electrodes")
        return array.electrode_ids[:n]
    ids = tuple(s.strip() for s in spec.split(",") if s.strip())
    unknown = [i for i in ids if i not in array.electrode_ids]
    if unknown or not ids:
        raise ValueError(
            f"electrodes not on array {array.name}: {', '.join(unknown) or '(none given)'}"
        )
    return ids


def start_session(session_path: str | Path, **header: Any) -> SessionLog:
    """Write the header of a new session file (fields of SessionHeader)."""
    h = SessionHeader(started=datetime.now(UTC), **header)
    load_array(h.array)  # refuse an unknown array before anything is written
    return SessionLog.create(session_path, h)


@dataclass(frozen=True)
class SessionRequest:
    """What an operator asks for: a new session of `procedure`, or to resume one.

    Attributes:
        settings: the procedure's own settings (method, budget, levels, ...), stored in the
            session header.
    """

    procedure: str
    patient: str | None
    array: str
    calibration: Path | None
    electrodes: str
    session: Path | None
    resume: Path | None
    simulated_patient: int | None
    link: str | None
    operator: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionPlan:
    """The session file a request resolved to, and whether it continues an earlier one."""

    path: Path
    resumed: bool
    n_logged: int


def prepare_session(request: SessionRequest) -> SessionPlan:
    """Check a resume against its file, or write the header of a new session file.

    Refuses (SessionError, nothing written) a resume of another procedure, of a complete
    session or with another simulated patient, and a new session without patient and
    calibration file. A new session's link defaults to the in-process simulator for a simulated
    patient and to the stimulator on this machine's default port otherwise.
    """
    r = request
    if r.resume is not None:
        log = SessionLog.open(r.resume)
        try:
            h = log.header
            if h.procedure != r.procedure:
                raise SessionError(f"{r.resume} is a {h.procedure} session, not {r.procedure}")
            if log.complete:
                raise SessionError(f"{r.resume} is already complete")
            if r.simulated_patient is not None and r.simulated_patient != h.simulated_patient:
                raise SessionError(
                    f"{r.resume} was run with simulated patient {h.simulated_patient}, "
                    f"not {r.simulated_patient}"
                )
            return SessionPlan(Path(r.resume), resumed=True, n_logged=len(log.trials))
        finally:
            log.close()
    if r.patient is None or r.calibration is None:
        raise SessionError("--patient and --calibration are required (or --resume FILE)")
    arr = load_array(r.array)
    ids = resolve_electrodes(arr, r.electrodes)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = r.session or r.calibration.parent / f"{r.procedure}-{r.patient}-{stamp}.jsonl"
    default_link = (
        INPROCESS_LINK if r.simulated_patient is not None else f"udp://127.0.0.1:{DEFAULT_PORT}"
    )
    start_session(
        path,
        procedure=r.procedure,
        patient_id=r.patient,
        operator=r.operator,
        array=arr.name if not Path(r.array).exists() else r.array,
        electrodes=ids,
        calibration_path=str(r.calibration),
        link=r.link or default_link,
        simulated_patient=r.simulated_patient,
        **r.settings,
    )
    return SessionPlan(Path(path), resumed=False, n_logged=0)


def audit_path(session_path: str | Path) -> Path:
    """The hardware audit log of a session: every frame sent and every safety event."""
    return Path(str(session_path) + ".audit")


def calibrate(
    session_path: str | Path,
    responder: Responder | None = None,
    limits: SafetyLimits | None = None,
    key: bytes | None = None,
    on_trial: TrialCallback | None = None,
    wait: bool | None = None,
    save: bool = True,
    fit_only: bool = False,
    keep_frames: list[Any] | None = None,
) -> CalibrateOutcome:
    """Run or resume the session in `session_path`; write the calibration when complete.

    Args:
        responder: who answers; default: the simulated patient of the header, else the
            terminal.
        limits: safety limits (default SafetyLimits()).
        key: device key for a real link (default: the device key file).
        wait: sleep for each train (default: True unless the patient is simulated).
        save: write the calibration file on completion.
        fit_only: deliver nothing; fit and save what the session holds (explicit save).
        keep_frames: if a list is given, every frame sent is appended to it (tests).
    """
    log = SessionLog.open(session_path)
    h = log.header
    array = load_array(h.array)
    limits = limits or SafetyLimits()
    existing: PatientCalibration | None = None
    cal_path = Path(h.calibration_path)
    if cal_path.exists():
        existing = load_calibration(cal_path)
        if existing.patient_id != h.patient_id:
            raise SessionError(
                f"{cal_path} belongs to patient {existing.patient_id!r}, session is for "
                f"{h.patient_id!r}"
            )
    if responder is None:
        if h.simulated_patient is not None:
            responder = SimulatedResponder(simulated_patient_for_array(array, h.simulated_patient))
        else:
            responder = TerminalResponder()
    if wait is None:
        wait = h.simulated_patient is None
    first_seq = max((t.sequence for t in log.trials), default=0) + 1
    stats: dict[str, Any] | None = None
    try:
        note = f"npe calibrate {h.procedure} patient {h.patient_id} session {log.path.name}"
        # The audit log continues across resumes (its sequence numbers carry on). With a
        # simulated patient and no link, a simulator on a thread; its generous dead-man is
        # fine, as calibration sends a stop frame after every train anyway.
        simulated = h.link == INPROCESS_LINK
        with open_chain(
            array,
            limits,
            audit_path(log.path),
            note,
            link=None if simulated else h.link,
            key=None if simulated else key,
            simulator=SimulatorMode.THREAD,
            deadman_ms=500.0 if simulated else None,
            link_audit=True,
            array_spec=h.array,
        ) as chain:
            link, stim = chain.link, chain.stimulator
            ts = TrialStimulator(
                array, limits, link, wait=wait, first_sequence=first_seq, audit=chain.audit
            )
            if keep_frames is not None:
                ts.keep_frames = True
                ts.sent_frames = keep_frames
            try:
                result = run_session(log, ts, responder, existing, on_trial, fit_only=fit_only)
            finally:
                if isinstance(stim, SimulatedStimulator):
                    wait_until_received(stim, link.stats.sent)
                    stats = stim.stats.as_dict()
    finally:
        log.close()
    if not fit_only:
        log.mark_complete()
        log.close()
    written = None
    if save:
        cal = apply_session(existing, log, result, array)
        written = save_calibration(cal, cal_path)
    res_path = Path(str(log.path) + ".results.json")
    data = results_json(result, log, array)
    data["calibration_file"] = str(written) if written else None
    data["stimulator"] = stats
    res_path.write_text(json.dumps(data, indent=2, default=str))
    return CalibrateOutcome(result, log.complete, written, res_path, len(log.trials), stats)


def wait_until_received(stim: Any, sent: int, timeout_s: float = 3.0) -> None:
    """Wait until the simulated stimulator has received every datagram sent (or timeout)."""
    import time

    deadline = time.monotonic() + timeout_s
    while stim.stats.received < sent and time.monotonic() < deadline:
        time.sleep(0.01)


def load_session_header(path: str | Path) -> SessionHeader:
    return SessionLog.open(path).header


ProgressHook = Callable[[int, int], None]
