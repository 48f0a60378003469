"""Configuration files for `npe` commands: ``--config FILE.toml``, flags override, effective config.

A clinician keeps a patient's run setup and a researcher an experiment's training setup in one
TOML file instead of a line of 20 flags. The file's keys are the command's own option names (as
``npe COMMAND --help`` shows them, with ``-`` or ``_``); its values fill the options the command
line did not give, through click's ``default_map``, so the command's declared default, its type
conversion and its range checks stay the one definition of each setting. An unknown key, a
value of the wrong type or an unreadable file is refused in one line before the command runs.

Every command that accepts ``--config`` writes its *effective* configuration (file, then flags,
then defaults) beside its results with `write_effective_config`, and ``npe config show COMMAND
[--config FILE]`` prints what a run would use.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import tomli_w
import typer
from typer.core import TyperOption

from npe_errors import NpeError, fail

__all__ = [
    "CONFIG_FILE_NAME",
    "ConfigFileError",
    "accepts_config",
    "config_option",
    "default_settings",
    "effective_config",
    "load_config_file",
    "render_config",
    "write_effective_config",
]

#: File name of the effective configuration written beside a command's results.
CONFIG_FILE_NAME = "npe-config.toml"
#: A configuration file is a few hundred bytes; anything far larger is not one.
MAX_CONFIG_BYTES = 1 << 20
#: Longest string value accepted (a path or a link address is far shorter).
MAX_CONFIG_STRING = 4096
#: Parameters that are not settings (the config option itself, help).
_NOT_SETTINGS = frozenset({"config_file", "help"})


class ConfigFileError(NpeError, ValueError):
    """A configuration file that cannot be read or does not fit its command."""


def setting_key(param: Any) -> str:
    """A setting's key in a file: the option's long flag without dashes (``--limits`` → limits)."""
    for opt in param.opts:
        if opt.startswith("--"):
            return str(opt[2:])
    return str(param.name).replace("_", "-")


def read_config_toml(path: Path) -> dict[str, Any]:
    """Read a TOML configuration file as untrusted input: a regular file under the size
    limit, UTF-8, parsed without a traceback whatever it holds (tomllib recurses on nested
    arrays and inline tables, so a file nested 100,000 deep would end in RecursionError)."""
    from hardware.untrusted_json import UntrustedFileError, read_untrusted_text

    try:
        text = read_untrusted_text(path, "configuration file", MAX_CONFIG_BYTES)
    except UntrustedFileError as exc:
        raise ConfigFileError(str(exc)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigFileError(f"{path}: TOML nested too deeply; refused") from None


def _toml_kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _check_toml_type(path: Path, key: str, param: Any, raw: Any) -> None:
    """Strict types: a TOML value must already be of the option's kind. Why: click converts
    leniently ("no" becomes False for a flag, 1.0 a path "1.0"), so a file that says
    ``preview = "no"`` or ``limits = 1`` would run with a setting nobody wrote."""
    kind = _option_kind(param)
    many = kind.startswith("list:")
    if isinstance(raw, list) and not many:
        raise ConfigFileError(f"{path}: {key}: expected one value, got an array")
    kind = kind.removeprefix("list:")
    for v in raw if many and isinstance(raw, list) else [raw]:
        if kind == "bool":
            ok = isinstance(v, bool)
            want = "a boolean (true or false)"
        elif kind == "int":
            ok = isinstance(v, int) and not isinstance(v, bool)
            want = "an integer"
        elif kind == "float":
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            want = "a finite number"
        else:
            ok = isinstance(v, str) and len(v) <= MAX_CONFIG_STRING
            want = f"a string of at most {MAX_CONFIG_STRING} characters"
        if not ok:
            raise ConfigFileError(f"{path}: {key}: expected {want}, got {_toml_kind(v)}")


def _option_kind(param: Any) -> str:
    """bool, int, float or str (paths, enums, text), prefixed "list:" for repeated options."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", str)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is not list and len(args) == 1:
        annotation = args[0]  # X | None
    if get_origin(annotation) is list:
        inner = get_args(annotation)
        return "list:" + _scalar_kind(inner[0] if inner else str)
    return _scalar_kind(annotation)


def _scalar_kind(annotation: Any) -> str:
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return "str"


def _settings_params(command: Any) -> dict[str, Any]:
    """The command's settings by key (`setting_key`)."""
    return {
        setting_key(p): p
        for p in command.params
        if p.name is not None and p.name not in _NOT_SETTINGS and not p.hidden
    }


