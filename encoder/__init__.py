"""Training side: the recording format, the synthetic retina, retina models, training and evaluation.

Never imports `runtime`, `export` or `calibration` (see ARCHITECTURE.md). The recording module is
torch-free. The names below are the public API, imported lazily (see npe_exports), so that
``import encoder`` (or ``from encoder import read_recording``) does not load torch.
"""

from __future__ import annotations

from npe_exports import lazy_exports

_PUBLIC = {
    "EncoderError": "errors",
    "EvaluationResult": "evaluate",
    "MODEL_REGISTRY": "models",
    "MultiSessionModel": "models",
    "Recording": "recording",
    "RecordingFormatError": "recording",
    "RetinaModel": "models",
    "SimulationConfig": "synthetic",
    "TrainConfig": "train",
    "TrainResult": "train",
    "build_model": "models",
    "build_multisession_model": "models",
    "evaluate": "evaluate",
    "load_checkpoint": "checkpoint",
    "load_multisession_checkpoint": "checkpoint",
    "read_recording": "recording",
    "save_checkpoint": "checkpoint",
    "simulate": "synthetic",
    "stimulus_as_contrast": "recording",
    "train": "train",
    "write_recording": "recording",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
