"""PyTorch-eager timing for `npe bench --checkpoint RUN_DIR` — the ONLY runtime module that
imports torch (and `encoder`), lazily, so the live path never needs them.

It times the checkpoint's model `forward` on one window [1, T, H, W] (batch 1, no grad,
same thread count as the ORT session), the same work as the bundle's window form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.bench import InferenceResult, time_calls
from runtime.spec import ModelSpec


def bench_torch_eager(
    run_dir: Path, spec: ModelSpec, threads: int, runs: int, warmup: int
) -> InferenceResult:
    import torch

    from encoder.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(run_dir)
    model = ckpt.model.eval()
    meta = ckpt.meta
    h, w = tuple(meta.frame_shape)
    if (meta.window_frames, h, w) != (spec.window_frames, spec.height, spec.width):
        raise ValueError(
            f"checkpoint {run_dir} has window/frame {meta.window_frames}x{h}x{w}, the bundle "
            f"{spec.window_frames}x{spec.height}x{spec.width}: not the same model"
        )
    x = torch.from_numpy(
        np.random.default_rng(0).uniform(-1, 1, (1, spec.window_frames, h, w)).astype(np.float32)
    )

    def call() -> object:
        with torch.inference_mode():
            return model(x)

    samples = time_calls(call, runs, warmup)
    return InferenceResult(
        "PyTorch eager window",
        {"torch_threads": threads, "torch": torch.__version__},
        samples,
        0,
        {"checkpoint": str(run_dir)},
    )
