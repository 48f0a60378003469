"""`npe config show COMMAND`: the defaults a command declares, then what a --config file changes."""

from __future__ import annotations

import tomllib
from pathlib import Path

from typer.testing import CliRunner

from npe_cli import app

runner = CliRunner()


def test_show_prints_declared_defaults_as_a_readable_config() -> None:
    res = runner.invoke(app, ["config", "show", "run"])
    assert res.exit_code == 0, res.output
    shown = tomllib.loads(res.stdout)
    assert shown["array"] == "utah96" and shown["stimulator"] == "process"
    assert "config" not in shown  # the option itself is not a setting


def test_show_applies_a_file_and_names_bad_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "patient.toml"
    cfg.write_text("duration = 12.5\n[ignored]\n")
    res = runner.invoke(app, ["config", "show", "run", "--config", str(cfg)])
    assert res.exit_code == 2 and "unknown setting 'ignored' for npe run" in res.stderr
    cfg.write_text("duration = { seconds = 3 }\n")
    res = runner.invoke(app, ["config", "show", "run", "--config", str(cfg)])
    assert res.exit_code == 2 and "duration: expected a value, got a table" in res.stderr
    cfg.write_text('duration = 12.5\nlimits = "/etc/npe/limits.json"\n')
    res = runner.invoke(app, ["config", "show", "run", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    shown = tomllib.loads(res.stdout)
    assert shown["duration"] == 12.5 and shown["limits"] == "/etc/npe/limits.json"
    cfg.write_text("duration = -1\n")  # below the option's declared minimum, as for a flag
    res = runner.invoke(app, ["config", "show", "run", "--config", str(cfg)])
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {cfg}: duration")


def test_show_refuses_groups_unknown_commands_and_commands_without_config() -> None:
    for words, needle in (
        (["calibrate"], "is a group"),
        (["teleport"], "no such command"),
        (["export"], "takes no --config"),
    ):
        res = runner.invoke(app, ["config", "show", *words])
        assert res.exit_code == 2 and needle in res.stderr, res.output
    for words in (["bench"], ["train"], ["calibrate", "threshold"], ["calibrate", "map"]):
        assert runner.invoke(app, ["config", "show", *words]).exit_code == 0
