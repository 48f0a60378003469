"""`npe bench`: the offline latency benchmark of a bundle — a user job, not the live path.

Why a subpackage: the top level of `runtime/` is what runs on the prosthesis computer;
the benchmark, its FLOP counter and its wake-up witnesses are tools around it. Like all of
`runtime`, nothing here imports torch: the PyTorch-eager comparison is `export.bench_torch`,
handed to `run_benchmark` as `eager_timer` (the `npe` composition does that for `--checkpoint`).

    timing   the clock and result type shared with export's PyTorch timer
    report   the parts (inference alone, end to end, allocations, FLOPs vs matmul peak),
             targets, JSON/PNG
    models   the typed report (`BenchReport`, schema npe.bench/2), read back with its own JSON
    allocations  net Python allocations per bin of the live loop (tracemalloc, two passes)
    flops    FLOPs per ONNX call (Conv/MatMul/Gemm/LSTM)
    witness  empty-loop processes that tell the machine's stalls from the runtime's own
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.bench.models import BenchReport
    from runtime.bench.report import evaluate_targets, host_steal_s, run_benchmark
    from runtime.bench.timing import BenchError, EagerTimer, InferenceResult, time_calls
    from runtime.bench.witness import WitnessError

# Loaded on first use (PEP 562), not here: each witness runs as `python -m
# runtime.bench.witness` and must start with nothing but its own small module (no
# onnxruntime, and no runpy warning about a module imported before it runs).
_WHERE = {
    "BenchReport": "models",
    "BenchError": "timing",
    "EagerTimer": "timing",
    "InferenceResult": "timing",
    "time_calls": "timing",
    "WitnessError": "witness",
    "evaluate_targets": "report",
    "host_steal_s": "report",
    "run_benchmark": "report",
}

__all__ = [
    "BenchError",
    "BenchReport",
    "EagerTimer",
    "InferenceResult",
    "WitnessError",
    "evaluate_targets",
    "host_steal_s",
    "run_benchmark",
    "time_calls",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"runtime.bench.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'runtime.bench' has no attribute {name!r}")
