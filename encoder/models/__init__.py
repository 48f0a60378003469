"""Retina models: one module per model, a shared interface (`RetinaModel`) and the registry.

`build_model(name, config, n_cells, frame_shape, frame_rate_hz)` builds any registered model;
`MODEL_REGISTRY` lists them with their default loss and the original work's parameter count.
Every model is a `Core` plus a `Readout`; `build_multisession_model` shares one core between
several sessions' readouts.
"""

from encoder.models.base import (
    DEFAULT_FRAME_RATE_HZ,
    DEFAULT_FRAME_SHAPE,
    DEFAULT_N_CELLS,
    ModelConfig,
    ModelConfigError,
    RetinaModel,
)
from encoder.models.core import Core
from encoder.models.multisession import MultiSessionModel, build_multisession_model
from encoder.models.readout import Readout
from encoder.models.registry import (
    MODEL_REGISTRY,
    RegisteredModel,
    build_model,
    get_spec,
    make_config,
)

__all__ = [
    "DEFAULT_FRAME_RATE_HZ",
    "DEFAULT_FRAME_SHAPE",
    "DEFAULT_N_CELLS",
    "MODEL_REGISTRY",
    "Core",
    "ModelConfig",
    "ModelConfigError",
    "MultiSessionModel",
    "Readout",
    "RegisteredModel",
    "RetinaModel",
    "build_model",
    "build_multisession_model",
    "get_spec",
    "make_config",
]
