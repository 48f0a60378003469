"""Tiny rate-map retina models built directly with `onnx.helper` (no torch).

Why: the runtime's tests and benchmarks must not depend on torch or on the export
pipeline, yet they need real ONNX Runtime sessions with the same calling conventions as
exported bundles: a window form ([1, T, H, W] → [1, K, H', W']) and an equivalent streaming
step form ([1, H, W] + cached state → same output, state out). The model is a separable
spatio-temporal filter bank (shared 5×5 spatial filters, per-channel temporal weights over
the window, 1×1 readout to K cell types, softplus) — the structure of the Deep Retina
first layer (REFERENCES.md), small enough to build in milliseconds.

The step form caches the spatial filter outputs of the last T-1 frames, so one step costs
one frame's convolution instead of T: the same trick a streaming bundle uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.spec import FormSpec, ModelSpec, StateTensor

OPSET = 18


def _conv_out(n: int, k: int, stride: int, pad: int) -> int:
    return (n + 2 * pad - k) // stride + 1


def build_toy_model(
    out_dir: Path,
    *,
    window_frames: int = 25,
    height: int = 32,
    width: int = 32,
    channels: int = 4,
    n_types: int = 2,
    kernel: int = 5,
    stride: int = 2,
    frame_rate_hz: float = 100.0,
    pixel_size_deg: float = 0.5,
    seed: int = 0,
) -> ModelSpec:
    """Write `toy.window.onnx` and `toy.step.onnx` into out_dir; return their ModelSpec.

    Output: [1, n_types, H', W'] spikes/s, flattened in C order into n = n_types·H'·W'
    entries whose positions are the output pixels' centres in degrees (x right, y up).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    T, H, W, C, K = window_frames, height, width, channels, n_types
    pad = kernel // 2
    Ho, Wo = _conv_out(H, kernel, stride, pad), _conv_out(W, kernel, stride, pad)
    w1 = (rng.standard_normal((C, 1, kernel, kernel)) / kernel).astype(np.float32)
    b1 = np.zeros(C, np.float32)
    # Biphasic temporal weights (recent frames weigh most), one set per channel.
    tt = np.arange(T, dtype=np.float32)[::-1]  # age in frames of window slot t
    tw = np.exp(-tt / 4.0)[:, None] - 0.5 * np.exp(-tt / 8.0)[:, None]
    wt = (tw * rng.uniform(0.5, 1.5, (1, C))).astype(np.float32).reshape(T, C, 1, 1)
    w2 = rng.standard_normal((K, C, 1, 1)).astype(np.float32)
    b2 = np.full(K, -0.5, np.float32)
    scale = np.array(20.0, np.float32)  # spikes/s per unit of softplus drive

    def inits(extra: list[onnx.TensorProto]) -> list[onnx.TensorProto]:
        return [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(wt, "wt"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
            numpy_helper.from_array(scale, "scale"),
            numpy_helper.from_array(np.array([0], np.int64), "axis0"),
            *extra,
        ]

    conv: dict[str, Any] = dict(
        kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[stride, stride]
    )
    head = [
        helper.make_node("Mul", ["feat", "wt"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axis0"], ["drive"], keepdims=1),
        helper.make_node("Conv", ["drive", "w2", "b2"], ["logits"]),
        helper.make_node("Softplus", ["logits"], ["sp"]),
        helper.make_node("Mul", ["sp", "scale"], ["rates"]),
    ]
    y = helper.make_tensor_value_info("rates", TensorProto.FLOAT, [1, K, Ho, Wo])

    # Window form.
    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, T, H, W])
    g = helper.make_graph(
        [
            helper.make_node("Reshape", ["frames", "shape_t1hw"], ["x4"]),
            helper.make_node("Conv", ["x4", "w1", "b1"], ["feat"], **conv),
            *head,
        ],
        "toy_window",
        [x],
        [y],
        inits([numpy_helper.from_array(np.array([T, 1, H, W], np.int64), "shape_t1hw")]),
    )
    window_path = out_dir / "toy.window.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]), window_path)

    # Step form: cache of the last T-1 frames' spatial features.
    xs = helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, H, W])
    s_in = helper.make_tensor_value_info("feat_cache", TensorProto.FLOAT, [T - 1, C, Ho, Wo])
    s_out = helper.make_tensor_value_info("feat_cache_next", TensorProto.FLOAT, [T - 1, C, Ho, Wo])
    gs = helper.make_graph(
        [
            helper.make_node("Reshape", ["frame", "shape_11hw"], ["x4"]),
            helper.make_node("Conv", ["x4", "w1", "b1"], ["new_feat"], **conv),
            helper.make_node("Concat", ["feat_cache", "new_feat"], ["feat"], axis=0),
            helper.make_node("Slice", ["feat", "one", "big", "axis0"], ["feat_cache_next"]),
            *head,
        ],
        "toy_step",
        [xs, s_in],
        [y, s_out],
        inits(
            [
                numpy_helper.from_array(np.array([1, 1, H, W], np.int64), "shape_11hw"),
                numpy_helper.from_array(np.array([1], np.int64), "one"),
                numpy_helper.from_array(np.array([T], np.int64), "big"),
            ]
        ),
    )
    step_path = out_dir / "toy.step.onnx"
    onnx.save(helper.make_model(gs, opset_imports=[helper.make_opsetid("", OPSET)]), step_path)

    # Output pixel centres in input pixels → degrees from the field centre (y up).
    ys_px = np.arange(Ho) * stride + (kernel - 1) / 2 - pad
    xs_px = np.arange(Wo) * stride + (kernel - 1) / 2 - pad
    gx, gy = np.meshgrid(
        (xs_px - (W - 1) / 2) * pixel_size_deg, -(ys_px - (H - 1) / 2) * pixel_size_deg
    )
    one_map = np.stack([gx.ravel(), gy.ravel()], axis=1)
    positions = np.tile(one_map, (K, 1)).astype(np.float32)
    pol_types = [1, -1] + [0] * max(0, K - 2)
    polarity = np.repeat(np.array(pol_types[:K], np.int8), Ho * Wo)
    out_shape = (1, K, Ho, Wo)
    return ModelSpec(
        name="toy-ratemap",
        kind="ratemap",
        forms=(
            FormSpec(window_path, "window", "fp32", "frames", (1, T, H, W), "rates", out_shape),
            FormSpec(
                step_path,
                "step",
                "fp32",
                "frame",
                (1, H, W),
                "rates",
                out_shape,
                (StateTensor("feat_cache", "feat_cache_next", (T - 1, C, Ho, Wo)),),
            ),
        ),
        frame_rate_hz=frame_rate_hz,
        window_frames=T,
        height=H,
        width=W,
        pixel_size_deg=pixel_size_deg,
        positions_deg=positions,
        polarity=polarity,
        # The recordings' convention (encoder.recording), stated as a bundle states it.
        contrast_offset=127.5,
        contrast_scale=127.5,
        types=tuple(["ON", "OFF", "unknown"][min(i, 2)] for i in range(K)),
    )


