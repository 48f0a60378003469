"""Each package states its public API in `__all__`, resolvable, and cheap to import."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("encoder", "export", "runtime", "hardware", "calibration")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_to_a_defined_object(package: str) -> None:
    mod = importlib.import_module(package)
    assert mod.__all__ == sorted(mod.__all__) and len(mod.__all__) >= 5
    for name in mod.__all__:
        obj = getattr(mod, name)
        assert obj is not None
        owner = getattr(obj, "__module__", None)
        if owner is not None and owner.startswith(PACKAGES):
            assert owner.split(".")[0] == package, f"{package}.{name} comes from {owner}"
    assert sorted(dir(mod)) == mod.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = mod.nope


def test_runtime_and_hardware_apis_and_the_recording_reader_do_not_load_torch() -> None:
    """The prosthesis computer has no torch: resolving these public names must not need it."""
    code = (
        "import sys, runtime, hardware, encoder\n"
        "[getattr(runtime, n) for n in runtime.__all__]\n"
        "[getattr(hardware, n) for n in hardware.__all__]\n"
        "encoder.read_recording, encoder.Recording\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
