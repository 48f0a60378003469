"""Runtime: frames in, windows binned, rates predicted with ONNX Runtime, stimulation out.

Imports `hardware` and reads bundles; never imports torch or `encoder`, so it runs on the
prosthesis's own computer with only numpy, onnxruntime and opencv (enforced by a test and
by `lint-imports`, pyproject.toml).

Live path, one module per job:
    spec        the model as the runtime sees it (from a verified bundle)
    sources     camera thread (newest frame, watchdog, reconnect), video, images, synthetic
    synthetic_scenes  numpy-rendered scenes (bar, grating, noise)
    preprocess  grayscale → field-of-view crop → resize → contrast, into fixed buffers
    binning     sample-and-hold onto the model's frame clock; ring buffer of the window
    inference   ONNX Runtime session (IOBinding, state carried between steps)
    loop        the per-bin loop: faults → zero stimulation, overload → dropped bins
    hardware_chain    the hardware side of a run (hardware.chain plus the mapping pipeline)
    status, live_preview, clock, latency   live status line, rate-map preview, clocks, records
Offline: `npe bench` is the subpackage `runtime.bench` (no torch either; the PyTorch-eager
comparison is `export.bench_torch`). Test models live in tests/support/, not here.
The names below are the public API (imported lazily, see npe_exports).
"""

from __future__ import annotations

from npe_exports import lazy_exports

_PUBLIC = {
    "Bundle": "bundle",
    "BundleError": "bundle",
    "BundleManifest": "bundle",
    "ExecutionDevice": "options",
    "FormChoice": "options",
    "HardwareChain": "hardware_chain",
    "ModelSpec": "spec",
    "NpeRuntimeError": "errors",
    "OrtEngine": "inference",
    "Precision": "options",
    "Preprocessor": "preprocess",
    "RealClock": "clock",
    "RunSummary": "loop",
    "SessionSettings": "inference",
    "SourceError": "sources",
    "StreamingRuntime": "loop",
    "VirtualClock": "clock",
    "build_chain": "hardware_chain",
    "camera_opens": "sources",
    "default_bundle_path": "bundle",
    "load_bundle": "bundle",
    "load_model_spec": "spec",
    "open_source": "sources",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
