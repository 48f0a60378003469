"""The runtime's enumerated choices, typed once for the CLI, the config files and the code.

A light module (no numpy, no onnxruntime): `npe --help` imports it to declare the options.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ExecutionDevice", "FormChoice", "Precision"]


class ExecutionDevice(StrEnum):
    """Where ONNX Runtime runs the model."""

    CPU = "cpu"
    CUDA = "cuda"


class FormChoice(StrEnum):
    """Which ONNX form of a bundle runs: one frame per bin with state, or the whole window."""

    STEP = "step"
    WINDOW = "window"


class Precision(StrEnum):
    """The numeric precision of the model file."""

    FP32 = "fp32"
    INT8 = "int8"
