"""Simulate a full recording (splits, repeats, truth) from the synthetic retina.

The main stream is one continuous movie cut into train/val/test in the original's 50/7/7
minute proportions (YADLRetina, REFERENCES.md) scaled by `duration_scale`; the repeated test
clip is a separate movie of the same kind shown `n_repeats` times with fresh Poisson noise on
each repeat. Every random stream (retina, movies, spikes) has its own child seed, so one
`seed` reproduces the file exactly and changing the stimulus leaves the retina unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from encoder.recording import CellInfo, Recording, Repeats
from encoder.synthetic.config import SimulationConfig
from encoder.synthetic.retina import Retina, build_retina
from encoder.synthetic.stimuli import HELD_OUT_SCENES, TRAINING_SCENES, generate_stimulus

CONFIG_ATTR = "synthetic_config"
DRIVE_MEAN_ATTR = "synthetic_drive_mean"
DRIVE_STD_ATTR = "synthetic_drive_std"

Progress = Callable[[str], None]

# Child-seed indices of the independent random streams.
_RETINA, _MAIN_STIM, _REPEAT_STIM, _MAIN_SPIKES, _REPEAT_SPIKES = 1, 2, 3, 4, 5


def _rng(config: SimulationConfig, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([config.seed, stream]))


def poisson_counts(
    rates_hz: NDArray[np.float32], frame_rate_hz: float, rng: np.random.Generator
) -> NDArray[np.uint16]:
    """[..., n_cells] rates in Hz → Poisson spike counts per frame bin, uint16."""
    counts = rng.poisson(rates_hz.astype(np.float64) / frame_rate_hz)
    return np.minimum(counts, np.iinfo(np.uint16).max).astype(np.uint16)


@dataclass(frozen=True)
class Simulation:
    """A simulated recording with the retina that produced it (the ground truth)."""

    recording: Recording
    retina: Retina
    config: SimulationConfig


def simulate(config: SimulationConfig, progress: Progress | None = None) -> Simulation:
    """Simulate the recording described by `config`; `progress` gets a line per stage."""

    def say(stage: str) -> None:
        if progress is not None:
            progress(stage)

    say("building retina")
    retina = build_retina(config)
    frames = config.split_frames()
    n_main = sum(frames.values())
    fr = config.frame_rate_hz
    size = (config.height, config.width)

    say(f"generating {n_main} frames of {config.stimulus} stimulus")
    stimulus = generate_stimulus(
        config.stimulus,
        n_main,
        *size,
        fr,
        _rng(config, _MAIN_STIM),
        config.checker_px,
        scenes=TRAINING_SCENES,
    )
    say("computing retina drive")
    drive = retina.drive(stimulus)
    # The output nonlinearity adapts to the training ensemble only (val/test stay unseen).
    retina = retina.adapted(drive[: frames["train"]])
    rates = retina.rates(drive)

    say(f"repeated clip: {config.repeat_frames} frames × {config.n_repeats}")
    rep_stimulus = generate_stimulus(
        config.stimulus,
        config.repeat_frames,
        *size,
        fr,
        _rng(config, _REPEAT_STIM),
        config.checker_px,
        scenes=HELD_OUT_SCENES,  # novel scenes: the repeat figures measure generalisation
    )
    rep_rates = retina.respond(rep_stimulus)

    say("Poisson spikes")
    counts = poisson_counts(rates, fr, _rng(config, _MAIN_SPIKES))
    rep_counts = poisson_counts(
        np.broadcast_to(rep_rates, (config.n_repeats, *rep_rates.shape)),
        fr,
        _rng(config, _REPEAT_SPIKES),
    )

    bounds = np.cumsum([0, frames["train"], frames["val"], frames["test"]])
    splits = {
        name: np.array([[bounds[i], bounds[i + 1]]], dtype=np.int64)
        for i, name in enumerate(("train", "val", "test"))
    }
    cells = CellInfo(
        ids=tuple(c.id for c in retina.cells),
        types=tuple(c.type for c in retina.cells),
        center_deg=np.array([c.center_deg for c in retina.cells], dtype=np.float32),
    )
    assert retina.drive_mean is not None and retina.drive_std is not None
    source = (
        f"npe synthetic retina v1: {config.stimulus} stimulus, {retina.n_cells} cells, "
        f"seed {config.seed}, duration scale {config.duration_scale}"
    )
    recording = Recording(
        stimulus=stimulus,
        responses=counts,
        cells=cells,
        splits=splits,
        frame_rate_hz=fr,
        pixel_size_deg=config.pixel_size_deg,
        source=source,
        repeats=Repeats(stimulus=rep_stimulus, responses=rep_counts, truth_rates_hz=rep_rates),
        truth_rates_hz=rates,
        extra_attrs={
            CONFIG_ATTR: config.to_json(),
            DRIVE_MEAN_ATTR: retina.drive_mean,
            DRIVE_STD_ATTR: retina.drive_std,
        },
    )
    say("done")
    return Simulation(recording=recording, retina=retina, config=config)


def simulate_recording(config: SimulationConfig) -> Recording:
    """The recording alone (see `simulate` for the retina that made it)."""
    return simulate(config).recording


def retina_from_recording(recording: Recording) -> Retina:
    """Rebuild the adapted ground-truth retina of a synthetic recording.

    Raises ValueError for recordings that the synthetic retina did not write.
    """
    attrs = recording.extra_attrs
    if CONFIG_ATTR not in attrs:
        raise ValueError(f"not a synthetic recording: attribute {CONFIG_ATTR!r} missing")
    raw = attrs[CONFIG_ATTR]
    config = SimulationConfig.from_json(raw.decode() if isinstance(raw, bytes) else str(raw))
    retina = build_retina(config)
    mean = np.asarray(attrs[DRIVE_MEAN_ATTR], dtype=np.float64)
    std = np.asarray(attrs[DRIVE_STD_ATTR], dtype=np.float64)
    if mean.shape != (retina.n_cells,) or std.shape != (retina.n_cells,):
        raise ValueError(
            f"{DRIVE_MEAN_ATTR}/{DRIVE_STD_ATTR}: expected shape [{retina.n_cells}], "
            f"got {list(mean.shape)} and {list(std.shape)}"
        )
    return Retina(**{**retina.__dict__, "drive_mean": mean, "drive_std": std})


def summary(recording: Recording) -> dict[str, object]:
    """Small JSON-able description of the simulated cells (counts per type)."""
    types: dict[str, int] = {}
    for t in recording.cells.types:
        types[t] = types.get(t, 0) + 1
    return {"n_cells": recording.n_cells, "types": types, "source": recording.source}


__all__ = [
    "Simulation",
    "poisson_counts",
    "retina_from_recording",
    "simulate",
    "simulate_recording",
    "truth_ceiling_pcc",
]


def truth_ceiling_pcc(recording: Recording, window_frames: int) -> NDArray[np.float64]:
    """[n_cells] Pearson r of the true repeat rates with the trial-averaged repeat counts.

    The best any model can score against the trial average (it is the truth itself); frames
    before the first full window are left out, as no model predicts them. NaN for a cell
    that never varies.
    """
    rep = recording.repeats
    if rep is None or rep.truth_rates_hz is None:
        raise ValueError("recording has no repeats with truth rates (/truth/repeat_rates_hz)")
    start = max(0, window_frames - 1)
    truth = rep.truth_rates_hz[start:].astype(np.float64)
    mean = rep.responses[:, start:].astype(np.float64).mean(axis=0)
    out = np.full(recording.n_cells, np.nan)
    for c in range(recording.n_cells):
        if truth[:, c].std() > 0 and mean[:, c].std() > 0:
            out[c] = float(np.corrcoef(truth[:, c], mean[:, c])[0, 1])
    return out
