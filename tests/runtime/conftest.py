"""Shared fixtures for the runtime tests: a tiny real ONNX model and recording stand-ins.

Stand-ins (`RecordingLink`, `RecordingAudit`) only record what the loop hands them; the
hardware pipeline itself is the real `hardware.pipeline.StimulationPipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from support.toymodel import build_toy_model

from hardware.types import StimulationFrame
from runtime.spec import ModelSpec


@pytest.fixture(scope="session")
def toy_spec(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """T=10 frames of 24×24 at 100 Hz, 2 types × 12×12 map (288 outputs), 0.5°/px."""
    return build_toy_model(
        tmp_path_factory.mktemp("toy"), window_frames=10, height=24, width=24, seed=1
    )


@dataclass
class RecordingLink:
    frames: list[StimulationFrame] = field(default_factory=list)
    closed: bool = False
    polls: int = 0

    def send(self, frame: StimulationFrame) -> None:
        self.frames.append(frame)

    def poll(self) -> None:
        self.polls += 1

    def close(self) -> None:
        self.closed = True


@dataclass
class RecordingAudit:
    frames: list[StimulationFrame] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    closed: bool = False

    def frame(self, frame: StimulationFrame) -> None:
        self.frames.append(frame)

    def event(self, kind: str, detail: str) -> None:
        self.events.append((kind, detail))

    def close(self) -> None:
        self.closed = True


def is_zero(frame: StimulationFrame) -> bool:
    return not bool(np.any(frame.active))


@pytest.fixture
def utah_pipeline():  # type: ignore[no-untyped-def]
    from hardware.arrays import load_array
    from hardware.pipeline import StimulationPipeline
    from hardware.safety import SafetyLimits

    return StimulationPipeline(load_array("utah96"), None, SafetyLimits())


def toy_path(spec: ModelSpec) -> Path:
    return spec.forms[0].path.parent
