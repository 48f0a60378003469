"""Export: checkpoints to verified ONNX bundles (fp32 and INT8) with a manifest the runtime trusts.

Imports `encoder` (to load checkpoints) and `runtime.bundle` (the one bundle schema and verifier).
The names below are the public API (imported lazily, see npe_exports).
"""

from __future__ import annotations

from npe_exports import lazy_exports

_PUBLIC = {
    "ExportError": "source",
    "ExportOptions": "exporter",
    "ExportPackageError": "errors",
    "ExportSource": "source",
    "export_bundle": "exporter",
    "load_source": "source",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
