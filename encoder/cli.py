"""Command-line sub-app of `encoder`: data commands and model commands, composed."""

from __future__ import annotations

import typer

from encoder.cli_data import app as data_app
from encoder.cli_models import app as models_app

app = typer.Typer(no_args_is_help=True)
app.add_typer(data_app)
app.add_typer(models_app)
