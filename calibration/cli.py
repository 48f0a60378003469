"""Command-line sub-app of the `calibration` package: `npe calibrate ...`.

Commands: `threshold`, `brightness`, `map` (interactive or `--simulated-patient SEED`
sessions, `--resume SESSION_FILE`), `save SESSION_FILE` (explicit save of a paused session),
`predict`, `show FILE`, `frames`. Heavy imports happen inside the commands so that
`npe --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hardware.arrays import DEFAULT_ARRAY
from npe_config import config_option, write_effective_config
from npe_console import QuietProgress, make_console
from npe_errors import ExitCode, NpeError, fail, print_warning

app = typer.Typer(no_args_is_help=True)
calibrate_app = typer.Typer(
    no_args_is_help=True,
    help="Per-patient calibration (thresholds, brightness, phosphene map) and INT8 frames.",
)
app.add_typer(calibrate_app, name="calibrate")

console = make_console()


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or environment (one line), not a bug (traceback).

    ValueError stays for the schema errors pydantic raises while a calibration is parsed.
    """
    return (NpeError, FileNotFoundError, ValueError)


def _session_command(
    procedure: str,
    patient: str | None,
    array: str,
    calibration: Path | None,
    electrodes: str,
    session: Path | None,
    resume: Path | None,
    simulated_patient: int | None,
    link: str | None,
    limits_file: Path | None,
    operator: str,
    extra: dict[str, Any],
    ctx: typer.Context,
    implant: str | None = None,
    implant_array: str | None = None,
) -> None:
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from calibration.responders import SessionPaused
    from calibration.runner import SessionRequest, calibrate, prepare_session
    from calibration.session import SessionLog, TrialRecord
    from hardware.safety import SafetyLimits

    if implant is not None or implant_array is not None:
        array, calibration, extra = _implant_array_session(
            ctx, implant, implant_array, patient, calibration, resume, array, extra
        )
    request = SessionRequest(
        procedure=procedure, patient=patient, array=array, calibration=calibration,
        electrodes=electrodes, session=session, resume=resume,
        simulated_patient=simulated_patient, link=link, operator=operator, settings=extra,
    )  # fmt: skip
    session_path = resume or session
    try:
        limits = SafetyLimits.load(limits_file) if limits_file else SafetyLimits()
        plan = prepare_session(request)
        session_path = plan.path
        if plan.resumed:
            console.print(f"resuming {plan.path}: {plan.n_logged} trials already logged")
        else:
            console.print(f"session file: {plan.path}")
            write_effective_config(
                plan.path.parent, ctx, file_name=f"{plan.path.stem}.npe-config.toml"
            )
        header = SessionLog.open(session_path).header
        interactive = header.simulated_patient is None
        if interactive:
            import signal

            # Ctrl-C must pause an operator's session even when the parent process ignores
            # SIGINT (as background jobs of non-interactive shells do).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            console.print(
                f"[bold]{procedure}[/] session for patient [cyan]{header.patient_id}[/], "
                f"{len(header.electrodes)} electrodes. Type the patient's answer after each "
                "stimulus; [bold]p[/] or Ctrl-C pauses (resume with --resume)."
            )

            def on_trial(rec: TrialRecord) -> None:
                return None

            outcome = calibrate(session_path, limits=limits, on_trial=on_trial)
        else:
            with QuietProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task(procedure, total=len(header.electrodes), status="starting")
                seen: set[str] = set()

                def on_trial(rec: TrialRecord) -> None:
                    seen.add(rec.electrode)
                    progress.update(
                        task,
                        completed=max(len(seen) - 1, 0),
                        status=f"trial {rec.index + 1} {rec.electrode} {rec.delivered_ua:.1f} µA",
                    )

                outcome = calibrate(session_path, limits=limits, on_trial=on_trial)
                progress.update(task, completed=len(header.electrodes), status="done")
    except SessionPaused as exc:
        n = len(SessionLog.open(session_path).trials) if session_path is not None else 0
        print_warning(
            f"paused ({exc}) after {n} trials; all are in {session_path}. "
            f"Resume: npe calibrate {procedure} --resume {session_path}"
        )
        raise typer.Exit(code=ExitCode.INTERRUPTED) from exc
    except KeyboardInterrupt as exc:
        print_warning(f"interrupted; resume: npe calibrate {procedure} --resume {session_path}")
        raise typer.Exit(code=ExitCode.INTERRUPTED) from exc
    except _expected_errors() as exc:
        raise fail(str(exc)) from exc

    result = outcome.result
    assert result is not None
    table = Table(title=f"{procedure}: {outcome.n_trials} trials")
    if result.thresholds:
        for col in ("electrode", "threshold µA", "95% CI µA", "slope 1/µA", "trials", "stop"):
            table.add_column(col)
        for e, r in result.thresholds.items():
            f = r.fit
            table.add_row(
                e,
                f"{f.threshold_ua:.1f}" if f.found else f"> {r.max_current_ua:.0f}",
                f"{f.threshold_ci_ua[0]:.1f}–{f.threshold_ci_ua[1]:.1f}",
                f"{f.slope:.3f}",
                str(f.n_trials),
                r.stop_reason,
            )
    elif result.brightness:
        for col in ("electrode", "threshold µA", "scale µA", "max", "rmse", "trials"):
            table.add_column(col)
        for e, b in result.brightness.items():
            table.add_row(
                e,
                f"{b.threshold_ua:.1f}",
                f"{b.fit.scale_ua:.1f}",
                f"{b.fit.max_brightness:.2f}",
                f"{b.fit.rmse:.3f}",
                str(b.fit.n_trials),
            )
    elif result.map_fit is not None:
        m = result.map_fit
        for col in ("placement centre °", "rotation °", "k mm", "report sd °", "outliers"):
            table.add_column(col)
        table.add_row(
            f"({m.placement.center_deg[0]:.2f}, {m.placement.center_deg[1]:.2f})",
            f"{m.placement.rotation_deg:.1f}",
            f"{m.placement.k_mm:.2f}",
            f"{m.report_sd_deg:.2f}",
            str(int(m.outlier.sum())),
        )
    console.print(table)
    if header.implant and header.implant_array and outcome.calibration_path is not None:
        from calibration.implant_session import merge_into_implant

        try:
            merged = merge_into_implant(
                header.implant,
                header.implant_array,
                Path(str(header.implant_calibration)),
                outcome.calibration_path,
            )
        except _expected_errors() as exc:
            raise fail(str(exc)) from exc
        console.print(f"implant calibration file: {merged} (array {header.implant_array})")
    console.print(f"calibration file: {outcome.calibration_path}")
    console.print(f"results JSON: {outcome.results_path}")


