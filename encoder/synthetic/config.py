"""Configuration of one synthetic recording: geometry, durations, rates, stimulus and seed.

One frozen, self-validating dataclass, because the same config must rebuild exactly the same
ground-truth retina later (it is stored as JSON in the recording's attributes).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from encoder.errors import EncoderError

STIMULUS_KINDS: tuple[str, ...] = ("natural", "pink", "whitenoise", "bars", "gratings")

# The original experiments: 50/7/7 minutes train/val/test (YADLRetina, REFERENCES.md).
ORIGINAL_SPLIT_MINUTES: dict[str, float] = {"train": 50.0, "val": 7.0, "test": 7.0}


class SimulationConfigError(EncoderError, ValueError):
    """A simulation parameter outside what the synthetic retina supports."""


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of one synthetic recording.

    Defaults are chosen so that `npe simulate` finishes in well under a minute on 2 CPU
    cores while leaving enough natural-movie data (~6.4 min of training frames at 100 Hz)
    and high enough rates (baseline a few Hz, peaks near 180 Hz) that a CNN can predict
    the trial-averaged repeat response well above r = 0.7.

    Attributes:
        stimulus: one of STIMULUS_KINDS.
        duration_scale: fraction of the original 50/7/7 minutes to simulate.
        frame_rate_hz: stimulus frame rate; one response bin per frame (120 reproduces the
            original pink-noise experiments, 100 is the npe default: 10 ms bins).
        height, width: frame size in pixels.
        pixel_size_deg: visual angle of one pixel.
        seed: seeds the retina, the stimuli and the spikes (same seed → same file).
        n_repeats: repeats of the test clip.
        repeat_seconds: length of the repeated test clip.
        min_rate_hz, max_rate_hz: the output nonlinearity maps into (min_rate_hz, max_rate_hz).
        baseline_rate_hz: rate at the ensemble-mean drive (sets the nonlinearity's threshold).
        checker_px: checker size of the white-noise stimulus.
        mosaic_scale: multiplies every mosaic spacing and receptive-field size (in px), so
            one knob trades cell count against receptive-field size.
    """

    stimulus: str = "natural"
    duration_scale: float = 0.125
    frame_rate_hz: float = 100.0
    height: int = 32
    width: int = 32
    pixel_size_deg: float = 0.25
    seed: int = 0
    n_repeats: int = 10
    repeat_seconds: float = 20.0
    min_rate_hz: float = 1.0
    max_rate_hz: float = 180.0
    baseline_rate_hz: float = 8.0
    checker_px: int = 1
    mosaic_scale: float = 1.0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> SimulationConfigError:
            return SimulationConfigError(f"{name}={getattr(self, name)!r}: {why}")

        if self.stimulus not in STIMULUS_KINDS:
            raise bad("stimulus", f"expected one of {', '.join(STIMULUS_KINDS)}")
        for name in ("duration_scale", "frame_rate_hz", "pixel_size_deg", "repeat_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise bad(name, "expected a positive finite number")
        if not 10.0 <= self.frame_rate_hz <= 1000.0:
            raise bad("frame_rate_hz", "expected 10..1000 Hz")
        for name in ("height", "width"):
            if not 8 <= getattr(self, name) <= 512:
                raise bad(name, "expected 8..512 pixels")
        if not 1 <= self.n_repeats <= 1000:
            raise bad("n_repeats", "expected 1..1000")
        if not 0 <= self.seed < 2**63:
            raise bad("seed", "expected a non-negative integer")
        if not 0.0 <= self.min_rate_hz < self.baseline_rate_hz < self.max_rate_hz:
            raise bad("baseline_rate_hz", "expected 0 <= min_rate_hz < baseline < max_rate_hz")
        if self.max_rate_hz > 1000.0:
            raise bad("max_rate_hz", "above 1000 Hz is not a realistic ganglion-cell rate")
        if not 1 <= self.checker_px <= min(self.height, self.width):
            raise bad("checker_px", "expected 1..frame size")
        if not 0.25 <= self.mosaic_scale <= 8.0:
            raise bad("mosaic_scale", "expected 0.25..8")
        if self.split_frames()["train"] < 1 or self.split_frames()["test"] < 1:
            raise bad("duration_scale", "too small: a split would have no frames")

    def split_frames(self) -> dict[str, int]:
        """Frames per split: the original 50/7/7 minutes times duration_scale."""
        return {
            name: round(minutes * 60.0 * self.duration_scale * self.frame_rate_hz)
            for name, minutes in ORIGINAL_SPLIT_MINUTES.items()
        }

    @property
    def repeat_frames(self) -> int:
        return max(1, round(self.repeat_seconds * self.frame_rate_hz))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SimulationConfig:
        """Parse a stored config (from a recording's attributes: untrusted like the file).

        Strict types: each value must already be of its field's type (an int where an int
        is declared, a number for a float, a string for the stimulus), since a file could
        hold anything and `__post_init__` compares numbers."""
        from hardware.untrusted_json import UntrustedFileError, parse_untrusted_json

        try:
            raw: Any = parse_untrusted_json(text, source="simulation config")
        except UntrustedFileError as exc:
            raise SimulationConfigError(str(exc)) from exc
        if not isinstance(raw, dict):
            raise SimulationConfigError("simulation config: expected a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SimulationConfigError(f"unknown simulation parameters: {', '.join(unknown)}")
        for f in fields(cls):
            if f.name not in raw:
                continue
            v = raw[f.name]
            want = type(getattr(cls(), f.name))
            ok = (
                isinstance(v, str)
                if want is str
                else isinstance(v, int | float) and not isinstance(v, bool)
                if want is float
                else isinstance(v, int) and not isinstance(v, bool)
            )
            if not ok:
                raise SimulationConfigError(
                    f"simulation config: {f.name}: expected {want.__name__}, got {type(v).__name__}"
                )
        return cls(**raw)
