"""Command-line sub-app of the `calibration` package (composed into `npe` by npe_cli)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