def _implant_array_session(
    ctx: typer.Context,
    implant: str | None,
    label: str | None,
    patient: str | None,
    calibration: Path | None,
    resume: Path | None,
    array: str,
    extra: dict[str, Any],
) -> tuple[str, Path | None, dict[str, Any]]:
    """A session on one array of an implant: (array file, array calibration, settings)."""
    from calibration.implant_session import prepare_implant_array

    if implant is None or label is None:
        raise fail("--implant and --implant-array go together (one array per session)")
    src = ctx.get_parameter_source("array")
    if src is not None and src.name != "DEFAULT":
        raise fail("--implant and --array exclude each other (the implant places its arrays)")
    if resume is not None:
        raise fail("--resume continues the session it names; drop --implant/--implant-array")
    if calibration is None:
        raise fail("--calibration (the implant's calibration file) is required with --implant")
    try:
        sess = prepare_implant_array(implant, label, calibration, patient)
    except _expected_errors() as exc:
        raise fail(str(exc)) from exc
    return str(sess.array_file), sess.array_calibration, {**extra, **sess.settings}


_ELECTRODES_HELP = "'all', 'first:N' or a comma list of electrode ids."

# Options every session command shares (threshold, brightness, map), declared once.
PatientOpt = Annotated[str | None, typer.Option("--patient", help="Patient id.")]
ArrayOpt = Annotated[str, typer.Option("--array", help="Array name or file.")]
ElectrodesOpt = Annotated[str, typer.Option("--electrodes", help=_ELECTRODES_HELP)]
MaxCurrentOpt = Annotated[
    float, typer.Option("--max-current", help="Highest current to test (µA).")
]
SessionOpt = Annotated[Path | None, typer.Option("--session", help="Session file to create.")]
ResumeOpt = Annotated[Path | None, typer.Option("--resume", help="Resume this session file.")]
SimulatedPatientOpt = Annotated[
    int | None,
    typer.Option("--simulated-patient", help="Answer automatically with simulated patient SEED."),
]
LinkOpt = Annotated[
    str | None, typer.Option("--link", help="Stimulator link (udp://, serial://, file://).")
]
LimitsOpt = Annotated[Path | None, typer.Option("--limits", help="Safety limits JSON.")]
OperatorOpt = Annotated[str, typer.Option("--operator", help="Who runs the session.")]
ImplantOpt = Annotated[
    str | None,
    typer.Option(
        "--implant",
        help="Implant name or file (with --implant-array): calibrate one of its arrays, as "
        "placed, and merge the results into --calibration (ids LABEL:ID).",
    ),
]
ImplantArrayOpt = Annotated[
    str | None, typer.Option("--implant-array", help="Label of the implant's array to calibrate.")
]


