"""Shared fixtures of the calibration tests: a real simulated stimulator on UDP loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from hardware.arrays import ElectrodeArray, load_array
from hardware.link import StimulatorLink, open_link
from hardware.safety import SafetyLimits
from hardware.stimulator import SimulatedStimulator


@pytest.fixture(scope="session")
def utah() -> ElectrodeArray:
    return load_array("utah96")


@pytest.fixture
def loopback(utah: ElectrodeArray) -> Iterator[tuple[SimulatedStimulator, StimulatorLink]]:
    key = secrets.token_bytes(32)
    stim = SimulatedStimulator("127.0.0.1", 0, key, SafetyLimits(), utah, deadman_ms=500.0)
    stim.start()
    link = open_link(f"udp://127.0.0.1:{stim.port}", key)
    yield stim, link
    link.close()
    stim.stop()
