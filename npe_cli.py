"""The `npe` command: a thin composition of the sub-apps each package exposes.

Each package owns its commands (``encoder.cli``, ``export.cli``, ``runtime.cli``,
``hardware.cli``, ``calibration.cli``); this module only stitches them together so
that ``npe --help`` shows one flat list. Package CLIs import their heavy dependencies
(torch, onnxruntime) inside the commands, so ``npe --help`` stays fast.
"""

from __future__ import annotations

import typer

from calibration.cli import app as calibration_app
from encoder.cli import app as encoder_app
from export.bench_torch import bench_torch_eager
from export.cli import app as export_app
from hardware.cli import app as hardware_app
from runtime.cli import app as runtime_app
from runtime.cli import set_eager_timer

app = typer.Typer(
    name="npe",
    help="Neuroprosthesis encoder: camera → retina model → cortical stimulation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for sub_app in (encoder_app, export_app, runtime_app, hardware_app, calibration_app):
    app.add_typer(sub_app)

# `npe bench --checkpoint` times PyTorch eager with export's timer: the runtime may not
# import export or torch, so the composition plugs it in (torch loads only when it runs).
set_eager_timer(bench_torch_eager)


if __name__ == "__main__":
    app()
