"""Command-line sub-app of the `hardware` package (composed into `npe` by npe_cli).

Commands: `npe hardware arrays`, `npe stimulator serve`, `npe log inspect FILE`,
`npe preview LOG --out VIDEO`. Heavy imports (cv2) stay inside the commands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from hardware.arrays import DEFAULT_ARRAY
from npe_console import QuietProgress, make_console
from npe_errors import ExitCode, fail

app = typer.Typer(no_args_is_help=True)
hardware_app = typer.Typer(no_args_is_help=True, help="Electrode arrays and hardware data.")
stimulator_app = typer.Typer(no_args_is_help=True, help="The simulated stimulator.")
log_app = typer.Typer(no_args_is_help=True, help="Audit logs of stimulation.")
app.add_typer(hardware_app, name="hardware")
app.add_typer(stimulator_app, name="stimulator")
app.add_typer(log_app, name="log")

console = make_console()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


@hardware_app.command("arrays")
def arrays_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    json_out: Path | None = typer.Option(None, "--json-out", help="Also write JSON here."),
) -> None:
    """List the shipped electrode arrays (geometry, area, placement)."""
    from rich.table import Table

    from hardware.arrays import ArrayError, list_arrays, load_array

    rows: list[dict[str, Any]] = []
    for name in list_arrays():
        try:
            a = load_array(name)
        except ArrayError as exc:
            raise fail(str(exc)) from exc
        d = a.positions_mm[:, None, :] - a.positions_mm[None, :, :]
        dist = (d**2).sum(-1) ** 0.5
        dist[dist == 0] = float("inf")
        ph = a.phosphene_positions_deg()
        rows.append(
            {
                "name": a.name,
                "kind": a.kind,
                "electrodes": a.n,
                "pitch_mm": round(float(dist.min()), 4),
                "extent_mm": [
                    round(float(v), 3) for v in (a.positions_mm.max(0) - a.positions_mm.min(0))
                ],
                "area_um2": float(a.area_um2.mean()),
                "shank_length_mm": a.shank_length_mm,
                "placement_deg": list(a.placement_deg),
                "phosphene_span_deg": [round(float(v), 3) for v in (ph.max(0) - ph.min(0))],
            }
        )
    if json_out is not None:
        _write_json(json_out, rows)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="Electrode arrays (hardware/array_data)")
    for col in (
        "name",
        "kind",
        "electrodes",
        "pitch mm",
        "extent mm",
        "area µm²",
        "shank mm",
        "placement °",
        "phosphene span °",
    ):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["name"], r["kind"], str(r["electrodes"]), f"{r['pitch_mm']:.2f}",
            "×".join(f"{v:.1f}" for v in r["extent_mm"]), f"{r['area_um2']:.0f}",
            f"{r['shank_length_mm']:.1f}", "({:.1f}, {:.1f})".format(*r["placement_deg"]),
            "×".join(f"{v:.2f}" for v in r["phosphene_span_deg"]),
        )  # fmt: skip
    console.print(t)
    from hardware.implant import list_implants, load_implant

    for name in list_implants():  # implants of several arrays: `npe run --implant NAME`
        imp = load_implant(name)
        lim = imp.limits
        console.print(
            f"implant {imp.name} (hardware/implant_data): {len(imp.arrays)} arrays, "
            f"{imp.n_electrodes} electrodes; at most {lim.max_active_electrodes} active and "
            f"{lim.max_total_current_ua:g} µA in total over the implant",
            highlight=False,
        )


@stimulator_app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(9750, help="UDP port (0: pick a free one)."),
    array: str = typer.Option(DEFAULT_ARRAY, help="Array name or array file."),
    key_file: Path | None = typer.Option(
        None,
        help="Device key (default: $NPE_DEVICE_KEY_FILE or ~/.config/npe/device.key; created if missing).",
    ),
    limits_file: Path | None = typer.Option(
        None, "--limits", help="SafetyLimits JSON (default limits otherwise)."
    ),
    deadman_ms: float = typer.Option(
        100.0, help="Stop all stimulation after this long without a valid frame."
    ),
    deadman_margin_ms: float = typer.Option(
        10.0,
        help="Record the stop this long before a frame's validity ends "
        "(the output is zero at its end by construction).",
    ),
    freshness_ms: float = typer.Option(
        250.0, help="Refuse frames sent longer ago (or further ahead) than this."
    ),
    state_dir: Path | None = typer.Option(
        None,
        help="Durable anti-replay state (default: $NPE_STATE_DIR or ~/.local/state/npe).",
    ),
    duration: float = typer.Option(0.0, help="Serve this many seconds (0: until Ctrl-C)."),
    stats_out: Path | None = typer.Option(None, help="Write the final statistics here (JSON)."),
    audit_log: Path | None = typer.Option(
        None, help="Audit log of delivered frames, clamps, rejections and dead-man stops."
    ),
) -> None:
    """Run the reference simulated stimulator: verify, re-enforce limits, ack, dead-man stop."""
    from rich.live import Live
    from rich.table import Table

    from hardware.arrays import ArrayError, load_array
    from hardware.keys import DeviceKeyError, load_or_create_device_key
    from hardware.safety import SafetyConfigError, SafetyLimits
    from hardware.stimulator import SimulatedStimulator

    try:
        arr = load_array(array)
        limits = SafetyLimits.load(limits_file) if limits_file else SafetyLimits()
        key = load_or_create_device_key(key_file)
    except (ArrayError, SafetyConfigError, DeviceKeyError) as exc:
        raise fail(str(exc)) from exc
    from hardware.audit import AuditError, AuditLog

    try:
        log = AuditLog(audit_log, arr, limits, note="npe stimulator serve") if audit_log else None
    except AuditError as exc:
        raise fail(str(exc)) from exc
    from hardware.replay import ReplayStateError, default_state_dir

    try:
        stim = SimulatedStimulator(
            host, port, key, limits, arr, deadman_ms=deadman_ms, audit=log,
            freshness_ms=freshness_ms, deadman_margin_ms=deadman_margin_ms,
            state_dir=state_dir if state_dir is not None else default_state_dir(),
        )  # fmt: skip
    except (ReplayStateError, ValueError) as exc:
        if log is not None:
            log.close()
        raise fail(str(exc)) from exc
    try:
        stim.start()
    except OSError as exc:
        if log is not None:
            log.close()
        raise fail(f"cannot listen on udp://{host}:{port}: {exc}") from exc

    def table() -> Table:
        s = stim.stats
        t = Table(
            title=f"npe stimulator on udp://{host}:{stim.port} ({arr.name}, dead-man {deadman_ms:g} ms)"
        )
        t.add_column("metric")
        t.add_column("value")
        t.add_row("stimulating", "[green]yes[/green]" if s.stimulating else "no")
        t.add_row("active electrodes", str(int(stim.output.active.sum())))
        for k in ("received", "accepted", "deadman_stops", "acks_sent", "last_wire_sequence"):
            t.add_row(k, str(getattr(s, k)))
        t.add_row("rejected", ", ".join(f"{k}={v}" for k, v in s.rejected.items()) or "0")
        t.add_row("clamped", ", ".join(f"{k}={v}" for k, v in s.clamped.items()) or "0")
        return t

    console.print(f"listening on udp://{host}:{stim.port}", highlight=False)
    t0 = time.monotonic()
    try:
        with Live(table(), console=console, refresh_per_second=4, transient=False) as live:
            while duration <= 0 or time.monotonic() - t0 < duration:
                time.sleep(0.25)
                live.update(table())
    except KeyboardInterrupt:
        pass
    finally:
        stim.stop()
        if log is not None:
            log.event("stimulator_summary", json.dumps(stim.stats.as_dict()))
            log.close()
    stats = stim.stats.as_dict() | {"port": stim.port, "array": arr.name, "deadman_ms": deadman_ms}
    if stats_out is not None:
        _write_json(stats_out, stats)
    console.print()
    console.print_json(json.dumps(stats))


@log_app.command("inspect")
def inspect_cmd(
    file: Path = typer.Argument(..., help="Audit log file."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report instead of a table."),
    json_out: Path | None = typer.Option(
        None, "--json-out", help="Where to write the JSON report (default: FILE.report.json)."
    ),
) -> None:
    """Summarise and verify an audit log (gaps, corruption, torn records, limit breaches).

    Exit code 0 when the log verifies, 1 when it does not, 2 when it cannot be read.
    """
    from rich.table import Table

    from hardware.audit import AuditError, inspect_log

    if not file.exists():
        raise fail(f"{file}: no such audit log")
    if not file.is_file():
        raise fail(f"{file}: is a directory or not a regular file, expected an audit log")
    try:
        with console.status(f"verifying {file} ..."):
            report = inspect_log(file)
    except AuditError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:  # unreadable (permissions, I/O error): one line, not a traceback
        raise fail(f"{file}: cannot read the audit log ({exc.strerror or exc})") from exc
    out = json_out or file.with_name(file.name + ".report.json")
    _write_json(out, report.model_dump())
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        t = Table(title=f"audit log {file}")
        t.add_column("item")
        t.add_column("value")
        t.add_row(
            "verdict",
            "[green]OK[/green]"
            if report.ok
            else "[red]FAILED[/red]: " + "; ".join(report.problems),
        )
        for k in (
            "n_records",
            "n_sessions",
            "n_frames",
            "n_events",
            "first_sequence",
            "last_sequence",
            "torn_records",
            "limit_breaches",
            "max_amplitude_ua",
            "max_active_electrodes",
        ):
            t.add_row(k, str(getattr(report, k)))
        t.add_row(
            "sequence gaps", str(report.sequence_gaps[:5]) if report.sequence_gaps else "none"
        )
        t.add_row(
            "corrupt regions", str(report.corrupt_regions[:5]) if report.corrupt_regions else "none"
        )
        t.add_row(
            "events",
            ", ".join(f"{k}={v}" for k, v in sorted(report.events_by_kind.items())) or "none",
        )
        if report.wall_start_ns and report.wall_end_ns:
            t.add_row("duration s", f"{(report.wall_end_ns - report.wall_start_ns) / 1e9:.3f}")
        console.print(t)
        if report.arrays:
            console.print(_array_table(report))
        console.print(f"JSON report: {out}", highlight=False)
    if not report.ok:
        raise typer.Exit(code=ExitCode.CHECK_FAILED)


def _array_table(report: Any) -> Any:
    """Per-array rows of an implant log, and their total."""
    from rich.table import Table

    t = Table(title=f"implant {report.implant}: {len(report.arrays)} arrays")
    cols = (
        "array",
        "frames",
        "events",
        "frame seq",
        "seq gaps",
        "breaches",
        "max µA",
        "max active",
    )
    for c in cols:
        t.add_column(c, justify="left" if c == "array" else "right")
    for r in report.arrays:
        t.add_row(
            r.label,
            str(r.n_frames),
            str(r.n_events),
            f"{r.first_frame_sequence}-{r.last_frame_sequence}",
            str(r.frame_sequence_gaps),
            str(r.limit_breaches),
            f"{r.max_amplitude_ua:.1f}",
            str(r.max_active_electrodes),
        )
    rows = report.arrays
    t.add_row(
        "total",
        str(sum(r.n_frames for r in rows)),
        str(sum(r.n_events for r in rows)),
        "",
        str(sum(r.frame_sequence_gaps for r in rows)),
        f"{sum(r.limit_breaches for r in rows)} (+{report.implant_breaches} implant-wide)",
        f"{report.max_amplitude_ua:.1f}",
        str(report.max_active_electrodes),
    )
    return t


@app.command("preview")
def preview_cmd(
    log: Path = typer.Argument(..., help="Audit log with stimulation frames."),
    out: Path = typer.Option(..., "--out", help="Output video (.mp4 or .avi)."),
    array: str | None = typer.Option(None, help="Array name/file when the log names none."),
    calibration: Path | None = typer.Option(
        None, help="Patient calibration (positions, brightness curves)."
    ),
    size: int = typer.Option(256, help="Video side in pixels."),
    fps: float = typer.Option(100.0, help="Video frame rate (one frame per stimulation frame)."),
) -> None:
    """Render a logged session to a video of the phosphenes the patient would see."""
    import cv2
    import numpy as np

    from hardware.arrays import ArrayError, load_array
    from hardware.audit import AuditError, read_frames, read_implant_frames
    from hardware.calibration_file import CalibrationError, load_calibration
    from hardware.implant_calibration import load_implant_calibration
    from hardware.phosphene_preview import PhospheneRenderer, implant_frame

    try:
        implant, bins = read_implant_frames(log)
        if implant is not None and array is None:
            # An implant log: every electrode of every array, one video frame per bin.
            cals = (
                load_implant_calibration(calibration, implant, float("inf")) if calibration else {}
            )
            renderer = PhospheneRenderer(implant, cals, size_px=size, frame_ms=1000.0 / fps)
            frames = [implant_frame(implant, b) for b in bins]
            arr_name = implant.name
        else:
            arr, frames = read_frames(log)
            if array is not None:
                arr = load_array(array)
            cal = load_calibration(calibration) if calibration else None
            if arr is None:
                raise fail(f"{log}: the log names no array; pass --array")
            frames = [f for f in frames if f.n_electrodes == arr.n]
            renderer = PhospheneRenderer(arr, cal, size_px=size, frame_ms=1000.0 / fps)
            arr_name = arr.name
    except FileNotFoundError as exc:
        raise fail(f"{log}: no such audit log") from exc
    except (AuditError, ArrayError, CalibrationError) as exc:
        raise fail(str(exc)) from exc
    if not frames:
        raise fail(f"{log}: no stimulation frames for {arr_name}")
    fourcc = cv2.VideoWriter.fourcc(*("mp4v" if out.suffix.lower() == ".mp4" else "MJPG"))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), fourcc, fps, (size, size), isColor=False)
    if not writer.isOpened():
        raise fail(f"{out}: OpenCV cannot write this video format")
    t0 = time.perf_counter()
    peak = 0.0
    with QuietProgress(console=console) as progress:
        task = progress.add_task("rendering", total=len(frames))
        for f in frames:
            img = renderer.render(f)
            peak = max(peak, float(img.max()))
            writer.write((img * 255.0 + 0.5).astype(np.uint8))
            progress.advance(task)
    writer.release()
    elapsed = time.perf_counter() - t0
    summary = {
        "log": str(log),
        "video": str(out),
        "array": arr_name,
        "electrodes": renderer.n,
        "frames": len(frames),
        "size_px": size,
        "fps_video": fps,
        "render_fps": len(frames) / elapsed if elapsed > 0 else None,
        "field_deg": renderer.field_deg,
        "peak_brightness": peak,
    }
    _write_json(out.with_name(out.name + ".json"), summary)
    console.print(f"wrote {out} ({len(frames)} frames) and {out.name}.json", highlight=False)
