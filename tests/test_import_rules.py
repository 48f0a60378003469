"""ARCHITECTURE.md's import rules, as `lint-imports` checks them (contracts in pyproject.toml).

Why tested: a contract that can never fail checks nothing. Each case copies the five
packages' sources into a temporary directory, plants one violation (lazy imports inside a
function included, and an indirect one through another module) and asserts `lint-imports`
fails naming the broken rule; the untouched copy must pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("encoder", "export", "runtime", "hardware", "calibration")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_sources(dest: Path) -> None:
    """The packages' .py files, npe_cli.py and pyproject.toml (no data files, no caches)."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [
            n
            for n in names
            if n == "__pycache__" or (not n.endswith(".py") and not (Path(folder) / n).is_dir())
        ]

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=ignore)
    shutil.copy2(ROOT / "npe_cli.py", dest / "npe_cli.py")
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, ahead of the editable install of the real tree.
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _contract(prefix: str) -> str:
    """The full name of the one contract in pyproject.toml whose name starts with prefix."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = [c["name"] for c in conf["tool"]["importlinter"]["contracts"]]
    match = [n for n in names if n.startswith(prefix)]
    assert len(match) == 1, (prefix, names)
    return match[0]


def _verdict(proc: subprocess.CompletedProcess[str], contract: str) -> str:
    """KEPT or BROKEN for one contract (lint-imports wraps long lines: whitespace joined)."""
    text = " ".join(proc.stdout.split())
    for verdict in ("KEPT", "BROKEN"):
        if f"{contract} {verdict}" in text:
            return verdict
    raise AssertionError(f"no verdict for {contract!r} in {proc.stdout[-3000:]}")


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("contracts")
    _copy_sources(dest)
    return dest


def test_the_tree_keeps_every_contract(clean_copy: Path) -> None:
    proc = _lint(clean_copy)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout
    assert _verdict(proc, _contract("nothing imports npe_cli")) == "KEPT"


VIOLATIONS = [
    # (file to write, its code, the contract that must break)
    (
        "runtime/bench/planted.py",
        "def time_it() -> None:\n    import torch  # lazy, still a violation\n",
        "runtime (all of it, bench included) never imports torch",
    ),
    (
        "runtime/planted.py",
        "from export import bench_torch\n",
        "runtime (all of it, bench included) never imports torch",
    ),
    (
        "hardware/planted.py",
        "import runtime.spec\n",
        "hardware is the leaf",
    ),
    (
        "encoder/planted.py",
        "from calibration import frames\n",
        "encoder never imports runtime, export or calibration",
    ),
    (
        "calibration/planted.py",
        "from encoder.models import base\n",  # encoder's models import torch: indirect
        "calibration imports neither torch",
    ),
    (
        "export/planted.py",
        "def compose() -> None:\n    import npe_cli\n",
        "nothing imports npe_cli",
    ),
]


@pytest.mark.parametrize(("rel", "code", "contract"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_a_planted_violation_is_caught(tmp_path: Path, rel: str, code: str, contract: str) -> None:
    _copy_sources(tmp_path)
    (tmp_path / rel).write_text(code, encoding="utf-8")
    proc = _lint(tmp_path)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert _verdict(proc, _contract(contract)) == "BROKEN"
    assert "planted" in proc.stdout  # the report names the offending module


def test_recording_reader_must_stay_torch_free(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    rec = tmp_path / "encoder" / "recording.py"
    rec.write_text(rec.read_text(encoding="utf-8") + "\n\ndef _x() -> None:\n    import torch\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert _verdict(proc, _contract("the recording reader")) == "BROKEN"
    assert _verdict(proc, _contract("hardware is the leaf")) == "KEPT"
