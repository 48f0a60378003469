"""Retina models: one module per model, a shared interface (`RetinaModel`) and the registry.

`build_model(name, config, n_cells, frame_shape, frame_rate_hz)` builds any registered model;
`MODEL_REGISTRY` lists them with their default loss and the original work's parameter count.
"""

from encoder.models.base import (
    DEFAULT_FRAME_RATE_HZ,
    DEFAULT_FRAME_SHAPE,
    DEFAULT_N_CELLS,
    ModelConfig,
    ModelConfigError,
    RetinaModel,
)
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
    "ModelConfig",
    "ModelConfigError",
    "RegisteredModel",
    "RetinaModel",
    "build_model",
    "get_spec",
    "make_config",
]
