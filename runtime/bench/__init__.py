"""`npe bench`: the offline latency benchmark of a bundle — a user job, not the live path.

Why a subpackage: the top level of `runtime/` is what runs on the prosthesis computer;
the benchmark, its FLOP counter and its wake-up witnesses are tools around it. Like all of
`runtime`, nothing here imports torch: the PyTorch-eager comparison is `export.bench_torch`,
handed to `run_benchmark` as `eager_timer` (the `npe` composition does that for `--checkpoint`).

    timing   the clock and result type shared with export's PyTorch timer
    report   the parts (inference alone, end to end, FLOPs vs matmul peak), targets, JSON/PNG
    flops    FLOPs per ONNX call (Conv/MatMul/Gemm/LSTM)
    witness  empty-loop processes that tell the machine's stalls from the runtime's own
"""

from runtime.bench.report import evaluate_targets, host_steal_s, run_benchmark
from runtime.bench.timing import BenchError, EagerTimer, InferenceResult, time_calls
from runtime.bench.witness import WitnessError

__all__ = [
    "BenchError",
    "EagerTimer",
    "InferenceResult",
    "WitnessError",
    "evaluate_targets",
    "host_steal_s",
    "run_benchmark",
    "time_calls",
]
