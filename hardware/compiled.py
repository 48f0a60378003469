"""Which form the live path's per-bin work runs in: compiled by numba, or numpy.

Why a switch: the kernel (`hardware.kernel`), the wire encoder (`hardware.wire`) and the
audit log's frame records (`hardware.audit`) each have a numpy form and a compiled form
(`hardware.fused_kernel`, `hardware.fused_codec`) that produce the same bits; the compiled
form is ~30 numpy calls fewer per bin, which is what the live path's budget needs (issue 17).
The numpy form stays: it is what runs where numba cannot load, and the tests run both forms
against the same references. Loaded on first use, so processes that never map or send a
frame never import numba.
"""

from __future__ import annotations

import os
from types import ModuleType

#: Use the compiled form where it loads; `NPE_COMPILED=0` in the environment runs the numpy
#: form (an A/B comparison, or a machine where numba misbehaves). Tests set it directly.
PREFER_COMPILED = os.environ.get("NPE_COMPILED", "1").strip() != "0"

#: Why the compiled form is not in use, when it could not load (None: not tried, or loaded).
UNAVAILABLE: str | None = None

#: Transient bytes a compiled call allocates and frees inside itself: numba's dispatcher makes
#: a small bytes key per array argument to look up its type (≈ 670 B per kernel bin measured
#: with numba 0.68 for utah96). Net allocation stays zero; the allocation tests allow this.
DISPATCH_SCRATCH_BYTES = 1024

_modules: dict[str, ModuleType | None] = {}


def _load(name: str) -> ModuleType | None:
    global UNAVAILABLE
    if name not in _modules:
        try:
            _modules[name] = __import__(f"hardware.{name}", fromlist=["_"])
        except Exception as exc:  # no numba, or it cannot compile here: numpy serves
            UNAVAILABLE = f"{type(exc).__name__}: {exc}"
            _modules[name] = None
    return _modules[name]


def kernel_module(prefer: bool | None = None) -> ModuleType | None:
    """hardware.fused_kernel (its import compiles the kernel or loads it from numba's cache),
    or None: the numpy form. prefer: None follows PREFER_COMPILED."""
    if not (PREFER_COMPILED if prefer is None else prefer):
        return None
    return _load("fused_kernel")


def codec_module() -> ModuleType | None:
    """hardware.fused_codec (wire records and audit entries), or None: the numpy form."""
    if not PREFER_COMPILED:
        return None
    return _load("fused_codec")


def describe() -> str:
    """One line for reports: which form runs, and why when it is numpy."""
    if not PREFER_COMPILED:
        return "numpy (compiled form switched off: NPE_COMPILED=0)"
    mod = _load("fused_kernel")
    if mod is None:
        return f"numpy (numba unavailable: {UNAVAILABLE})"
    import numba

    return f"compiled (numba {numba.__version__})"
