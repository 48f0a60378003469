"""The shared failure path: one unwrapped, markup-free line; one error root; one exit-code table."""

from __future__ import annotations

import importlib
import inspect
import io
import pkgutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import npe_errors
from npe_cli import app
from npe_errors import ExitCode, NpeError, fail, one_line, print_error

PACKAGES = ("encoder", "export", "runtime", "hardware", "calibration")
#: Modules whose import needs an optional extra; skipped by the error-tree walk.
OPTIONAL = ("encoder.distributed",)
#: Exceptions that are control flow, not failures (a patient asking for a pause).
CONTROL_FLOW = {"calibration.responders.SessionPaused"}


def test_error_line_is_one_line_and_keeps_brackets_and_the_whole_path() -> None:
    out = io.StringIO()
    long_path = "/tmp/" + "x" * 300 + "/missing.npelog"
    print_error(f"{long_path}: shape [n_frames, height, width]\nexpected", stream=out)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text == f"error: {long_path}: shape [n_frames, height, width] expected\n"


def test_fail_prints_and_returns_the_exit_with_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    exc = fail("bad [thing]")
    assert isinstance(exc, typer.Exit) and exc.exit_code == ExitCode.BAD_INPUT == 2
    assert capsys.readouterr().err == "error: bad [thing]\n"
    assert fail("x", ExitCode.CHECK_FAILED).exit_code == 1
    assert one_line("  a \n\t b  ") == "a b"


def _package_modules() -> list[str]:
    names: list[str] = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        for info in pkgutil.walk_packages(mod.__path__, prefix=f"{pkg}."):
            if not info.name.startswith(OPTIONAL):
                names.append(info.name)
    return names


def test_every_error_class_of_every_package_derives_from_its_package_root() -> None:
    """A new exception outside the tree would end in a traceback instead of one line."""
    roots = {
        "encoder": "EncoderError",
        "export": "ExportPackageError",
        "runtime": "NpeRuntimeError",
        "hardware": "HardwareError",
        "calibration": "CalibrationPackageError",
    }
    checked = 0
    for name in _package_modules():
        module = importlib.import_module(name)
        pkg = name.split(".")[0]
        root = getattr(importlib.import_module(f"{pkg}.errors"), roots[pkg])
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            if f"{name}.{cls.__name__}" in CONTROL_FLOW:
                continue
            assert issubclass(cls, root), f"{name}.{cls.__name__} does not derive from {root}"
            assert issubclass(cls, NpeError)
            checked += 1
    assert checked >= 20


def test_no_package_prints_errors_through_rich_markup() -> None:
    """Errors go through npe_errors only: no module writes '[red]error' or defines a _fail."""
    offenders = []
    for pkg in PACKAGES:
        for path in Path(pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "[red]error" in text or "\ndef _fail(" in text:
                offenders.append(str(path))
    assert offenders == []


def test_cli_error_is_one_line_on_stderr_whatever_the_width(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120) / ("e" * 120)
    missing = deep / "missing.npelog"
    for columns in ("40", "80", "250"):
        res = CliRunner().invoke(app, ["log", "inspect", str(missing)], env={"COLUMNS": columns})
        assert res.exit_code == ExitCode.BAD_INPUT
        assert res.stderr == f"error: {missing}: no such audit log\n"


def test_exit_code_table_is_documented_in_the_readme() -> None:
    readme = Path("README.md").read_text(encoding="utf-8")
    for code in ExitCode:
        assert f"| {int(code)} |" in readme, f"exit code {int(code)} ({code.name}) undocumented"
    assert npe_errors.__doc__ is not None
