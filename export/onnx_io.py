"""Torch → ONNX for one form: one self-contained file, static batch-1 shapes, opset ≥ 18.

Why these choices (REFERENCES, runtime facts): static batch-1 shapes let ONNX Runtime plan
memory once for the live path; one file (no external data) keeps the bundle's hash list
complete; opset 18–20 is what current ONNX Runtime builds, including minimal ones, run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.source import ExportError

OPSET = 18


def export_module(
    module: Any,
    args: tuple[Any, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: Path,
    opset: int = OPSET,
) -> str:
    """Trace `module(*args)` to `path`; returns the exporter used ("dynamo" or "torchscript").

    The torch.export-based exporter is tried first (the supported one); the TorchScript
    exporter is the fallback for graphs it cannot capture. Either way the result is one file
    whose graph inputs/outputs carry exactly `input_names`/`output_names`.
    """
    import onnx
    import torch

    module = module.eval()
    errors: list[str] = []
    for dynamo in (True, False):
        try:
            with (
                torch.no_grad(),
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
            ):
                warnings.simplefilter("ignore")
                logging.getLogger("torch.onnx").setLevel(logging.ERROR)
                torch.onnx.export(
                    module,
                    args,
                    str(path),
                    dynamo=dynamo,
                    external_data=False,
                    opset_version=opset,
                    input_names=list(input_names),
                    output_names=list(output_names),
                )
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # exporter failures come in many types
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(exc).__name__}: {exc}")
            continue
        got_in = [
            i.name
            for i in model.graph.input
            if i.name not in {t.name for t in model.graph.initializer}
        ]
        got_out = [o.name for o in model.graph.output]
        if got_in != list(input_names) or got_out != list(output_names):
            errors.append(
                f"{'dynamo' if dynamo else 'torchscript'}: graph has inputs {got_in} and outputs "
                f"{got_out}, expected {list(input_names)} and {list(output_names)}"
            )
            continue
        return "dynamo" if dynamo else "torchscript"
    raise ExportError(f"torch.onnx.export failed for {path.name}: " + " | ".join(errors))


def finalize_model(path: Path, metadata: dict[str, str], doc: str) -> None:
    """Write `metadata` into metadata_props (replacing npe.* keys), keep one file, full check."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    keep = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = doc
    model.producer_name = "npe.export"
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < OPSET:
        raise ExportError(f"{path.name}: opset {opset} < {OPSET}")
    onnx.save_model(model, str(path), save_as_external_data=False)
    check(path)


def check(path: Path) -> None:
    """onnx.checker with full checks (shape inference included); ExportError on failure."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # ValidationError, InferenceError
        raise ExportError(f"onnx.checker (full_check) refused {path.name}: {exc}") from exc
