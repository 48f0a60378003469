"""Export: checkpoints to verified ONNX bundles (fp32 and INT8) with a manifest the runtime trusts.

Imports `encoder` (to load checkpoints) and `runtime.bundle` (the one bundle schema and verifier).
"""
