"""Command-line sub-app of the `export` package (composed into `npe` by npe_cli).

`npe export RUN_DIR --out BUNDLE_DIR` and `npe inspect BUNDLE_DIR`. Heavy libraries (torch,
onnx, onnxruntime) are imported inside the commands so `npe --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)


def _console(stderr: bool = False) -> Console:
    """A console; 160 columns when not on a terminal, so piped tables stay readable."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=160)


def _fail(console: Console, message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(
        ..., help="checkpoint run directory (model.safetensors + checkpoint.json)"
    ),
    out: Path = typer.Option(..., "--out", help="bundle directory to write"),
    int8: bool = typer.Option(False, "--int8", help="also write a static INT8 (QDQ) model"),
    calibration_data: Path | None = typer.Option(
        None, "--calibration-data", help="INT8 calibration windows (.npz) or a recording (.h5)"
    ),
    ort: bool = typer.Option(
        False, "--ort", help="also write ORT-format models (minimal ONNX Runtime builds)"
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="recording (.h5) or windows (.npz) for the real-data parity check "
        "(default: the checkpoint's training data, if present)",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace an existing bundle directory"
    ),
    json_out: Path | None = typer.Option(
        None,
        "--json",
        help="also write the export report (the manifest) here; default BUNDLE_DIR/../<name>.export.json",
    ),
) -> None:
    """Export a trained model to a verified ONNX bundle (model.onnx + manifest.json)."""
    console = _console(stderr=True)
    if int8 and calibration_data is None:
        raise _fail(
            console, "--int8 needs --calibration-data FILE (.npz windows or a recording .h5)", 2
        )
    if calibration_data is not None and not int8:
        raise _fail(console, "--calibration-data is only used with --int8", 2)

    from export.exporter import ExportOptions, export_bundle
    from export.source import ExportError, load_source
    from runtime.bundle import BundleError

    with console.status("loading checkpoint") as status:
        try:
            source = load_source(run_dir)
            options = ExportOptions(
                data=data, int8_calibration=calibration_data, ort=ort, overwrite=overwrite
            )

            def progress(msg: str) -> None:
                status.update(msg)
                console.log(msg)

            manifest = export_bundle(source, out, options, progress=progress)
        except (ExportError, BundleError) as exc:
            raise _fail(console, str(exc)) from None
    report = json_out or out.parent / f"{out.name}.export.json"
    report.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    from export.inspect_view import manifest_tables
    from runtime.bundle import load_bundle

    _console().print(manifest_tables(load_bundle(out)))
    q = manifest.parity.int8
    if q is not None and q.file is None:
        console.print(
            f"[yellow]INT8 model not written: mean PCC dropped by {q.pcc_drop:.4f} "
            f"(> {q.max_pcc_drop}) on the test split"
        )
    console.print(f"[green]bundle written to {out}[/green]; report {report}")


@app.command("inspect")
def inspect_command(
    bundle_dir: Path = typer.Argument(..., help="bundle directory"),
    as_json: bool = typer.Option(False, "--json", help="print the verified manifest as JSON"),
    expect_digest: str | None = typer.Option(
        None,
        "--expect-digest",
        help="refuse the bundle unless its bundle digest (what a deployment package signs) is this",
    ),
) -> None:
    """Verify a bundle (manifest digest, every hash, parity, model signatures, metadata), show it."""
    from runtime.bundle import BundleError, bundle_digest, load_bundle

    console = _console()
    try:
        bundle = load_bundle(bundle_dir, verify=True, expected_digest=expect_digest)
        digest = bundle_digest(bundle_dir)
    except BundleError as exc:
        raise _fail(_console(stderr=True), f"bundle refused: {exc}", code=2) from None
    if as_json:
        payload = {
            "verified": True,
            "path": str(bundle.path),
            "bundle_digest": digest,
            "manifest": bundle.manifest.model_dump(mode="json"),
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    from export.inspect_view import manifest_tables

    console.print(manifest_tables(bundle))
    console.print(f"bundle digest (sha256): {digest}")
