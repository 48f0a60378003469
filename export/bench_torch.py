"""PyTorch-eager timing for `npe bench --checkpoint RUN_DIR`, on the side that has torch.

Why here and not in `runtime/`: the runtime never imports torch or `encoder`. `npe_cli`
hands `bench_torch_eager` to the runtime's bench command (`runtime.cli.set_eager_timer`);
torch and the runtime's timing helpers are imported inside the call, so `npe --help` stays
fast.

It times, batch 1, no grad, with the same thread count as the ORT session, the same work
as the bundle's forms: the full window (`forward_maps` for rate-map models, else `forward`)
on [1, T, H, W], and, for stateful models, one `step` on [1, H, W] with carried state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.bench.timing import InferenceResult
    from runtime.spec import ModelSpec


def bench_torch_eager(
    run_dir: Path, spec: ModelSpec, threads: int, runs: int, warmup: int
) -> list[InferenceResult]:
    """Full window (and, for stateful models, one step) of the checkpoint, batch 1, no grad."""
    import numpy as np
    import torch

    from encoder.checkpoint import load_checkpoint
    from runtime.bench.timing import InferenceResult, time_calls

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(run_dir)
    model: Any = ckpt.model.eval()
    meta = ckpt.meta
    h, w = tuple(meta.frame_shape)
    if (meta.window_frames, h, w) != (spec.window_frames, spec.height, spec.width):
        raise ValueError(
            f"checkpoint {run_dir} has window/frame {meta.window_frames}x{h}x{w}, the bundle "
            f"{spec.window_frames}x{spec.height}x{spec.width}: not the same model"
        )
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1, 1, (1, spec.window_frames, h, w)).astype(np.float32))
    window_fn = (
        model.forward_maps if spec.kind == "ratemap" and hasattr(model, "forward_maps") else model
    )
    settings = {"torch_threads": threads, "torch": torch.__version__}
    extra = {"checkpoint": str(run_dir), "model": meta.model_name}

    def window_call() -> object:
        with torch.inference_mode():
            return window_fn(x)

    results = [
        InferenceResult(
            "PyTorch eager window", settings, time_calls(window_call, runs, warmup), 0, extra
        )
    ]
    if hasattr(model, "step") and hasattr(model, "init_state"):
        step_fn = (
            model.step_maps
            if spec.kind == "ratemap" and hasattr(model, "step_maps")
            else model.step
        )
        frame = x[:, -1]
        with torch.inference_mode():
            state = [model.init_state(1)]

        def step_call() -> object:
            with torch.inference_mode():
                out, state[0] = step_fn(frame, state[0])
            return out

        results.append(
            InferenceResult(
                "PyTorch eager step", settings, time_calls(step_call, runs, warmup), 0, extra
            )
        )
    return results
