"""Hardware: electrode arrays, rates → charge-balanced pulses, independent safety limits,
stimulator links, the audit log and the phosphene preview.

Imports nothing from the other npe packages: the safety layer must not depend on the model.
The names below are the public API (imported lazily, see npe_exports); everything else is
internal to its module.
"""

from __future__ import annotations

from npe_exports import lazy_exports

_PUBLIC = {
    "ArrayError": "arrays",
    "AuditError": "audit",
    "AuditLog": "audit",
    "CalibrationError": "calibration_file",
    "DEFAULT_ARRAY": "arrays",
    "DEFAULT_PORT": "link",
    "ElectrodeArray": "arrays",
    "HardwareError": "errors",
    "HardwareLimits": "safety",
    "LinkError": "link",
    "PatientCalibration": "calibration_file",
    "PhospheneRenderer": "phosphene_preview",
    "PipelineConfigError": "pipeline",
    "RateField": "types",
    "SafetyConfigError": "safety",
    "SafetyLimits": "safety",
    "SimulatedStimulator": "stimulator",
    "SimulatorMode": "simulator_mode",
    "StimulationChain": "chain",
    "StimulationFrame": "types",
    "StimulationPipeline": "pipeline",
    "StimulatorLink": "link",
    "StimulatorProcess": "chain",
    "check_frame": "safety",
    "inspect_log": "audit",
    "list_arrays": "arrays",
    "load_array": "arrays",
    "load_calibration": "calibration_file",
    "load_or_create_device_key": "keys",
    "open_chain": "chain",
    "open_link": "link",
    "read_frames": "audit",
    "save_calibration": "calibration_file",
    "start_chain": "chain",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