def write_toy_bundle(out_dir: Path, **kwargs: object) -> Path:
    """Write the toy model as a real, verifiable bundle directory (schema npe.bundle v2, sealed).

    Used by tests and benchmarks of the bundle → runtime path without torch or export.
    Returns the bundle directory.
    """
    from runtime import bundle as b

    work = out_dir / ".toy_build"
    spec = build_toy_model(work, **kwargs)  # type: ignore[arg-type]
    out_dir.mkdir(parents=True, exist_ok=True)
    win, step = spec.find_form("window"), spec.find_form("step")
    assert win is not None and step is not None
    _, Ho, Wo = win.output_shape[1:]
    grid_y = spec.positions_deg[: Ho * Wo : Wo, 1]
    grid_x = spec.positions_deg[:Wo, 0]
    forms = []
    for f, fname in ((win, "model.onnx"), (step, "model.step.onnx")):
        st = tuple(b.StateSpec(input=s.input, output=s.output, shape=s.shape) for s in f.states)
        forms.append(
            b.ModelForm(
                file=fname,
                form=f.form,
                inputs=(
                    b.TensorSpec(name=f.input_name, shape=f.input_shape),
                    *(b.TensorSpec(name=s.input, shape=s.shape) for s in f.states),
                ),
                outputs=(
                    b.TensorSpec(name=f.output_name, shape=f.output_shape),
                    *(b.TensorSpec(name=s.output, shape=s.shape) for s in f.states),
                ),
                state=st,
            )
        )
    n = spec.n_out
    labels = spec.types
    draft = dict(
        model=b.ModelInfo(name=spec.name, kind="ratemap", stateful=True),
        timing=b.Timing(frame_rate_hz=spec.frame_rate_hz, window_frames=spec.window_frames),
        input=b.InputGeometry(
            height=spec.height,
            width=spec.width,
            pixel_size_deg=spec.pixel_size_deg,
            field_of_view_deg=spec.field_deg,
        ),
        output=b.OutputSpec(
            n=n,
            ids=tuple(f"{labels[i // (Ho * Wo)]}_{i % (Ho * Wo)}" for i in range(n)),
            types=tuple(labels[i // (Ho * Wo)] for i in range(n)),
            polarity=tuple(int(p) for p in spec.polarity),
            positions_deg=tuple((float(x), float(y)) for x, y in spec.positions_deg),
            grid=b.RateMapGrid(
                type_labels=labels,
                ys_deg=tuple(float(v) for v in grid_y),
                xs_deg=tuple(float(v) for v in grid_x),
            ),
        ),
        preprocessing=b.Preprocessing(
            contrast_offset=spec.contrast_offset, contrast_scale=spec.contrast_scale
        ),
        forms=tuple(forms),
        parity=b.Parity(),
    )
    # Metadata first (it is part of the hashed files), then hashes, then the manifest.
    fake = {m.file: "0" * 64 for m in forms}
    proto_manifest = b.BundleManifest(files=fake, **draft)  # type: ignore[arg-type]
    for mf, src in zip(forms, (win, step), strict=True):
        model = onnx.load(str(src.path))
        for key, value in proto_manifest.metadata_for(mf).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, out_dir / mf.file)
    files = {m.file: b.sha256_file(out_dir / m.file) for m in forms}
    manifest = b.BundleManifest(files=files, **draft)  # type: ignore[arg-type]
    b.write_manifest(out_dir, manifest)
    for p in work.iterdir():
        p.unlink()
    work.rmdir()
    return out_dir
