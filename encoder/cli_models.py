"""Commands of `encoder` (models); composed into `npe` through encoder.cli."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
