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
    # A wide freshness window: the simulated sessions send their trials as one burst of
    # ~1,300 frames (a patient answers once a second or so), and on a loaded 2-core machine
    # running one test worker per core the stimulator's receive thread can take longer than
    # the default 250 ms to work through such a burst, refusing its tail as "stale". These
    # tests are about what the calibration sends; the freshness rule has its own tests
    # (tests/hardware).
    stim = SimulatedStimulator(
        "127.0.0.1", 0, key, SafetyLimits(), utah, deadman_ms=500.0, freshness_ms=10_000.0
    )
    stim.start()
    link = open_link(f"udp://127.0.0.1:{stim.port}", key)
    yield stim, link
    link.close()
    stim.stop()
