"""ONNX Runtime against PyTorch: the numbers that say an exported form computes the same thing.

Figures per comparison: max absolute error (spikes/s), max relative error (|Δ| / (|ref| + 1e-3 ·
max|ref|), so near-zero rates do not blow it up), and the Pearson correlation of all output
entries. An fp32 form passes with correlation ≥ 0.99999 and max relative error ≤ 1e-3.
Stateful forms run step by step over a clip of ≥ 200 consecutive frames from zero state and
are compared with PyTorch's whole-sequence output and, where the model's memory is the window
(the `streaming` model), with the full-window output of every window ending at t ≥ T − 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.bundle import ModelForm, ParityFigures

MIN_CORRELATION = 0.99999
MAX_REL_ERR = 1e-3
MIN_STEP_FRAMES = 200


@dataclass(frozen=True)
class Stats:
    max_abs_err: float
    max_rel_err: float
    correlation: float


def compare(ref: NDArray[np.float32], got: NDArray[np.float32]) -> Stats:
    """ref, got: same shape, any layout → error and correlation over all entries."""
    r = np.asarray(ref, dtype=np.float64).ravel()
    g = np.asarray(got, dtype=np.float64).ravel()
    if r.shape != g.shape:
        raise ValueError(f"parity: reference has {r.size} entries, ONNX output {g.size}")
    if not np.all(np.isfinite(g)):
        return Stats(float("inf"), float("inf"), 0.0)
    diff = np.abs(g - r)
    scale = float(np.max(np.abs(r), initial=0.0))
    rel = diff / (np.abs(r) + 1e-3 * scale + 1e-12)
    if np.std(r) < 1e-12 or np.std(g) < 1e-12:
        # A constant output has no correlation; count it as perfect only if identical.
        corr = 1.0 if float(diff.max(initial=0.0)) <= 1e-6 * max(scale, 1.0) else 0.0
    else:
        corr = float(np.corrcoef(r, g)[0, 1])
    return Stats(float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), corr)


def passes(stats: Stats) -> bool:
    return stats.correlation >= MIN_CORRELATION and stats.max_rel_err <= MAX_REL_ERR


def session(path: Path, threads: int = 1) -> Any:
    """A deterministic CPU InferenceSession (sequential, `threads` intra-op threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_windows(sess: Any, form: ModelForm, windows: NDArray[np.float32]) -> NDArray[np.float32]:
    """windows: [n, T, H, W] → [n, *rate_shape[1:]] from one batch-1 call per window."""
    name = form.data_input.name
    out_name = form.rate_output.name
    return np.stack(
        [sess.run([out_name], {name: w[None].astype(np.float32)})[0][0] for w in windows]
    )


def run_steps(sess: Any, form: ModelForm, clip: NDArray[np.float32]) -> NDArray[np.float32]:
    """clip: [N, H, W] → [N, *rate_shape[1:]] calling the step form once per frame from zero state."""
    state = {s.input: s.zeros() for s in form.state}
    names = [form.rate_output.name] + [s.output for s in form.state]
    outs = []
    for frame in clip:
        res = sess.run(names, {form.data_input.name: frame[None].astype(np.float32), **state})
        outs.append(res[0][0])
        state = {s.input: v for s, v in zip(form.state, res[1:], strict=True)}
    return np.stack(outs)


def figures(
    form: ModelForm, reference: str, stats: Stats, n_real: int, n_random: int
) -> ParityFigures:
    return ParityFigures(
        file=form.file,
        reference=reference,
        n_real=n_real,
        n_random=n_random,
        max_abs_err=stats.max_abs_err,
        max_rel_err=stats.max_rel_err,
        correlation=stats.correlation,
        passed=passes(stats),
    )


def window_parity(
    path: Path,
    form: ModelForm,
    wrapper: Any,
    real: NDArray[np.float32],
    random: NDArray[np.float32],
) -> ParityFigures:
    """Window form on real and random windows ([n, T, H, W]) vs the torch wrapper's output."""
    import torch

    windows = np.concatenate([real, random]).astype(np.float32)
    with torch.no_grad():
        ref = wrapper(torch.from_numpy(windows)).numpy()
    got = run_windows(session(path), form, windows)
    return figures(form, "torch full-window forward", compare(ref, got), len(real), len(random))


def step_parity(
    path: Path,
    form: ModelForm,
    model: Any,
    frame_rate_hz: float,
    window_frames: int,
    maps: bool,
    real_clip: NDArray[np.float32] | None,
    random_clip: NDArray[np.float32],
) -> list[ParityFigures]:
    """Step form over consecutive frames vs torch forward_sequence (and full windows, if exact).

    real_clip, random_clip: [N, H, W] contrast, N ≥ 200 (each run from zero state); real_clip
    may be None when no recording is at hand.
    """
    import torch

    sess = session(path)
    seq_ref, seq_got, win_ref, win_got = [], [], [], []
    t = window_frames
    window_exact = bool(getattr(model, "ratemap", False))
    clips = [c for c in (real_clip, random_clip) if c is not None]
    for clip in clips:
        if len(clip) < MIN_STEP_FRAMES:
            raise ValueError(f"step parity needs ≥ {MIN_STEP_FRAMES} frames, got {len(clip)}")
        got = run_steps(sess, form, clip)
        x = torch.from_numpy(clip[None].astype(np.float32))
        with torch.no_grad():
            seq = model.forward_sequence_maps(x) if maps else model.forward_sequence(x)
            seq_ref.append(seq[0].numpy() * frame_rate_hz)
            seq_got.append(got)
            if window_exact:
                windows = x[0].unfold(0, t, 1).permute(0, 3, 1, 2)  # [N-T+1, T, H, W]
                win = model.forward_maps(windows) if maps else model(windows)
                win_ref.append(win.numpy() * frame_rate_hz)
                win_got.append(got[t - 1 :])
    n_real, n_rand = (0 if real_clip is None else len(real_clip)), len(random_clip)
    out = [
        figures(
            form,
            "torch forward_sequence (step by step)",
            compare(np.concatenate(seq_ref), np.concatenate(seq_got)),
            n_real,
            n_rand,
        )
    ]
    if window_exact:
        out.append(
            figures(
                form,
                "torch full window ending at each t ≥ T-1 (step by step)",
                compare(np.concatenate(win_ref), np.concatenate(win_got)),
                max(n_real - t + 1, 0),
                n_rand - t + 1,
            )
        )
    return out