def load_config_file(path: Path, command: Any, ctx: typer.Context | None = None) -> dict[str, Any]:
    """Read `path` (TOML) as settings of `command`: keys checked, values converted and checked.

    Keys are the options' long flags without the dashes (``stall-timeout`` for
    ``--stall-timeout``; ``stall_timeout`` is accepted too). Returns ``{parameter name: value}``. A table ``[npe.<command>]`` may hold the settings so that
    one file can serve several commands; otherwise the top level is the command's table.
    """
    data = read_config_toml(path)
    table: Any = data
    name = command.name or ""
    section = data.get("npe")
    if isinstance(section, dict) and isinstance(section.get(name), dict):
        table = section[name]
    params = _settings_params(command)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        param = params.get(key) or params.get(key.replace("_", "-"))
        if param is None:
            known = ", ".join(sorted(params))
            raise ConfigFileError(
                f"{path}: unknown setting {key!r} for npe {name} (known: {known})"
            )
        if isinstance(raw, dict):
            raise ConfigFileError(f"{path}: {key}: expected a value, got a table")
        if not isinstance(param, TyperOption):
            raise ConfigFileError(
                f"{path}: {key}: a positional argument; give it on the command line"
            )
        _check_toml_type(path, key, param, raw)
        if getattr(param, "multiple", False) and not isinstance(raw, list):
            raw = [raw]  # a repeatable option (`npe train --data`) given one value
        try:
            # The option's own conversion and range checks, as for a value typed as a flag.
            param.process_value(ctx if ctx is not None else typer.Context(command), raw)
        except typer.BadParameter as exc:
            raise ConfigFileError(f"{path}: {key}: {exc.format_message()}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigFileError(f"{path}: {key}: {exc}") from None
        values[param.name] = raw
    return values


def _apply_config(ctx: typer.Context, _param: Any, value: Path | None) -> Path | None:
    """Eager callback of ``--config``: the file's settings become the other options' defaults."""
    if value is None:
        return None
    try:
        settings = load_config_file(value, ctx.command, ctx)
    except ConfigFileError as exc:
        raise fail(exc) from None
    ctx.default_map = {**(ctx.default_map or {}), **settings}
    return value


def config_option() -> Any:
    """The ``--config FILE.toml`` option; declare it first so that it is read before the others."""
    return typer.Option(
        None,
        "--config",
        help="TOML file of this command's settings (keys are the option names); flags override.",
        is_eager=True,
        callback=_apply_config,
        dir_okay=False,
    )


def accepts_config(command: Any) -> bool:
    """Whether `command` declares the ``--config`` option."""
    return any(p.name == "config_file" for p in command.params)


def default_settings(command: Any) -> dict[str, Any]:
    """Every setting of `command` at its declared default (required ones left out)."""
    ctx = typer.Context(command)
    out: dict[str, Any] = {}
    for param in _settings_params(command).values():
        if isinstance(param, TyperOption) and not param.required:
            out[param.name] = param.get_default(ctx)
    return out


def _toml_value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_toml_value(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, int | float | str | bool):
        return value.value  # enums
    return value


def effective_config(command: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as TOML-ready values by key; unset options (None) are left out (TOML has no
    null), and so are positional arguments, which a config file cannot give."""
    keys = {p.name: setting_key(p) for p in _settings_params(command).values()}
    return {
        keys[k]: _toml_value(_one_or_many(_by_name(command, k), v))
        for k, v in sorted(params.items())
        if v is not None and k in keys and isinstance(_by_name(command, k), TyperOption)
    }


def _one_or_many(param: Any, value: Any) -> Any:
    """A repeatable option given once is written as its one value (it reads back the same)."""
    if getattr(param, "multiple", False) and isinstance(value, tuple | list) and len(value) == 1:
        return value[0]
    return value


def _by_name(command: Any, name: str) -> Any:
    return next(p for p in command.params if p.name == name)


def render_config(command: Any, title: str, params: Mapping[str, Any]) -> str:
    """The effective configuration as a TOML document that ``--config`` reads back."""
    header = f"# Effective configuration of `{title}` (re-run with --config THIS_FILE).\n"
    return header + tomli_w.dumps(effective_config(command, params))


def write_effective_config(
    directory: Path, ctx: typer.Context, file_name: str = CONFIG_FILE_NAME
) -> Path:
    """Write the configuration `ctx`'s command runs with to ``directory/file_name``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name
    path.write_text(render_config(ctx.command, ctx.command_path, ctx.params), encoding="utf-8")
    return path
