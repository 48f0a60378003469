"""Runtime: frames in, windows binned, rates predicted with ONNX Runtime, stimulation out.

Imports `hardware` and reads bundles; never imports torch or `encoder`, so it runs on the
prosthesis's own computer with only numpy, onnxruntime and opencv (enforced by a test and
by `lint-imports`, pyproject.toml).

Live path, one module per job:
    spec        the model as the runtime sees it (from a verified bundle)
    sources     camera thread (newest frame, watchdog, reconnect), video, images, synthetic
    synthetic   numpy-rendered scenes (bar, grating, noise)
    preprocess  grayscale → field-of-view crop → resize → contrast, into fixed buffers
    binning     sample-and-hold onto the model's frame clock; ring buffer of the window
    inference   ONNX Runtime session (IOBinding, state carried between steps)
    loop        the per-bin loop: faults → zero stimulation, overload → dropped bins
    stimulation hardware chain (pipeline, link, audit log, simulated stimulator)
    status, preview, clock, latency   live status line, preview window/video, clocks, records
Offline: `npe bench` is the subpackage `runtime.bench` (no torch either; the PyTorch-eager
comparison is `export.bench_torch`). Test models live in tests/support/, not here.
"""
