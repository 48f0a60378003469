"""ORT-format copies of the bundle's models, for minimal/embedded ONNX Runtime builds.

Minimal ONNX Runtime builds read only the ORT flatbuffer format; converting at export time
(with ONNX Runtime's own converter, basic optimisations so the file runs on any build) means
the prosthesis computer never needs the full runtime or the converter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.source import ExportError


def convert_to_ort(onnx_path: Path, say: Any) -> str:
    """Write `<stem>.ort` beside `onnx_path`; returns its file name."""
    import onnxruntime as ort

    out = onnx_path.with_suffix(".ort")
    say(f"ORT format: {out.name}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(out)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise ExportError(f"ORT-format conversion of {onnx_path.name} failed: {exc}") from exc
    if not out.is_file():
        raise ExportError(f"ORT-format conversion of {onnx_path.name} wrote no file")
    return out.name
