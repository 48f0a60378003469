"""Shared fixtures of the hardware tests: real arrays from the shipped files, small helpers."""

from __future__ import annotations

import numpy as np
import pytest

from hardware import compiled
from hardware.arrays import ElectrodeArray, load_array
from hardware.types import StimulationFrame


@pytest.fixture(scope="module", params=["compiled", "numpy"])
def form(request: pytest.FixtureRequest):
    """Run a module's tests in both forms of the per-bin work (hardware.compiled): the
    compiled one, which must load here (numba is a dependency), and the numpy one."""
    if request.param == "compiled":
        assert compiled.kernel_module(True) is not None, compiled.UNAVAILABLE
        assert compiled.codec_module() is not None, compiled.UNAVAILABLE
    before = compiled.PREFER_COMPILED
    compiled.PREFER_COMPILED = request.param == "compiled"
    yield request.param
    compiled.PREFER_COMPILED = before


@pytest.fixture(scope="session")
def utah() -> ElectrodeArray:
    return load_array("utah96")


@pytest.fixture(scope="session")
def orion() -> ElectrodeArray:
    return load_array("orion60")


@pytest.fixture()
def key() -> bytes:
    return bytes(range(32))


def _make_frame(
    array: ElectrodeArray,
    amp: float | np.ndarray = 0.0,
    pw: float | np.ndarray = 170.0,
    gap: float | np.ndarray = 50.0,
    rate: float | np.ndarray = 300.0,
    pulses: int | np.ndarray = 3,
    sequence: int = 1,
) -> StimulationFrame:
    """A frame with the given parameters broadcast to every electrode of `array`."""
    n = array.n

    def f(v: float | np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(v, dtype=np.float32), (n,)).copy()

    return StimulationFrame(
        sequence=sequence,
        timestamp_ns=123,
        electrode_ids=array.electrode_ids,
        amplitude_ua=f(amp),
        phase_width_us=f(pw),
        interphase_gap_us=f(gap),
        pulse_rate_hz=f(rate),
        n_pulses=np.broadcast_to(np.asarray(pulses), (n,)).astype(np.uint16),
    )


@pytest.fixture(scope="session")
def make_frame():  # type: ignore[no-untyped-def]
    """The frame builder (a fixture, since test modules cannot import each other here)."""
    return _make_frame
