"""Command-line sub-app of the `export` package (composed into `npe` by npe_cli).

`npe export RUN_DIR --out BUNDLE_DIR` and `npe inspect BUNDLE_DIR`. Heavy libraries (torch,
onnx, onnxruntime) are imported inside the commands so `npe --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from npe_console import make_console
from npe_errors import NpeError, fail, print_warning

app = typer.Typer(no_args_is_help=True)


def _console(stderr: bool = False) -> Console:
    """The shared layout: rich's own on a terminal, a fixed wide one in a pipe."""
    return make_console(stderr=stderr)


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
        raise fail("--int8 needs --calibration-data FILE (.npz windows or a recording .h5)", 2)
    if calibration_data is not None and not int8:
        raise fail("--calibration-data is only used with --int8", 2)

    from export.exporter import ExportOptions, export_bundle
    from export.source import load_source

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
        except NpeError as exc:
            raise fail(str(exc)) from None
    report = json_out or out.parent / f"{out.name}.export.json"
    report.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    from export.inspect_view import manifest_tables
    from runtime.bundle import load_bundle

    _console().print(manifest_tables(load_bundle(out)))
    q = manifest.parity.int8
    if q is not None and q.file is None:
        print_warning(
            f"INT8 model not written: mean PCC dropped by {q.pcc_drop:.4f} "
            f"(> {q.max_pcc_drop}) on the test split"
        )
    console.print(f"[green]bundle written to {out}[/green]; report {report}")


@app.command("inspect")
def inspect_command(
    bundle_dir: Path = typer.Argument(..., help="bundle directory"),
    as_json: bool = typer.Option(False, "--json", help="print the verified manifest as JSON"),
) -> None:
    """Verify a bundle (every hash, model signatures, metadata) and show its manifest."""
    from runtime.bundle import load_bundle

    console = _console()
    try:
        bundle = load_bundle(bundle_dir, verify=True)
    except NpeError as exc:
        raise fail(f"bundle refused: {exc}") from None
    if as_json:
        payload = {
            "verified": True,
            "path": str(bundle.path),
            "manifest": bundle.manifest.model_dump(mode="json"),
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    from export.inspect_view import manifest_tables

    console.print(manifest_tables(bundle))
