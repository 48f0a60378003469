"""Synthetic retina with known ground truth: stimuli, retina model, simulation.

Public API: `SimulationConfig`, `simulate` (recording + retina), `simulate_recording`,
`build_retina`, `retina_from_recording`, `Retina`, `TrueCell`, `CELL_TYPES`,
`generate_stimulus`, `STIMULUS_KINDS`.
"""

from encoder.synthetic.config import STIMULUS_KINDS, SimulationConfig, SimulationConfigError
from encoder.synthetic.retina import CELL_TYPES, CellType, Retina, TrueCell, build_retina
from encoder.synthetic.simulate import (
    Simulation,
    retina_from_recording,
    simulate,
    simulate_recording,
)
from encoder.synthetic.stimuli import generate_stimulus

__all__ = [
    "CELL_TYPES",
    "STIMULUS_KINDS",
    "CellType",
    "Retina",
    "Simulation",
    "SimulationConfig",
    "SimulationConfigError",
    "TrueCell",
    "build_retina",
    "generate_stimulus",
    "retina_from_recording",
    "simulate",
    "simulate_recording",
]
