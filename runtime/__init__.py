"""Runtime: frames in, windows binned, rates predicted with ONNX Runtime, stimulation out.

Imports `hardware` and reads bundles; never imports torch or `encoder`, so it runs on the
prosthesis's own computer with only numpy, onnxruntime and opencv.
"""
