"""Shared, session-scoped fixtures: tiny synthetic recordings any engineer's tests may use.

`tiny_recording_path`: natural movie, 16×16 px, 100 Hz, 1920 frames (train 1500 / val 210 /
test 210), 3 repeats × 200 frames, truth rates, ~10 cells. Simulated once per session
(well under a second), written to a real HDF5 file. Treat it as read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from encoder.recording import write_recording
from encoder.synthetic import SimulationConfig, simulate

# Property tests explore new random cases on developers' machines (where a failure is a bug
# found) but replay a fixed sequence in CI, so a landing never depends on the dice. No test
# has a per-example deadline: timing belongs in benchmarks, not in unit tests.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# With one pytest worker per core (scripts/test), each worker's torch gets its share of the
# cores rather than all of them: N workers × N torch threads oversubscribe the machine, and the
# loopback tests' real-time threads (the stimulator's receive thread, the dead-man timer) then
# wait for a core. Tests that set threads themselves (TrainConfig.threads) still do.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))

TINY_CONFIG = SimulationConfig(
    stimulus="natural",
    duration_scale=0.005,
    height=16,
    width=16,
    seed=7,
    n_repeats=3,
    repeat_seconds=2.0,
)

TINY_WHITENOISE_CONFIG = SimulationConfig(
    stimulus="whitenoise",
    duration_scale=0.015,
    height=16,
    width=16,
    seed=3,
    n_repeats=2,
    repeat_seconds=1.0,
)


@pytest.fixture(scope="session")
def tiny_recording_config() -> SimulationConfig:
    return TINY_CONFIG


@pytest.fixture(scope="session")
def tiny_recording_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny natural-movie synthetic recording (.h5, format v1); do not modify it."""
    path = tmp_path_factory.mktemp("recordings") / "tiny_natural.h5"
    return write_recording(simulate(TINY_CONFIG).recording, path)


@pytest.fixture(scope="session")
def tiny_whitenoise_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny white-noise synthetic recording (.h5): enough spikes for clean STAs."""
    path = tmp_path_factory.mktemp("recordings") / "tiny_whitenoise.h5"
    return write_recording(simulate(TINY_WHITENOISE_CONFIG).recording, path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of a module that drives a command line (`-m cli` selects them).

    The test command runs these a second time at ``COLUMNS=40`` with a deep ``TMPDIR``, so output
    that depends on the terminal's width or on the length of a path fails in CI, not on a user's
    first machine. A module drives the CLI when it uses typer's CliRunner, pexpect or the `npe`
    entry point in a subprocess; it can also say so with ``pytestmark = pytest.mark.cli``.
    """
    cli = pytest.mark.cli
    for item in items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        names = vars(module)
        if (
            "CliRunner" in names
            or "pexpect" in names
            or "npe_cli" in names
            or "DRIVES_CLI" in names
        ):
            item.add_marker(cli)
