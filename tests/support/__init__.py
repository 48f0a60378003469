"""Test support: tiny ONNX models and bundles built with onnx.helper (no torch, no export).

Importable as `support` because pytest's `pythonpath = ["tests"]` (pyproject.toml).
"""
