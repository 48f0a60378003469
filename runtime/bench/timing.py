"""Timing primitives of `npe bench`, shared with export's PyTorch-eager timer.

Why a module of its own: `export.bench_torch` times torch with exactly the same clock and
result type as the ONNX forms, and must import this without the rest of the benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import NpeRuntimeError
from runtime.latency import summarise_ns
from runtime.spec import ModelSpec


class BenchError(NpeRuntimeError, RuntimeError):
    """A benchmark part that cannot run as asked (e.g. a checkpoint torch cannot load)."""


@dataclass
class InferenceResult:
    """Timing of one way of running the model (ns per call)."""

    name: str
    settings: dict[str, Any]
    samples_ns: NDArray[np.int64]
    flops: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def stats(self) -> dict[str, float]:
        s = summarise_ns({"x": self.samples_ns})["x"]
        s["throughput_per_s"] = 1e9 / float(np.mean(self.samples_ns))
        s["runs"] = float(self.samples_ns.size)
        if self.flops:
            s["gflop_per_call"] = self.flops / 1e9
            s["gflops_achieved"] = self.flops / float(np.median(self.samples_ns))
        return s


def time_calls(fn: Callable[[], object], runs: int, warmup: int) -> NDArray[np.int64]:
    """[runs] ns of fn() after `warmup` untimed calls (monotonic clock)."""
    for _ in range(warmup):
        fn()
    out = np.empty(runs, dtype=np.int64)
    mono = time.monotonic_ns
    for i in range(runs):
        t = mono()
        fn()
        out[i] = mono() - t
    return out


EagerTimer = Callable[[Path, ModelSpec, int, int, int], list[InferenceResult]]
"""(checkpoint run dir, bundle spec, threads, runs, warm-up) → timings of the same model in
another framework (PyTorch eager, `export.bench_torch.bench_torch_eager`)."""
