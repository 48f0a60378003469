"""The `npe` command: a thin composition of the sub-apps each package exposes.

Each package owns its commands (``encoder.cli``, ``export.cli``, ``runtime.cli``,
``hardware.cli``, ``calibration.cli``); this module only stitches them together so
that ``npe --help`` shows one flat list. Package CLIs import their heavy dependencies
(torch, onnxruntime) inside the commands, so ``npe --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ONNX Runtime (>= 1.2x) writes a device id and a telemetry database under
# ~/.cache/Microsoft/DeveloperTools on import, unless told not to: npe writes nothing it was
# not asked to (a refused file must leave the disk unchanged; a prosthesis computer keeps no
# vendor telemetry). Set before any package below imports onnxruntime; a user may override.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import typer
import typer.main

# typer vendors click (typer >= 0.29, pinned in pyproject); usage errors derive from this.
from typer._click.exceptions import ClickException

from calibration.cli import app as calibration_app
from encoder.cli import app as encoder_app
from export.bench_torch import bench_torch_eager
from export.cli import app as export_app
from hardware.cli import app as hardware_app
from npe_errors import NpeError, fail
from runtime.cli import app as runtime_app
from runtime.cli import set_eager_timer, set_scale_bundle_builder

app = typer.Typer(
    name="npe",
    help="Neuroprosthesis encoder: camera → retina model → cortical stimulation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for sub_app in (encoder_app, export_app, runtime_app, hardware_app, calibration_app):
    app.add_typer(sub_app)

config_app = typer.Typer(no_args_is_help=True, help="Configuration files of npe commands.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show_command(
    command: list[str] = typer.Argument(..., help="The command, e.g. run, train, calibrate map."),
    config_file: Path | None = typer.Option(
        None, "--config", help="Show the settings this TOML file gives (defaults otherwise)."
    ),
) -> None:
    """Print the effective configuration of COMMAND as TOML (its defaults, then --config FILE).

    The output is a valid ``--config`` file: save it, edit it, and pass it back.
    """
    from npe_config import accepts_config, default_settings, load_config_file, render_config

    cmd = _resolve_command(command)
    if not accepts_config(cmd):
        raise fail(f"npe {' '.join(command)} takes no --config")
    settings = default_settings(cmd)
    if config_file is not None:
        try:
            settings.update(load_config_file(config_file, cmd))
        except NpeError as exc:
            raise fail(exc) from None
    sys.stdout.write(render_config(cmd, "npe " + " ".join(command), settings))


def _resolve_command(words: list[str]) -> Any:
    """The click command `npe WORDS…` names, or a one-line refusal."""
    cmd: Any = typer.main.get_command(app)
    for i, word in enumerate(words):
        sub = getattr(cmd, "commands", {}).get(word)
        if sub is None:
            raise fail(f"npe {' '.join(words[: i + 1])}: no such command")
        cmd = sub
    if getattr(cmd, "commands", None):
        raise fail(f"npe {' '.join(words)} is a group; name one of its commands")
    return cmd


def main() -> None:
    """The `npe` entry point: `app`, with usage errors as one ``error:`` line too (exit code 2).

    Typer would draw a usage error (an unknown option, a value of the wrong type) as a boxed
    panel wrapped to the terminal's width; every other npe error is one line, so these are too.
    """
    try:
        code = app(standalone_mode=False)
    except ClickException as exc:
        from npe_errors import print_error

        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        print_error(f"{exc.format_message()}{hint}")
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


# `npe bench --checkpoint` times PyTorch eager with export's timer: the runtime may not
# import export or torch, so the composition plugs it in (torch loads only when it runs).
set_eager_timer(bench_torch_eager)


def _build_scale_bundles(out_dir: Path, progress: Callable[[str], None]) -> list[tuple[str, Path]]:
    """`npe bench --scale`'s model rows: export builds the bundles (torch loads only here)."""
    from export.scale_bundles import build_scale_bundles

    return build_scale_bundles(out_dir, progress=progress)


set_scale_bundle_builder(_build_scale_bundles)


if __name__ == "__main__":
    main()
