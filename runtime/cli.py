"""Command-line sub-app of the `runtime` package (composed into `npe` by npe_cli).

`npe run`: camera (or file/images/synthetic) → bundle → hardware pipeline → stimulator, live.
`npe bench`: offline latency benchmark of a bundle (see runtime.bench; its `--checkpoint`
PyTorch timer is export's, plugged in by npe_cli through `set_eager_timer`).
Heavy imports (onnxruntime, cv2, numpy-heavy modules) happen inside the commands so that
`npe --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hardware.arrays import DEFAULT_ARRAY
from hardware.simulator_mode import SimulatorMode
from npe_config import config_option, write_effective_config
from npe_console import QuietProgress, make_console
from npe_errors import ExitCode, NpeError, fail
from runtime.options import ExecutionDevice, FormChoice, Precision

if TYPE_CHECKING:
    from runtime.bench.models import BenchReport, EndToEnd
    from runtime.bench.timing import EagerTimer

app = typer.Typer(no_args_is_help=True)
# Status and tables go to stderr (stdout stays free for --json); laid out as every npe command.
console = make_console(stderr=True)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or environment (one line), not a bug (traceback)."""
    return (NpeError, FileNotFoundError)


def default_run_dir() -> Path:
    """`./npe-runs/<UTC time>/`: where a run's audit log, summary JSON and preview go."""
    return Path("npe-runs") / datetime.now(UTC).strftime("run-%Y%m%dT%H%M%S.%fZ")


