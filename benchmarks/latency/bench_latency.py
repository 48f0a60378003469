"""Latency benchmark of the runtime (issue 5 targets), a thin driver of `npe bench`.

    python benchmarks/latency/bench_latency.py [npe bench options...]

Defaults: the shipped default bundle with PyTorch eager timings of the shipped checkpoint
it was exported from (export/default_checkpoint), 1000 timed inference runs per form after 100 of
warm-up, the thread/spinning sweep, and 10 000 end-to-end bins from a synthetic noise scene
through the utah96 pipeline and the UDP link to a simulated stimulator. Results go to
benchmarks/latency/results/ (bench.json, latency_hist.png) and are printed as rich tables
with the targets (e2e p99 ≤ 5 ms with 0 dropped over 10 000 bins; ORT ≥ 2× PyTorch eager
with --checkpoint; streaming step ≥ 5× cheaper than the full window).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `npe` itself (not runtime.cli's sub-app): the composition plugs export's PyTorch timer
# into `bench --checkpoint`.
from npe_cli import app

HERE = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = HERE.parents[1] / "export" / "default_checkpoint"


def main(argv: list[str]) -> None:
    args = list(argv)
    if "--out" not in args:
        args += ["--out", str(HERE / "results")]
    if "--sweep" not in args and "--no-sweep" not in args:
        args.append("--sweep")
    if "--bundle" not in args and "--checkpoint" not in args and DEFAULT_CHECKPOINT.is_dir():
        # The shipped checkpoint the default bundle was exported from: PyTorch eager timing.
        args += ["--checkpoint", str(DEFAULT_CHECKPOINT)]
    app(["bench", *args], standalone_mode=True)


if __name__ == "__main__":
    main(sys.argv[1:])
