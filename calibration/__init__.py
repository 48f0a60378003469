"""Calibration: per-patient thresholds, brightness curves and phosphene maps from psychophysics,
and representative frames for INT8 quantisation.

Imports `hardware` (arrays, the stimulation chain, safety, the calibration-file schema) and the
torch-free recording reader, nothing else upstream. The names below are the public API (imported
lazily, see npe_exports).
"""

from __future__ import annotations

from npe_exports import lazy_exports

_PUBLIC = {
    "CalibrateOutcome": "runner",
    "CalibrationPackageError": "errors",
    "FramesError": "frames",
    "SessionError": "session",
    "SessionHeader": "session",
    "SessionLog": "session",
    "SimulatedPatient": "patient",
    "calibrate": "runner",
    "collect_frames": "frames",
    "predict_thresholds": "prediction",
    "resolve_electrodes": "runner",
    "start_session": "runner",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
