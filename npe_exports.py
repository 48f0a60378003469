"""Explicit, lazily imported public APIs for the npe packages.

Each package's ``__init__`` names its public API in ``__all__`` (what a user or another package
should import) without importing it: the packages are imported by ``npe --help`` and by the
prosthesis computer's runtime, and importing every module eagerly would cost start-up time and,
for `encoder`, pull in torch. `lazy_exports` returns the module-level ``__getattr__`` and
``__dir__`` (PEP 562) that resolve a public name from its module on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__``/``__dir__`` for `package`, whose public names live in ``table``.

    ``table`` maps each public name to its module, relative to `package` (``"arrays"`` for
    ``hardware.arrays``).
    """

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(table)

    return __getattr__, __dir__
