"""`npe bench --checkpoint`: the PyTorch-eager timer lives in export and npe plugs it in.

Why tested: the timer moved out of `runtime/` (which never imports torch); the user-visible
command must still time the shipped checkpoint beside the shipped bundle it was exported from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_npe_bench_checkpoint_times_pytorch_eager(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    code = (
        "from npe_cli import app; app(['bench', '--checkpoint', "
        f"{str(ROOT / 'export' / 'default_checkpoint')!r}, '--runs', '5', '--warmup', '1', "
        f"'--bins', '0', '--out', {str(out)!r}])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    rows = {r["name"]: r for r in report["inference"]}
    assert rows["PyTorch eager window"]["stats"]["runs"] == 5
    assert rows["PyTorch eager window"]["settings"]["torch_threads"] == 1
    assert "ratio_p50" in report["targets"]["ort_vs_torch"]


def test_runtime_cli_alone_refuses_checkpoint_in_one_line(tmp_path: Path) -> None:
    # runtime.cli without the npe composition has no timer: one line, exit 2, no output dir.
    out = tmp_path / "bench"
    code = (
        "from runtime.cli import app; app(['bench', '--checkpoint', "
        f"{str(ROOT / 'export' / 'default_checkpoint')!r}, '--runs', '2', '--warmup', '0', "
        f"'--bins', '0', '--out', {str(out)!r}])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "PyTorch-eager timer" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