@calibrate_app.command("threshold")
def threshold_cmd(
    ctx: typer.Context,
    config_file: Path | None = config_option(),
    patient: PatientOpt = None,
    array: ArrayOpt = DEFAULT_ARRAY,
    calibration: Path | None = typer.Option(None, "--calibration", help="Calibration file."),
    electrodes: ElectrodesOpt = "all",
    method: str = typer.Option("quest", "--method", help="quest (QUEST+) or staircase."),
    budget: int = typer.Option(60, "--budget", help="Maximum trials per electrode."),
    ci_target: float = typer.Option(
        12.0, "--ci-target", help="Stop when the 95% interval is this narrow (µA)."
    ),
    max_current: MaxCurrentOpt = 100.0,
    session: SessionOpt = None,
    resume: ResumeOpt = None,
    simulated_patient: SimulatedPatientOpt = None,
    link: LinkOpt = None,
    limits_file: LimitsOpt = None,
    operator: OperatorOpt = "unknown",
    implant: ImplantOpt = None,
    implant_array: ImplantArrayOpt = None,
) -> None:
    """Detection thresholds per electrode (QUEST+ or staircase; ML fit with CIs)."""
    if method not in ("quest", "staircase"):
        raise fail(f"unknown --method {method!r}; use quest or staircase")
    _session_command(
        "threshold", patient, array, calibration, electrodes, session, resume,
        simulated_patient, link, limits_file, operator,
        {"method": method, "budget": budget, "ci_target_ua": ci_target, "max_current_ua": max_current}, ctx,
        implant, implant_array,
    )  # fmt: skip


@calibrate_app.command("brightness")
def brightness_cmd(
    ctx: typer.Context,
    config_file: Path | None = config_option(),
    patient: PatientOpt = None,
    array: ArrayOpt = DEFAULT_ARRAY,
    calibration: Path | None = typer.Option(
        None, "--calibration", help="Calibration file (needs thresholds)."
    ),
    electrodes: ElectrodesOpt = "all",
    levels: int = typer.Option(5, "--levels", help="Currents between threshold and maximum."),
    repeats: int = typer.Option(3, "--repeats", help="Ratings per current."),
    max_current: MaxCurrentOpt = 100.0,
    session: SessionOpt = None,
    resume: ResumeOpt = None,
    simulated_patient: SimulatedPatientOpt = None,
    link: LinkOpt = None,
    limits_file: LimitsOpt = None,
    operator: OperatorOpt = "unknown",
    implant: ImplantOpt = None,
    implant_array: ImplantArrayOpt = None,
) -> None:
    """Brightness magnitude estimation and saturating-curve fits."""
    _session_command(
        "brightness", patient, array, calibration, electrodes, session, resume,
        simulated_patient, link, limits_file, operator,
        {"levels": levels, "repeats": repeats, "max_current_ua": max_current}, ctx,
        implant, implant_array,
    )  # fmt: skip