@app.command("run")
def run_command(
    ctx: typer.Context,
    config_file: Path | None = config_option(),
    bundle: Path | None = typer.Option(None, help="Bundle directory (default: the shipped one)."),
    expect_digest: str | None = typer.Option(
        None,
        "--expect-digest",
        help="Refuse the bundle unless its digest (`npe inspect` shows it) is this one.",
    ),
    source: str | None = typer.Option(
        None,
        help="camera:N | FILE.mp4 | images:DIR | synthetic:bar|grating|noise "
        "(default: camera:0 if it opens, else synthetic:bar).",
    ),
    array: str = typer.Option(DEFAULT_ARRAY, help="Electrode array name or file."),
    implant: str | None = typer.Option(
        None,
        help="Implant of several arrays, name or file (instead of --array): one stimulator "
        "link per array; `npe hardware arrays` lists the shipped ones.",
    ),
    implant_links: bool = typer.Option(
        False,
        "--implant-links",
        help="With --implant: send to the links the implant file names (all with "
        "--key-file's key), not to one simulated stimulator per array.",
    ),
    calibration: Path | None = typer.Option(
        None, help="Patient calibration file (for --implant: ids qualified LABEL:ID)."
    ),
    limits: Path | None = typer.Option(None, help="Safety limits file (default: built-in)."),
    link: str | None = typer.Option(
        None,
        help="Stimulator link udp://HOST:PORT | serial://PORT | file:///PATH "
        "(default: a simulated stimulator on UDP loopback, see --stimulator).",
    ),
    key_file: Path | None = typer.Option(None, help="Device key file for --link."),
    log: Path | None = typer.Option(
        None, help="Audit log path (default: ./npe-runs/run-<time>/audit.log)."
    ),
    summary_json: Path | None = typer.Option(
        None, help="Summary JSON path (default: summary.json beside the log)."
    ),
    duration: float | None = typer.Option(None, min=0.0, help="Stop after S seconds."),
    preview: bool = typer.Option(False, help="Show (or, headless, record) the preview."),
    device: ExecutionDevice = typer.Option(ExecutionDevice.CPU, help="Where ONNX Runtime runs."),
    camera_fov_deg: float = typer.Option(
        60.0, help="Horizontal field of view of the camera/source in degrees."
    ),
    as_fast_as_possible: bool = typer.Option(
        False, "--as-fast-as-possible", help="Files/synthetic only: do not pace in real time."
    ),
    form: FormChoice | None = typer.Option(None, help="Model form (default: step if present)."),
    precision: Precision = typer.Option(Precision.FP32, help="Model precision."),
    threads: int = typer.Option(1, min=1, help="ONNX Runtime intra-op threads."),
    spinning: bool = typer.Option(False, help="Let ORT worker threads spin (see npe bench)."),
    stall_timeout: float = typer.Option(
        0.25, min=0.01, help="Camera watchdog: seconds without a frame = stalled."
    ),
    source_fps: float | None = typer.Option(
        None, help="Frame rate of images/synthetic sources (default 30/60)."
    ),
    stimulator: SimulatorMode = typer.Option(
        SimulatorMode.PROCESS,
        help="Simulated stimulator (no --link): process (its own, niced: what `npe bench` "
        "measures) | thread (in this process, competes for the GIL).",
    ),
    rt_priority: int = typer.Option(
        0, help="SCHED_FIFO priority 1-99 for the loop thread (0: off; needs CAP_SYS_NICE)."
    ),
    spin_us: float = typer.Option(
        0.0,
        min=0.0,
        help="Busy-wait the last N µs before each bin instead of sleeping (keeps the core "
        "awake; costs that share of one core; see README, latency).",
    ),
    package: Path | None = typer.Option(
        None,
        help="Signed deployment package (npe deploy build): verified against --trusted-keys, "
        "then its bundle, array, calibration, limits and run settings replace those flags.",
    ),
    trusted_keys: Path | None = typer.Option(
        None,
        help="Trusted public keys for --package (default: $NPE_TRUSTED_KEYS or "
        "~/.config/npe/trusted_keys).",
    ),
    dev_unsigned: bool = typer.Option(
        False,
        "--dev-unsigned",
        help="Development run from unsigned inputs; needed in prosthesis mode "
        "($NPE_PROSTHESIS_MODE=1), and logged in the audit log.",
    ),
) -> None:
    """Stream frames through the model to the stimulator, live (Ctrl-C stops safely)."""
    from rich.live import Live

    from hardware.audit import EVENT_BUNDLE_LOADED, EVENT_DEV_UNSIGNED, EVENT_PACKAGE_VERIFIED
    from runtime.inference import SessionSettings
    from runtime.loop import RunContext
    from runtime.package import prosthesis_mode
    from runtime.realtime import set_rt_priority
    from runtime.session import LiveSession, Pacing, SessionPlan
    from runtime.sources import camera_opens
    from runtime.spec import load_model_spec
    from runtime.status import StatusLine, print_summary

    expected = _expected_errors()
    implant_problem = _implant_flags_problem(ctx, implant, implant_links, link)
    if implant_problem:
        raise fail(implant_problem)

    unpacked = None
    if package is not None:
        if dev_unsigned:
            raise fail("--package and --dev-unsigned exclude each other")
        if bundle is not None or calibration is not None or limits is not None:
            raise fail("--package fixes the bundle, calibration and limits; drop those flags")
        from runtime.package import extract_package

        try:
            unpacked = extract_package(package, trusted_keys)
        except expected as exc:
            raise fail(f"package refused: {exc}") from None
        import atexit
        import shutil

        # The simulated stimulator process reads the array file after start: keep the
        # private copy for the whole run, remove it when npe exits.
        atexit.register(shutil.rmtree, unpacked.root, True)
        bundle, calibration, limits = unpacked.bundle, unpacked.calibration, unpacked.limits
        if unpacked.array is not None:
            array = str(unpacked.array)
        if unpacked.implant is not None:
            implant = str(unpacked.implant)
        form = FormChoice(unpacked.run.form) if unpacked.run.form else None
        precision = Precision(unpacked.run.precision)
        camera_fov_deg = unpacked.run.camera_fov_deg
    elif prosthesis_mode() and not dev_unsigned:
        raise fail(
            "prosthesis mode: refusing unsigned input; give --package P (signed), or "
            "--dev-unsigned for a development run"
        )
    run_dir = log.parent if log is not None else default_run_dir()
    log_path = log if log is not None else run_dir / "audit.log"
    summary_path = summary_json if summary_json is not None else log_path.with_name("summary.json")
    try:
        spec = load_model_spec(bundle, expected_digest=expect_digest)
        fspec = spec.pick_form(form.value if form else None, precision.value)
        if source is None:
            source = "camera:0" if camera_opens(0) else "synthetic:bar"
            console.print(f"source: {source}")
        rt_note = set_rt_priority(rt_priority) if rt_priority else "normal scheduling"
        plan = SessionPlan(
            source=source,
            log_path=log_path,
            pacing=Pacing.AS_FAST_AS_POSSIBLE if as_fast_as_possible else Pacing.REAL_TIME,
            spin_us=spin_us,
            array=array,
            calibration=calibration,
            limits=limits,
            link=link,
            key_file=key_file,
            stimulator=stimulator,
            camera_fov_deg=camera_fov_deg,
            source_fps=source_fps,
            stall_timeout_ms=stall_timeout * 1000.0,
            implant=implant,
            implant_links=implant_links,
        )
        session = LiveSession(spec, fspec, SessionSettings(device.value, threads, spinning), plan)
        session.open()
    except expected as exc:
        raise fail(str(exc)) from None
    chain = session.chain
    digest = str(spec.extra.get("bundle_digest", ""))
    chain.audit.event(
        EVENT_BUNDLE_LOADED,
        f"{spec.extra.get('bundle', bundle or 'default')}: bundle digest {digest}"
        + (" (pinned by --expect-digest)" if expect_digest else ""),
    )
    if unpacked is not None:
        chain.audit.event(
            EVENT_PACKAGE_VERIFIED,
            f"{package}: key {unpacked.key_id}, manifest sha256 {unpacked.sha256}",
        )
    elif dev_unsigned:
        chain.audit.event(
            EVENT_DEV_UNSIGNED,
            f"unsigned inputs (bundle {bundle or 'default'}, "
            f"{'implant ' + implant if implant else 'array ' + array}, calibration "
            f"{calibration}, limits {limits}); prosthesis mode {prosthesis_mode()}",
        )
    prev = None
    if preview:
        from runtime.live_preview import PreviewThread, has_display

        video = None if has_display() else run_dir / "preview.avi"
        target, target_cal = chain.preview_target
        prev = PreviewThread(spec, target, target_cal, video)
        session.runtime.observer = prev.observe
    write_effective_config(log_path.parent, ctx)
    console.print(
        f"[bold]npe run[/bold] {spec.name} ({fspec.form}/{fspec.precision}, "
        f"{spec.frame_rate_hz:g} bins/s, window {spec.window_frames}) · "
        f"{session.source.name} → {chain.name} via {chain.link_spec} · log {log_path}"
        f" · bundle digest {digest}"
    )
    error: BaseException | None = None
    with session:
        try:
            if prev is not None:
                prev.start()
            with Live(
                StatusLine(session.runtime), console=console, refresh_per_second=4, transient=False
            ):
                session.run(duration_s=duration)
        except expected as exc:
            error = exc
        finally:
            if prev is not None:
                prev.stop()
    outcome = session.outcome
    summary = outcome.summary
    if error is not None or summary is None:
        console.line()  # end the status line
        raise fail(f"run stopped: {error}", code=ExitCode.CHECK_FAILED)
    summary.extra = RunContext(
        bundle=str(spec.extra.get("bundle", "")),
        model_sha256=spec.sha256,
        bundle_digest=str(spec.extra.get("bundle_digest", "")),
        array=chain.name,
        link=chain.link_spec,
        audit_log=str(log_path),
        session=session.engine.settings.as_dict(),  # type: ignore[arg-type]
        clock="virtual (as fast as possible)" if as_fast_as_possible else "real time",
        scheduling=rt_note,
        camera_fov_deg=camera_fov_deg,
        pipeline_events=outcome.pipeline_events,
        link_stats=outcome.link_stats,
        stimulator=outcome.stimulator,
        delivery=outcome.delivery,
        links=list(outcome.links),
        preview=(str(prev.video_path) if prev and prev.video_path else None),
        package=(
            {"path": str(package), "key_id": unpacked.key_id, "sha256": unpacked.sha256}
            if unpacked is not None
            else None
        ),
        dev_unsigned=dev_unsigned,
    )
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    print_summary(console, summary, {"audit log": log_path, "summary": summary_path})


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given (flag, or a --config file's key), not defaulted.

    By the source's name: typer may carry its own copy of click's ParameterSource enum."""
    src = ctx.get_parameter_source(name)
    return src is not None and src.name != "DEFAULT"


def _implant_flags_problem(
    ctx: typer.Context, implant: str | None, implant_links: bool, link: str | None
) -> str | None:
    """Why the implant flags cannot be used together (None: they can)."""
    if implant is None:
        return "--implant-links needs --implant" if implant_links else None
    if _given(ctx, "array"):
        return "--implant and --array exclude each other (an implant names its arrays)"
    if link is not None:
        return "--link is for one array; an implant's links are in its file (--implant-links)"
    return None


# `npe bench --checkpoint`'s PyTorch-eager timer. The runtime never imports torch or export,
# so the `npe` composition (npe_cli) plugs export's timer in; None: the option refuses.
_eager_timer: EagerTimer | None = None


def set_eager_timer(timer: EagerTimer | None) -> None:
    """Give `npe bench --checkpoint` its PyTorch-eager timer (npe_cli: export.bench_torch)."""
    global _eager_timer
    _eager_timer = timer


#: `npe bench --scale`'s builder of larger models' step bundles (export's, plugged in by
#: npe_cli for the same reason as the timer): (output dir, progress) → [(label, bundle)].
ScaleBundleBuilder = Callable[[Path, Callable[[str], None]], list[tuple[str, Path]]]
_scale_bundle_builder: ScaleBundleBuilder | None = None


def set_scale_bundle_builder(builder: ScaleBundleBuilder | None) -> None:
    """Give `npe bench --scale` the builder of its model rows' bundles (npe_cli: export)."""
    global _scale_bundle_builder
    _scale_bundle_builder = builder


@app.command("bench")
def bench_command(
    ctx: typer.Context,
    config_file: Path | None = config_option(),
    bundle: Path | None = typer.Option(None, help="Bundle directory (default: the shipped one)."),
    out: Path | None = typer.Option(
        None, help="Output directory (default: ./npe-bench/<time>/): bench.json, latency_hist.png."
    ),
    runs: int = typer.Option(1000, min=1, help="Timed inference runs per variant (after warm-up)."),
    warmup: int = typer.Option(100, min=0, help="Untimed warm-up runs per variant."),
    bins: int = typer.Option(10_000, min=0, help="End-to-end bins (0 skips the end-to-end part)."),
    source: str = typer.Option(
        "synthetic:noise", help="End-to-end source: FILE.mp4 | images:DIR | synthetic:KIND."
    ),
    checkpoint: Path | None = typer.Option(
        None, help="Run directory of the same model: adds PyTorch eager timings."
    ),
    threads: int = typer.Option(1, min=1, help="ONNX Runtime (and torch) intra-op threads."),
    spinning: bool = typer.Option(False, help="ORT session.intra_op.allow_spinning."),
    sweep: bool = typer.Option(False, help="Also measure threads {1,2} × spinning {off,on}."),
    realtime: bool = typer.Option(
        False, help="Pace the end-to-end run in real time (counts real dropped bins)."
    ),
    array: str = typer.Option(DEFAULT_ARRAY, help="Electrode array for the end-to-end run."),
    camera_fov_deg: float = typer.Option(60.0, help="Field of view of the source in degrees."),
    stimulator: SimulatorMode = typer.Option(
        SimulatorMode.PROCESS, help="Simulated stimulator for the end-to-end run."
    ),
    rt_priority: int = typer.Option(
        0, help="SCHED_FIFO priority 1-99 for the benchmark thread (0: off)."
    ),
    spin_us: float = typer.Option(
        0.0, min=0.0, help="With --realtime: busy-wait the last N µs before each bin."
    ),
    witness: bool = typer.Option(
        False,
        help="With --realtime: run an empty loop on each core beside it and say which late "
        "bins the machine caused (each witness uses ~1.3% of its core, measured).",
    ),
    scale: bool = typer.Option(
        False,
        help="Instead: the scaling table of mapping + safety for {96, 384, 1,024} electrodes × "
        "{2,048, 8,192, 32,768} rates beside the model step (scale.json).",
    ),
    scale_bins: int = typer.Option(1000, min=10, help="With --scale: timed bins per cell."),
    scale_models: bool = typer.Option(
        True,
        help="With --scale: also time a larger streaming and a cnn-lstm step bundle (built "
        "with untrained weights) beside the bundle, and say which fit a 10 ms bin.",
    ),
    paced_bins: int = typer.Option(
        500,
        min=0,
        help="Without --realtime: a paced check of N bins after the as-fast-as-possible run, "
        "for its delivery to the stimulator (0 skips it).",
    ),
    alloc_bins: int | None = typer.Option(
        None,
        min=0,
        help="Bins of the traced allocation pass after the timed runs (default 10,000, none "
        "with --bins 0; 0 skips it; else ≥ 2).",
    ),
) -> None:
    """Latency benchmark: inference alone, end to end, FLOPs vs matmul peak; table, JSON, PNG."""
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    from runtime.bench import run_benchmark
    from runtime.inference import SessionSettings
    from runtime.realtime import set_rt_priority
    from runtime.spec import load_model_spec

    expected = _expected_errors()
    if witness and not realtime:
        raise fail("--witness needs --realtime (as fast as possible nothing waits to wake up)")
    out_dir = (
        out if out is not None else Path("npe-bench") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    )
    if scale:
        _bench_scale(ctx, bundle, out_dir, scale_bins, scale_models)
        return
    try:
        spec = load_model_spec(bundle)
        scheduling = set_rt_priority(rt_priority) if rt_priority else "normal scheduling"
        with QuietProgress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as bar:
            task = bar.add_task("starting", total=None)
            report = run_benchmark(
                spec,
                out_dir,
                settings=SessionSettings("cpu", threads, spinning),
                runs=runs,
                warmup=warmup,
                bins=bins,
                source=source,
                checkpoint=checkpoint,
                eager_timer=_eager_timer,
                sweep=sweep,
                realtime=realtime,
                array=array,
                camera_fov_deg=camera_fov_deg,
                stimulator=stimulator.value,
                scheduling=scheduling,
                spin_us=spin_us,
                witness=witness,
                paced_bins=paced_bins,
                alloc_bins=(10_000 if bins > 0 else 0) if alloc_bins is None else alloc_bins,
                progress=lambda s: bar.update(task, description=s),
            )
    except expected as exc:
        raise fail(str(exc)) from None
    write_effective_config(out_dir, ctx)
    print_bench(report)
    console.print(f"JSON: {out_dir / 'bench.json'} · histogram: {out_dir / 'latency_hist.png'}")


def _bench_scale(
    ctx: typer.Context, bundle: Path | None, out_dir: Path, bins: int, models: bool
) -> None:
    """`npe bench --scale`: the mapping + safety scaling table and the model rows, printed
    and written as JSON."""
    import tempfile

    from runtime.bench.scale import print_scale, run_scale

    if models and _scale_bundle_builder is None:
        raise fail("--scale-models needs export's bundle builder, which only `npe` plugs in")
    try:
        with console.status("measuring") as status, tempfile.TemporaryDirectory() as tmp:
            say = lambda s: status.update(f"measuring {s}")  # noqa: E731
            rows: list[tuple[str, Path | None]] = [(str(bundle or "streaming (shipped)"), bundle)]
            if models:
                assert _scale_bundle_builder is not None
                rows += _scale_bundle_builder(Path(tmp), say)
            report = run_scale(bundle=bundle, bins=bins, progress=say, model_bundles=rows)
    except _expected_errors() as exc:
        raise fail(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scale.json").write_text(report.model_dump_json(indent=1), encoding="utf-8")
    write_effective_config(out_dir, ctx)
    print_scale(console, report)
    console.print(f"JSON: {out_dir / 'scale.json'}")


def print_bench(report: BenchReport) -> None:
    """The benchmark's rich tables (inference, end to end, delivery, allocations, targets)."""
    from rich.table import Table

    m = report.machine
    console.print(
        f"[bold]{report.model}[/bold] sha256 {report.model_sha256[:12]} · {m.cpu_model} · "
        f"{m.cores_available} cores · flags {' '.join(m.flags)} · ORT {m.versions.onnxruntime} · "
        f"{report.session} · {report.scheduling} · load avg {m.load_avg_1m or 0:.1f} · "
        f"live path {m.versions.live_path_form}"
    )
    tab = Table(title="inference alone (batch 1, ms per call)")
    for col in (
        "variant",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "calls/s",
        "MFLOP",
        "GFLOP/s",
        "% peak",
    ):
        tab.add_column(col, justify="right" if col != "variant" else "left")
    for r in report.inference:
        st = r.stats
        tab.add_row(
            r.name,
            *st.row(),
            f"{st.throughput_per_s:.0f}",
            f"{r.flops / 1e6:.2f}" if r.flops else "-",
            f"{st.gflops_achieved:.2f}" if st.gflops_achieved is not None else "-",
            f"{100 * st.fraction_of_peak:.1f}" if st.fraction_of_peak is not None else "-",
        )
    console.print(tab)
    peak = report.matmul_peak
    console.print(
        f"numpy float32 matmul peak on {peak.threads} thread(s): "
        f"{peak.gflops:.1f} GFLOP/s (FLOPs count Conv/MatMul/Gemm/LSTM only)"
    )
    for row in report.sweep:
        q = row.latency
        console.print(
            f"  sweep threads={row.intra_op_threads} spinning={row.allow_spinning}: "
            f"p50 {q.p50 or 0:.3f} ms, p99 {q.p99 or 0:.3f} ms"
        )
    for e2e in report.e2e_runs():
        _print_e2e(e2e, report.frame_rate_hz)
    al = report.allocations
    if al is not None:
        stages = ", ".join(
            f"{s.stage} {s.net_blocks_per_bin:.4f}" for s in al.by_stage if s.net_blocks_per_bin
        )
        console.print(
            f"allocations ({al.method}; {al.bins} and {al.short_bins} bins after "
            f"{al.warmup_bins}): {al.net_blocks_per_bin:.4f} net blocks per bin"
            + (f" ({stages})" if stages else "")
            + f"; largest transient {al.transient_peak_bytes} bytes"
        )
    for name, t in report.targets.measured():
        colour = "green" if t.met else "red"
        console.print(
            f"target {name}: [{colour}]{'met' if t.met else 'NOT met'}[/{colour}] {t.measured()}"
        )


def _print_e2e(e2e: EndToEnd, frame_rate_hz: float) -> None:
    """One end-to-end run: per-stage table, drops, delivery, stalls, witnesses."""
    from rich.table import Table

    run = e2e.run
    tab = Table(
        title=f"end to end ({run.bins_total} bins, {e2e.pacing}, {e2e.form}, "
        f"{e2e.source}, ms per bin)"
    )
    for col in ("stage", "p50", "p90", "p99", "p99.9", "max"):
        tab.add_column(col, justify="right" if col != "stage" else "left")
    for stage, q in run.latency_ms.items():
        tab.add_row(stage, *q.row())
    console.print(tab)
    console.print(
        f"dropped bins {run.counters.bins_dropped}, bins over the "
        f"{1000 / frame_rate_hz:.0f} ms period {run.bins_over_period}"
        + (f", host steal time {e2e.host_steal_s:.2f} s" if e2e.host_steal_s is not None else "")
    )
    console.print(e2e.delivery.line())
    if run.stalls:
        worst = max(run.stalls, key=lambda st: st.late_ms)
        console.print(
            f"{len(run.stalls)} bin(s) began more than half a period late; the worst "
            f"{worst.late_ms:.1f} ms late at {worst.t_s:.2f} s (list in bench.json "
            "'stalls'; --witness or benchmarks/latency/jitter.py tells the machine's share)"
        )
    wit = e2e.witness
    if wit is not None:
        att = wit.attribution
        cores = ", ".join(str(w.cpu) for w in wit.per_core)
        would = ", ".join(str(w.would_drop) for w in wit.per_core)
        console.print(
            f"witnesses (an empty loop at {frame_rate_hz:g} Hz on core(s) {cores}) "
            f"woke a whole period late {would} time(s); {att.matched} of "
            f"{att.stalls} late bin(s) fell in stalls they saw too "
            f"({att.expected_by_chance:.2f} expected by chance), "
            f"{att.dropped_bins_matched} of {att.dropped_bins} dropped bin(s)"
        )
