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
    session: str | None = typer.Option(
        None,
        "--session",
        help="multi-session checkpoint: the session whose cells to export "
        "(rate-map models' maps need none)",
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
            source = load_source(run_dir, session)
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
    expect_digest: str | None = typer.Option(
        None,
        "--expect-digest",
        help="refuse the bundle unless its bundle digest (what a deployment package signs) is this",
    ),
) -> None:
    """Verify a bundle (manifest digest, every hash, parity, model signatures, metadata), show it."""
    from runtime.bundle import bundle_digest, load_bundle

    console = _console()
    try:
        bundle = load_bundle(bundle_dir, verify=True, expected_digest=expect_digest)
        digest = bundle_digest(bundle_dir)
    except NpeError as exc:
        raise fail(f"bundle refused: {exc}") from None
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


deploy_app = typer.Typer(
    no_args_is_help=True, help="Signed deployment packages: keygen, build, verify, revoke."
)
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("keygen")
def deploy_keygen(
    out: Path = typer.Option(..., "--out", help="directory for <key_id>.key and <key_id>.pub"),
) -> None:
    """Make an Ed25519 signing key pair (private key mode 0600; copy the .pub to trusted keys)."""
    from runtime.package import PackageError, generate_keypair

    try:
        kid = generate_keypair(out)
    except PackageError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"key {kid}: {out / (kid + '.key')} (secret), {out / (kid + '.pub')} (public)")


@deploy_app.command("build")
def deploy_build(
    ctx: typer.Context,
    bundle: Path = typer.Option(..., "--bundle", help="bundle directory"),
    array: str = typer.Option("utah96", "--array", help="electrode array name or file"),
    implant: str | None = typer.Option(
        None, "--implant", help="implant name or file, instead of --array (issue 17)"
    ),
    limits: Path | None = typer.Option(
        None, "--limits", help="safety limits file (default: built-in)"
    ),
    calibration: Path | None = typer.Option(None, "--calibration", help="patient calibration file"),
    key: Path = typer.Option(..., "--key", help="Ed25519 private key (.key from keygen)"),
    out: Path = typer.Option(..., "--out", help="package file to write (.npepkg)"),
    form: str | None = typer.Option(None, help="step | window for the run (default: step)"),
    precision: str = typer.Option("fp32", help="fp32 | int8 for the run"),
    camera_fov_deg: float = typer.Option(60.0, help="camera field of view for the run"),
) -> None:
    """Check every part with the runtime's loaders, sign, and write one package archive."""
    from pydantic import ValidationError

    from export.deploy import build_package
    from hardware.arrays import ArrayError
    from hardware.calibration_file import CalibrationError
    from hardware.pipeline import PipelineConfigError
    from hardware.safety import SafetyConfigError
    from runtime.bundle import BundleError
    from runtime.package import RunConfig

    src = ctx.get_parameter_source("array")
    if implant is not None and src is not None and src.name != "DEFAULT":
        raise fail("--implant and --array exclude each other (an implant names its arrays)", 2)
    try:
        run = RunConfig(form=form, precision=precision, camera_fov_deg=camera_fov_deg)
        manifest = build_package(
            bundle, None if implant else array, limits, calibration, key, out, run, implant
        )
    except ValidationError as exc:
        raise fail(f"run configuration refused: {exc.errors()[0]['msg']}", 2) from None
    except (
        BundleError,
        ArrayError,
        CalibrationError,
        PipelineConfigError,
        SafetyConfigError,
        ValueError,
    ) as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"package written to {out} ({len(manifest.members)} members, signed)")


@deploy_app.command("verify")
def deploy_verify(
    package: Path = typer.Argument(..., help="package file"),
    keys: Path | None = typer.Option(
        None,
        "--keys",
        help="trusted key directory (default: $NPE_TRUSTED_KEYS or ~/.config/npe/trusted_keys)",
    ),
) -> None:
    """Verify signature, key trust and revocation, and every member, then load the contents."""
    import shutil

    from runtime.package import extract_package

    try:
        ext = extract_package(package, keys)
    except ValueError as exc:
        raise fail(f"package refused: {exc}", 2) from None
    shutil.rmtree(ext.root, ignore_errors=True)
    typer.echo(f"{package}: OK, signed by {ext.key_id}, manifest sha256 {ext.sha256[:16]}")


@deploy_app.command("revoke")
def deploy_revoke(
    key_id: str = typer.Argument(..., help="key id (16 hex digits) to revoke"),
    keys: Path = typer.Option(..., "--keys", help="trusted key directory holding revoked.json"),
) -> None:
    """Add a key id to the directory's revocation list; packages it signed are then refused."""
    from runtime.package import PackageError, revoke_key

    try:
        path = revoke_key(key_id, keys)
    except PackageError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"key {key_id} revoked in {path}")