@calibrate_app.command("map")
def map_cmd(
    ctx: typer.Context,
    config_file: Path | None = config_option(),
    patient: PatientOpt = None,
    array: ArrayOpt = DEFAULT_ARRAY,
    calibration: Path | None = typer.Option(None, "--calibration", help="Calibration file."),
    electrodes: ElectrodesOpt = "all",
    reports: int = typer.Option(2, "--reports", help="Location reports per electrode."),
    max_current: MaxCurrentOpt = 100.0,
    session: SessionOpt = None,
    resume: ResumeOpt = None,
    simulated_patient: SimulatedPatientOpt = None,
    link: LinkOpt = None,
    limits_file: LimitsOpt = None,
    operator: OperatorOpt = "unknown",
    implant: ImplantOpt = None,
    implant_array: ImplantArrayOpt = None,
) -> None:
    """Phosphene location reports; one retinotopic model fitted to the whole array."""
    _session_command(
        "map", patient, array, calibration, electrodes, session, resume,
        simulated_patient, link, limits_file, operator,
        {"reports": reports, "max_current_ua": max_current}, ctx,
        implant, implant_array,
    )  # fmt: skip


@calibrate_app.command("save")
def save_cmd(
    session_file: Path = typer.Argument(..., help="A (paused) session file."),
) -> None:
    """Explicit save: fit what a paused session holds and write the calibration file."""
    from calibration.runner import calibrate

    try:
        out = calibrate(session_file, fit_only=True)
    except _expected_errors() as exc:
        raise fail(str(exc)) from exc
    console.print(f"saved {out.n_trials} trials' fits to {out.calibration_path}")
    console.print(f"results JSON: {out.results_path}")


@calibrate_app.command("predict")
def predict_cmd(
    calibration: Path = typer.Option(
        ..., "--calibration", help="Calibration file with measured thresholds."
    ),
    array: ArrayOpt = DEFAULT_ARRAY,
    features: Path | None = typer.Option(
        None, "--features", help="JSON {electrode: {depth_mm, impedance_kohm}}."
    ),
    simulated_patient: int | None = typer.Option(
        None, "--simulated-patient", help="Take depth/impedance from simulated patient SEED."
    ),
    repeats: int = typer.Option(100, "--repeats", help="CV repetitions."),
    folds: int = typer.Option(10, "--folds", help="CV folds."),
    out: Path | None = typer.Option(
        None, "--out", help="Results JSON (default: beside the calibration)."
    ),
    save: bool = typer.Option(
        True, "--save/--no-save", help="Write predictions into the calibration file."
    ),
) -> None:
    """Predict thresholds of untested electrodes (ridge / kNN / MLP chosen by repeated k-fold CV)."""
    from rich.table import Table

    from calibration.predict_io import predict_into_calibration

    try:
        with console.status(f"ridge / kNN / MLP: {repeats} × {folds}-fold cross-validation…"):
            pred, data = predict_into_calibration(
                calibration, array, features, simulated_patient, repeats, folds, save
            )
    except _expected_errors() as exc:
        raise fail(str(exc)) from exc
    table = Table(title=f"threshold prediction: {repeats} × {folds}-fold CV")
    for col in ("model", "RMSE µA (mean ± sd)", "MAE µA", "chosen"):
        table.add_column(col)
    for s in pred.scores:
        table.add_row(
            s.model,
            f"{s.rmse_mean_ua:.2f} ± {s.rmse_sd_ua:.2f}",
            f"{s.mae_mean_ua:.2f}",
            "✓" if s.model == pred.chosen else "",
        )
    console.print(table)
    console.print(f"predicted {len(pred.predicted_ids)} untested electrodes")
    out = out or calibration.with_suffix(".prediction.json")
    out.write_text(json.dumps(data, indent=2))
    console.print(f"results JSON: {out}")


