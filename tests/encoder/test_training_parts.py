"""The trainer's parts: defaults defined once, typed events and files, lazy frames, prefetch."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.train_reference import cases, write_data

from encoder.lazy_recording import LazyFrames, open_lazy_recording
from encoder.recording import RecordingFormatError, read_recording
from encoder.training.prefetch import Prefetcher


def test_every_train_option_default_is_the_train_config_default() -> None:
    """Each default is defined once, in TrainConfig; the CLI only reads it."""
    import typer.main

    from encoder.cli_models import app
    from encoder.train import TrainConfig, train_default

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {p.name: p for p in command.params}
    checked = 0
    for name in fields:
        if name == "model":
            assert options["model"].required  # no default to share
            continue
        if name == "model_config":  # JSON text on the command line; none = the empty dict
            assert options["model_config_json"].default is None and train_default(name) == {}
            continue
        assert name in options, f"TrainConfig.{name} has no --{name.replace('_', '-')} option"
        assert options[name].default == train_default(name), name
        checked += 1
    assert checked == len(fields) - 2 >= 18


def test_train_events_are_typed_and_metrics_read_back(tmp_path: Path) -> None:
    from encoder.train import (
        METRICS_JSONL,
        EpochMetrics,
        EpochStarted,
        Improved,
        StepDone,
        Stopped,
        TrainConfig,
        TrainEvent,
        read_metrics,
        train,
    )

    data = write_data(tmp_path)
    events: list[TrainEvent] = []
    result = train(
        data, tmp_path / "run", TrainConfig(**cases()["streaming"]), progress=events.append
    )
    kinds = [type(e) for e in events]
    assert kinds[0] is EpochStarted and kinds[-1] is Stopped
    assert kinds.count(EpochMetrics) == 2 == len(result.epochs)
    improved = [e.epoch for e in events if isinstance(e, Improved)]
    assert improved and improved[-1] == result.best_epoch
    starts = [e for e in events if isinstance(e, EpochStarted)]
    steps = [e for e in events if isinstance(e, StepDone)]
    assert len(steps) == sum(s.steps for s in starts) > 0
    stop = events[-1]
    assert isinstance(stop, Stopped) and stop.reason == "max-epochs" and stop.epochs == 2
    back = read_metrics(tmp_path / "run" / METRICS_JSONL)
    assert back == result.epochs
    assert all(e.epoch_ms > 0 and e.elapsed_ms >= e.epoch_ms for e in back)
    assert (
        back[0].sessions[0].session == "reference" and back[0].sessions[0].steps == starts[0].steps
    )


def test_closed_form_nan_train_loss_round_trips(tmp_path: Path) -> None:
    from encoder.train import METRICS_JSONL, TrainConfig, read_metrics, train

    data = write_data(tmp_path)
    result = train(data, tmp_path / "ln", TrainConfig(model="ln", threads=1))
    (back,) = read_metrics(tmp_path / "ln" / METRICS_JSONL)
    assert np.isnan(back.train_loss) and back.val_loss == result.best_val_loss


def _write_stimulus(path: Path, frames: np.ndarray, chunk_rows: int) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("stimulus", data=frames, chunks=(chunk_rows, *frames.shape[1:]))


@given(
    st.integers(0, 700),
    st.integers(0, 300),
    st.integers(1, 40),
    st.integers(1, 4),
)
def test_lazy_frames_equal_the_array_across_block_boundaries(
    start: int, length: int, chunk_rows: int, cache_blocks: int
) -> None:
    import tempfile

    rng = np.random.default_rng(start)
    frames = rng.integers(0, 256, (600, 3, 4), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.h5"
        _write_stimulus(path, frames, chunk_rows)
        with h5py.File(path, "r") as f:
            lazy = LazyFrames(f["stimulus"], cache_bytes=cache_blocks * 256 * 12)
            assert lazy.block_frames % chunk_rows == 0 and lazy.block_frames >= 256
            got = lazy[start : start + length]
            np.testing.assert_array_equal(got, frames[start : start + length])
            np.testing.assert_array_equal(lazy[0:600], frames)  # evicts, re-reads
            assert len(lazy._blocks) <= lazy.max_blocks
            with pytest.raises(TypeError):
                lazy[::2]


def test_lazy_recording_matches_the_full_reader_and_refuses_bad_floats(tmp_path: Path) -> None:
    data = write_data(tmp_path)
    full = read_recording(data)
    with open_lazy_recording(data) as lazy:
        assert lazy.frame_shape == full.frame_shape and lazy.n_cells == full.n_cells
        np.testing.assert_array_equal(lazy.stimulus[100:700], full.stimulus[100:700])
        np.testing.assert_array_equal(lazy.responses, full.responses)
        assert {k: v.tolist() for k, v in lazy.splits.items()} == {
            k: v.tolist() for k, v in full.splits.items()
        }
        assert lazy.session == "reference"  # no session attribute: the file name's stem
    bad = tmp_path / "bad.h5"
    import shutil

    shutil.copy(data, bad)
    with h5py.File(bad, "a") as f:
        stim = f["stimulus"][()].astype(np.float32) / 255.0
        stim[1000, 2, 2] = np.nan
        del f["stimulus"]
        f["stimulus"] = stim
    with pytest.raises(RecordingFormatError, match=r"bad\.h5: /stimulus: frames from 0 hold NaN"):
        open_lazy_recording(bad)


def test_prefetcher_keeps_order_bounds_its_queue_and_passes_errors_on() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(50):
            produced.append(i)
            yield i

    pf = Prefetcher(items, depth=3)
    first = next(pf)
    import time

    time.sleep(0.05)  # let the producer run ahead as far as the queue allows
    assert first == 0 and len(produced) <= 1 + 3 + 1
    assert [first, *pf] == list(range(50))

    def broken() -> Iterator[int]:
        yield 1
        raise RecordingFormatError("disk went away")

    pf = Prefetcher(broken, depth=2)
    assert next(pf) == 1
    with pytest.raises(RecordingFormatError, match="disk went away"):
        next(pf)


def test_train_state_of_a_run_from_before_the_typed_events_still_resumes_its_history() -> None:
    """train_state.pt of older runs holds epochs as dicts with `seconds`; newer as JSON lines."""
    from encoder.training.events import EpochMetrics
    from encoder.training.trainer import _epoch_from_state

    old = {
        "epoch": 3,
        "train_loss": 1.0,
        "val_loss": 0.9,
        "val_pcc": 0.4,
        "seconds": 2.5,
        "lr": 1e-3,
    }
    e = _epoch_from_state(old)
    assert e.epoch_ms == 2500.0 and e.val_pcc == 0.4 and e.lr == 1e-3
    assert _epoch_from_state(e.model_dump_json()) == e
    assert isinstance(e, EpochMetrics)
