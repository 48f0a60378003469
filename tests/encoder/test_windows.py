"""The windowed view against a naive, copy-everything reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from encoder.recording import CellInfo, Recording, Repeats
from encoder.windows import WindowedRecording, window_frames_for


def _recording(n_frames: int = 60, n_cells: int = 3, seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    stim = rng.integers(0, 256, size=(n_frames, 4, 5), dtype=np.uint8)
    resp = rng.integers(0, 5, size=(n_frames, n_cells)).astype(np.uint16)
    rep_stim = rng.integers(0, 256, size=(12, 4, 5), dtype=np.uint8)
    rep_resp = rng.integers(0, 5, size=(3, 12, n_cells)).astype(np.uint16)
    return Recording(
        stimulus=stim,
        responses=resp,
        cells=CellInfo(
            ids=tuple(f"c{i}" for i in range(n_cells)),
            types=("ON transient",) * n_cells,
            center_deg=np.zeros((n_cells, 2), np.float32),
        ),
        # train has two separate ranges; windows must not cross the gap between them.
        splits={
            "train": np.array([[30, 45], [0, 20]], np.int64),
            "val": np.array([[20, 30]], np.int64),
            "test": np.array([[45, 60]], np.int64),
        },
        frame_rate_hz=100.0,
        pixel_size_deg=0.25,
        repeats=Repeats(stimulus=rep_stim, responses=rep_resp),
    )


def _naive(stim: np.ndarray, targets: np.ndarray, ranges: list[tuple[int, int]], T: int):
    xs, ys, ends = [], [], []
    for s, e in sorted(ranges):
        for end in range(s, e):
            if end - T + 1 >= s:
                xs.append((stim[end - T + 1 : end + 1].astype(np.float64) - 127.5) / 127.5)
                ys.append(targets[end])
                ends.append(end)
    return xs, ys, ends


@pytest.mark.parametrize("T", [1, 4, 10])
def test_windows_match_naive_reference(T: int) -> None:
    rec = _recording()
    ds = WindowedRecording(rec, "train", window_frames=T)
    xs, ys, ends = _naive(rec.stimulus, rec.responses, [(30, 45), (0, 20)], T)
    assert len(ds) == len(xs)
    assert ds.end_frames.tolist() == ends
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (T, 4, 5) and x.dtype == torch.float32
        np.testing.assert_allclose(x.numpy(), xs[i], atol=1e-6)
        np.testing.assert_array_equal(y.numpy(), ys[i].astype(np.float32))
    bx, by = ds.batch(np.arange(len(ds)))
    np.testing.assert_allclose(bx.numpy(), np.stack(xs), atol=1e-6)
    np.testing.assert_array_equal(by.numpy(), np.stack(ys).astype(np.float32))


def test_window_too_long_for_a_range_gives_no_samples_from_it() -> None:
    rec = _recording()
    ds = WindowedRecording(rec, "val", window_frames=11)  # val range is 10 frames long
    assert len(ds) == 0
    ds = WindowedRecording(rec, "train", window_frames=16)  # only the [0, 20) range fits
    assert ds.end_frames.tolist() == [15, 16, 17, 18, 19]


def test_samples_are_views_not_copies() -> None:
    ds = WindowedRecording(_recording(), "test", window_frames=5)
    x0, _ = ds[0]
    x1, _ = ds[1]
    assert x0.untyped_storage().data_ptr() == ds.contrast.untyped_storage().data_ptr()
    assert x1.data_ptr() - x0.data_ptr() == 4 * 5 * 4  # one frame of float32 further


def test_cells_subset_and_repeats_mean() -> None:
    rec = _recording()
    ds = WindowedRecording(rec, "test", window_frames=3, cells=[2, 0])
    _, y = ds[0]
    np.testing.assert_array_equal(y.numpy(), rec.responses[47, [2, 0]].astype(np.float32))
    rep = WindowedRecording(rec, "ignored", window_frames=3, source="repeats")
    assert rep.end_frames.tolist() == list(range(2, 12))
    assert rec.repeats is not None
    x, y = rep[0]
    np.testing.assert_allclose(y.numpy(), rec.repeats.responses[:, 2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(
        x.numpy(), (rec.repeats.stimulus[0:3].astype(np.float64) - 127.5) / 127.5, atol=1e-6
    )


def test_bad_arguments_are_refused() -> None:
    rec = _recording()
    with pytest.raises(ValueError, match="split 'nope'"):
        WindowedRecording(rec, "nope")
    with pytest.raises(ValueError, match="cells"):
        WindowedRecording(rec, "train", cells=[5])
    with pytest.raises(IndexError):
        WindowedRecording(rec, "train", window_frames=3)[1000]


def test_window_frames_for() -> None:
    assert window_frames_for(100.0) == 25
    assert window_frames_for(120.0) == 30
    assert window_frames_for(60.0, 100.0) == 6
    with pytest.raises(ValueError):
        window_frames_for(0.0)


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 59), min_size=2, max_size=6, unique=True),
    T=st.integers(1, 12),
    frame_rate=st.sampled_from([60.0, 100.0, 120.0]),
)
def test_any_split_layout_and_window_matches_naive(
    cuts: list[int], T: int, frame_rate: float
) -> None:
    """Random split boundaries (train gets every other range) and window lengths."""
    bounds = [0, *sorted(cuts), 60]
    ranges = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    train = ranges[0::2]
    rest = ranges[1::2]
    base = _recording()
    rec = Recording(
        stimulus=base.stimulus,
        responses=base.responses,
        cells=base.cells,
        splits={
            "train": np.array(train, np.int64),
            "val": np.array(rest[:1], np.int64).reshape(-1, 2),
            "test": np.array(rest[1:], np.int64).reshape(-1, 2),
        },
        frame_rate_hz=frame_rate,
        pixel_size_deg=0.25,
    )
    ds = WindowedRecording(rec, "train", window_frames=T)
    xs, ys, ends = _naive(rec.stimulus, rec.responses, train, T)
    assert ds.end_frames.tolist() == ends
    if ends:
        bx, by = ds.batch(np.arange(len(ds)))
        np.testing.assert_allclose(bx.numpy(), np.stack(xs), atol=1e-6)
        np.testing.assert_array_equal(by.numpy(), np.stack(ys).astype(np.float32))