@calibrate_app.command("show")
def show_cmd(
    file: Path = typer.Argument(..., help="Calibration file."),
    png: Path | None = typer.Option(None, "--png", help="Map PNG (default: FILE.map.png)."),
    json_out: Path | None = typer.Option(
        None, "--json-out", help="Summary JSON (default: FILE.summary.json)."
    ),
) -> None:
    """Print a calibration file as a table and write a PNG map of phosphene positions."""
    from calibration.show import render_map, summary_table
    from hardware.calibration_file import load_calibration

    try:
        cal = load_calibration(file)
    except _expected_errors() as exc:
        raise fail(str(exc)) from exc
    table, summary = summary_table(cal)
    console.print(table)
    png = png or file.with_suffix(".map.png")
    render_map(cal, png)
    json_out = json_out or file.with_suffix(".summary.json")
    json_out.write_text(json.dumps(summary, indent=2, default=str))
    console.print(f"map: {png}\nsummary JSON: {json_out}")


@calibrate_app.command("frames")
def frames_cmd(
    data: Path | None = typer.Option(None, "--data", help="Recording (.h5, npe format v1)."),
    video: Path | None = typer.Option(None, "--video", help="Video file (instead of --data)."),
    camera: int | None = typer.Option(None, "--camera", help="Camera index (instead of --data)."),
    out: Path = typer.Option(..., "--out", help="Output .npz."),
    n: int = typer.Option(256, "--n", help="Number of windows."),
    window_frames: int | None = typer.Option(
        None, "--window-frames", help="Frames per window (default 250 ms)."
    ),
    size: str | None = typer.Option(None, "--size", help="HxW to resize video/camera frames to."),
    frame_rate: float = typer.Option(
        100.0, "--frame-rate", help="Frame rate of video/camera input (Hz)."
    ),
    seed: int = typer.Option(0, "--seed", help="Selection seed."),
) -> None:
    """Representative windows for INT8 export, with coverage statistics (printed and JSON)."""
    from rich.table import Table

    from calibration.frames import collect_frames

    sources = [s for s in (data, video, camera) if s is not None]
    if len(sources) != 1:
        raise fail("give exactly one of --data, --video, --camera")
    try:
        with console.status("measuring candidate windows and selecting a stratified set…"):
            stats = collect_frames(
                out=out,
                n=n,
                data=data,
                video=video,
                camera=camera,
                window_frames=window_frames,
                size=size,
                frame_rate_hz=frame_rate,
                seed=seed,
                progress=console,
            )
    except _expected_errors() as exc:
        raise fail(str(exc)) from exc
    table = Table(title=f"INT8 calibration windows: {out}")
    table.add_column("statistic")
    table.add_column("value")
    for k in ("n_windows", "window_frames", "frame_shape", "frame_rate_hz", "source"):
        table.add_row(k, str(stats[k]))
    table.add_row(
        "contrast mean / sd", f"{stats['contrast_mean']:.3f} / {stats['contrast_sd']:.3f}"
    )
    table.add_row(
        "RMS contrast p5/p50/p95", " / ".join(f"{v:.3f}" for v in stats["rms_contrast_pct"])
    )
    table.add_row(
        "temporal variance p5/p50/p95",
        " / ".join(f"{v:.4f}" for v in stats["temporal_variance_pct"]),
    )
    table.add_row(
        "contrast histogram (10 bins, -1..1)", " ".join(str(c) for c in stats["contrast_histogram"])
    )
    console.print(table)
    console.print(f"coverage JSON: {stats['json_path']}")
