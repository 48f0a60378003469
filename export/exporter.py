"""Checkpoint → verified bundle: export every form, stamp metadata, verify, hash, write manifest.

The bundle is assembled in a temporary directory beside `out_dir` and moved into place only
after every check passed, so a failed export leaves nothing half-written (and an existing
bundle untouched unless `overwrite` was asked for).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from encoder.recording import CONTRAST_OFFSET, CONTRAST_SCALE
from export import onnx_io, parity
from export.data import StimulusData, load_stimulus, random_clip, random_windows
from export.outputs import cells_output, ratemap_output
from export.source import ExportError, ExportSource
from export.wrappers import StepRates, WindowRates, initial_state, state_names
from runtime.bundle import (
    BundleManifest,
    InputGeometry,
    Int8Figures,
    ModelForm,
    ModelInfo,
    OutputSpec,
    Parity,
    ParityFigures,
    Preprocessing,
    StateSpec,
    TensorSpec,
    Timing,
    load_bundle,
    sha256_file,
    write_manifest,
)

Progress = Callable[[str], None]

WINDOW_FILE = "model.onnx"
STEP_FILE = "model.step.onnx"


@dataclass(frozen=True)
class ExportOptions:
    """Knobs of one export.

    Attributes:
        data: recording .h5 or windows .npz for the real-data parity check (default: the
            checkpoint's training data, if that file exists).
        int8_calibration: calibration windows (.npz) or recording (.h5) → also write INT8.
        ort: also write ORT-format copies of every model file.
        overwrite: replace an existing, non-empty `out_dir`.
        n_real / n_random: windows for the window-form check.
        step_frames: frames per clip of the step-by-step check (≥ 200).
        seed: seed of the random windows and clips.
    """

    data: Path | None = None
    int8_calibration: Path | None = None
    ort: bool = False
    overwrite: bool = False
    n_real: int = 16
    n_random: int = 8
    step_frames: int = 240
    seed: int = 0


def _versions(exporter: str) -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    try:
        npe_version = importlib.metadata.version("npe")
    except importlib.metadata.PackageNotFoundError:
        npe_version = "unknown"
    return {
        "npe": npe_version,
        "torch": str(torch.__version__),
        "onnx": str(onnx.__version__),
        "onnxruntime": str(onnxruntime.__version__),
        "numpy": str(np.__version__),
        "opset": str(onnx_io.OPSET),
        "exporter": exporter,
    }


def _spec(name: str, arr: Any) -> TensorSpec:
    return TensorSpec(name=name, shape=tuple(int(d) for d in arr.shape), dtype="float32")


def _export_forms(
    source: ExportSource, work: Path, progress: Progress
) -> tuple[list[ModelForm], OutputSpec, str]:
    """Export window (and step) forms into `work`; returns forms, output spec, exporter used."""
    import torch

    model = source.model.eval()
    t, (h, w) = source.window_frames, source.frame_shape
    maps = source.is_ratemap
    forms: list[ModelForm] = []
    exporters: set[str] = set()

    progress(f"exporting window form ({WINDOW_FILE})")
    win = WindowRates(model, source.frame_rate_hz, maps).eval()
    example = torch.zeros(1, t, h, w)
    with torch.no_grad():
        rates = win(example)
    exporters.add(onnx_io.export_module(win, (example,), ["window"], ["rates"], work / WINDOW_FILE))
    forms.append(
        ModelForm(
            file=WINDOW_FILE,
            form="window",
            inputs=(_spec("window", example),),
            outputs=(_spec("rates", rates),),
        )
    )
    if source.is_stateful:
        progress(f"exporting step form ({STEP_FILE})")
        step = StepRates(model, source.frame_rate_hz, maps).eval()
        try:
            state = initial_state(model, (h, w))
        except ValueError as exc:
            raise ExportError(str(exc)) from exc
        names = state_names(model, len(state))
        frame = torch.zeros(1, h, w)
        with torch.no_grad():
            outs = step(frame, *state)
        if len(outs) != len(state) + 1:
            raise ExportError(
                f"step returned {len(outs) - 1} state tensors, init_state has {len(state)}"
            )
        exporters.add(
            onnx_io.export_module(
                step,
                (frame, *state),
                ["frame", *names],
                ["rates", *[f"{n}_next" for n in names]],
                work / STEP_FILE,
            )
        )
        forms.append(
            ModelForm(
                file=STEP_FILE,
                form="step",
                inputs=(
                    _spec("frame", frame),
                    *[_spec(n, s) for n, s in zip(names, state, strict=True)],
                ),
                outputs=(
                    _spec("rates", outs[0]),
                    *[_spec(f"{n}_next", s) for n, s in zip(names, outs[1:], strict=True)],
                ),
                state=tuple(
                    StateSpec(input=n, output=f"{n}_next", shape=tuple(s.shape))
                    for n, s in zip(names, state, strict=True)
                ),
            )
        )
        if tuple(outs[0].shape) != tuple(rates.shape):
            raise ExportError(
                f"step rates {list(outs[0].shape)} differ from window rates {list(rates.shape)}"
            )
    output = (
        ratemap_output(source, tuple(rates.shape))
        if maps
        else cells_output(source, rates.shape[-1])
    )
    return forms, output, "+".join(sorted(exporters))


def _real_data(
    source: ExportSource, options: ExportOptions, progress: Progress
) -> StimulusData | None:
    path = options.data
    if path is None and source.data_path is not None and source.data_path.is_file():
        path = source.data_path
    if path is None:
        progress("[yellow]no recording found for the real-data check: random windows only")
        return None
    progress(f"loading real windows from {path}")
    return load_stimulus(
        path,
        source.window_frames,
        source.frame_shape,
        source.frame_rate_hz,
        n_windows=options.n_real,
        clip_frames=options.step_frames,
    )


def _verify(
    source: ExportSource,
    work: Path,
    forms: list[ModelForm],
    real: StimulusData | None,
    options: ExportOptions,
    progress: Progress,
) -> tuple[list[ParityFigures], int]:
    """Checker + ORT-vs-torch parity of every form; ExportError with the figures if any fails."""
    t, shape = source.window_frames, source.frame_shape
    rand_w = random_windows(options.n_random, t, shape, options.seed)
    real_w = real.windows if real is not None else np.zeros((0, t, *shape), np.float32)
    results: list[ParityFigures] = []
    step_frames = 0
    for form in forms:
        progress(f"onnx.checker full_check: {form.file}")
        onnx_io.check(work / form.file)
        if form.form == "window":
            progress(f"parity {form.file}: {len(real_w)} real + {len(rand_w)} random windows")
            wrapper = WindowRates(source.model, source.frame_rate_hz, source.is_ratemap).eval()
            results.append(parity.window_parity(work / form.file, form, wrapper, real_w, rand_w))
        else:
            n = max(options.step_frames, parity.MIN_STEP_FRAMES)
            rclip = random_clip(n, shape, options.seed + 1)
            real_clip = real.clip if real is not None else None
            if real_clip is not None and len(real_clip) < n:
                real_clip = None
            if real_clip is None:
                progress(f"[yellow]no real clip of {n} frames: step check on a random clip only")
            progress(f"parity {form.file}: step by step over clips of {n} frames")
            results.extend(
                parity.step_parity(
                    work / form.file,
                    form,
                    source.model,
                    source.frame_rate_hz,
                    t,
                    source.is_ratemap,
                    None if real_clip is None else real_clip[:n],
                    rclip,
                )
            )
            step_frames = n * (1 if real_clip is None else 2)
    failed = [r for r in results if not r.passed]
    if failed:
        lines = "; ".join(
            f"{r.file} vs {r.reference}: correlation {r.correlation:.7f} (need ≥ "
            f"{parity.MIN_CORRELATION}), max rel err {r.max_rel_err:.3g} (need ≤ "
            f"{parity.MAX_REL_ERR}), max abs err {r.max_abs_err:.3g} spikes/s"
            for r in failed
        )
        raise ExportError(f"parity not met, bundle not written: {lines}")
    return results, step_frames


def export_bundle(
    source: ExportSource,
    out_dir: Path,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
) -> BundleManifest:
    """Export `source` into the bundle directory `out_dir`; returns its verified manifest."""
    options = options or ExportOptions()
    say: Progress = progress or (lambda _msg: None)
    out_dir = Path(out_dir)
    if (
        out_dir.exists()
        and (not out_dir.is_dir() or any(out_dir.iterdir()))
        and not options.overwrite
    ):
        raise ExportError(f"{out_dir}: exists and is not empty (use --overwrite to replace it)")
    _preflight(source, options)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        manifest = _export_into(source, work, options, say)
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        work.chmod(0o755)
        work.rename(out_dir)
    finally:
        if work.exists():
            shutil.rmtree(work)
    say("verifying the written bundle (hashes, signatures, metadata)")
    load_bundle(out_dir)
    return manifest


def _preflight(source: ExportSource, options: ExportOptions) -> None:
    """Refuse missing inputs before any work, so a doomed export fails fast and writes nothing."""
    if options.data is not None and not Path(options.data).is_file():
        raise ExportError(f"{options.data}: no such data file (--data)")
    if options.step_frames < parity.MIN_STEP_FRAMES:
        raise ExportError(
            f"step_frames must be ≥ {parity.MIN_STEP_FRAMES}, got {options.step_frames}"
        )
    if options.int8_calibration is not None and source.sessions and not source.session:
        raise ExportError(
            "--int8 scores the rate maps through one session's cells: choose it with "
            f"--session NAME (sessions {', '.join(source.sessions)})"
        )
    if options.int8_calibration is not None:
        from export.quantize import test_recording

        test_recording(source, Path(options.int8_calibration), options.data)


def _export_into(
    source: ExportSource, work: Path, options: ExportOptions, say: Progress
) -> BundleManifest:
    forms, output, exporter = _export_forms(source, work, say)
    model_info = ModelInfo(
        name=source.model_name,
        kind="ratemap" if source.is_ratemap else "cells",
        stateful=source.is_stateful,
        n_parameters=sum(int(p.numel()) for p in source.model.parameters()),
        checkpoint_sha256=source.checkpoint_sha256,
        training_data_sha256=source.data_sha256,
        stimulus_kind=source.stimulus_kind,
    )
    h, w = source.frame_shape
    px = source.pixel_size_deg
    base = BundleManifest(
        model=model_info,
        timing=Timing(frame_rate_hz=source.frame_rate_hz, window_frames=source.window_frames),
        input=InputGeometry(
            height=h, width=w, pixel_size_deg=px, field_of_view_deg=(w * px, h * px)
        ),
        # The contrast convention, from its one definition (encoder.recording).
        preprocessing=Preprocessing(contrast_offset=CONTRAST_OFFSET, contrast_scale=CONTRAST_SCALE),
        output=output,
        forms=tuple(forms),
        files={f.file: "0" * 64 for f in forms},
        parity=Parity(),
        versions=_versions(exporter),
    )
    for form in forms:
        onnx_io.finalize_model(work / form.file, base.metadata_for(form), _doc(base, form))
    real = _real_data(source, options, say)
    results, step_frames = _verify(source, work, forms, real, options, say)
    int8: Int8Figures | None = None
    if options.int8_calibration is not None:
        from export.quantize import quantize_bundle_form

        forms, int8 = quantize_bundle_form(source, work, base, forms, options, real, say)
    if options.ort:
        from export.ort_format import convert_to_ort

        forms = [replace_ort(f, convert_to_ort(work / f.file, say)) for f in forms]
    files = {p.name: sha256_file(p) for p in sorted(work.iterdir()) if p.is_file()}
    manifest = base.model_copy(
        update={
            "forms": tuple(forms),
            "files": files,
            "parity": Parity(forms=tuple(results), step_frames=step_frames, int8=int8),
        }
    )
    manifest = BundleManifest.model_validate(manifest.model_dump())
    return write_manifest(work, manifest)


def replace_ort(form: ModelForm, ort_file: str) -> ModelForm:
    """`form` with its ORT-format copy recorded."""
    return ModelForm.model_validate({**form.model_dump(), "ort_file": ort_file})


def _doc(manifest: BundleManifest, form: ModelForm) -> str:
    m = manifest
    return (
        f"npe bundle model {m.model.name!r} ({m.model.kind}), {form.form} form, {form.precision}: "
        f"input contrast (L-{m.preprocessing.contrast_offset:g})/"
        f"{m.preprocessing.contrast_scale:g} of {m.input.height}x{m.input.width} px at "
        f"{m.timing.frame_rate_hz:g} Hz, output {m.output.n} rates in spikes/s. "
        "See the bundle's manifest.json."
    )


__all__ = ["ExportError", "ExportOptions", "export_bundle", "replace"]
