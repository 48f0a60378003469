"""The HDF5 recording format v1: round trip and every refusal (real files, edited with h5py)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from encoder.recording import (
    CellInfo,
    Recording,
    RecordingFormatError,
    Repeats,
    read_recording,
    stimulus_as_contrast,
    write_recording,
)


def _recording(float_stimulus: bool = False) -> Recording:
    rng = np.random.default_rng(1)
    n, c = 40, 3
    stim: np.ndarray = rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8)
    if float_stimulus:
        stim = stimulus_as_contrast(stim)
    return Recording(
        stimulus=stim,
        responses=rng.integers(0, 4, size=(n, c)).astype(np.uint16),
        cells=CellInfo(
            ids=("a", "b", "c"),
            types=("ON transient", "OFF sustained", "unknown"),
            center_deg=np.array([[0.5, -1.0], [0.0, 0.0], [np.nan, np.nan]], np.float32),
        ),
        splits={
            "train": np.array([[0, 20], [30, 35]], np.int64),
            "val": np.array([[20, 30]], np.int64),
            "test": np.array([[35, 40]], np.int64),
        },
        frame_rate_hz=120.0,
        pixel_size_deg=0.1,
        source="unit test rig",
        repeats=Repeats(
            stimulus=stim[:8].copy(),
            responses=rng.integers(0, 3, size=(4, 8, c)).astype(np.uint16),
            truth_rates_hz=rng.uniform(0, 50, size=(8, c)).astype(np.float32),
        ),
        truth_rates_hz=rng.uniform(0, 50, size=(n, c)).astype(np.float32),
        extra_attrs={"rig_note": "x"},
    )


@pytest.mark.parametrize("float_stimulus", [False, True])
def test_round_trip(tmp_path: Path, float_stimulus: bool) -> None:
    rec = _recording(float_stimulus)
    back = read_recording(write_recording(rec, tmp_path / "r.h5"))
    np.testing.assert_array_equal(back.stimulus, rec.stimulus)
    assert back.stimulus.dtype == rec.stimulus.dtype
    assert back.stimulus_kind == ("contrast" if float_stimulus else "uint8")
    np.testing.assert_array_equal(back.responses, rec.responses)
    assert back.cells.ids == rec.cells.ids and back.cells.types == rec.cells.types
    np.testing.assert_array_equal(back.cells.center_deg, rec.cells.center_deg)  # NaN-aware
    assert set(back.splits) == {"train", "val", "test"}
    for name in rec.splits:
        np.testing.assert_array_equal(back.splits[name], rec.splits[name])
    assert back.frame_rate_hz == 120.0 and back.pixel_size_deg == 0.1
    assert back.source == "unit test rig" and back.extra_attrs["rig_note"] == "x"
    assert back.repeats is not None and rec.repeats is not None
    np.testing.assert_array_equal(back.repeats.responses, rec.repeats.responses)
    np.testing.assert_array_equal(back.repeats.stimulus, rec.repeats.stimulus)
    np.testing.assert_array_equal(back.repeats.truth_rates_hz, rec.repeats.truth_rates_hz)
    np.testing.assert_array_equal(back.truth_rates_hz, rec.truth_rates_hz)
    assert back.split_frames("train") == 25


def _delete(name: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]

    return edit


def _replace(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        data = np.asarray(f[name][()])
        del f[name]
        f.create_dataset(name, data=make(data))

    return edit


def _set_attr(key: str, value: object) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f.attrs[key] = value

    return edit


def _float_stim(value: float) -> Callable[[h5py.File], None]:
    def make(data: np.ndarray) -> np.ndarray:
        out = stimulus_as_contrast(data)
        out[3, 2, 1] = value
        return out

    return _replace("stimulus", make)


# (edit to the file, substrings the refusal must contain: the group and what was expected)
REFUSALS = {
    "missing cells group": (_delete("cells"), ["/cells", "missing", "id, type, center_deg"]),
    "missing responses": (_delete("responses"), ["/responses", "[n_frames, n_cells] uint16"]),
    "missing stimulus": (_delete("stimulus"), ["/stimulus", "[n_frames, height, width]"]),
    "missing splits group": (_delete("splits"), ["/splits", "train, val, test"]),
    "missing val split": (_delete("splits/val"), ["/splits/val", "[k, 2] int64"]),
    "missing cell types": (_delete("cells/type"), ["/cells/type", "[n_cells] str"]),
    "missing repeat responses": (
        _delete("repeats/responses"),
        ["/repeats/responses", "[R, n_rep_frames, n_cells] uint16"],
    ),
    "responses too short": (
        _replace("responses", lambda d: d[:-1]),
        ["/responses", "expected shape [40, 3]", "got [39, 3]"],
    ),
    "responses wrong dtype": (
        _replace("responses", lambda d: d.astype(np.int32)),
        ["/responses", "uint16"],
    ),
    "centres wrong shape": (
        _replace("cells/center_deg", lambda d: d[:2]),
        ["/cells/center_deg", "expected shape [3, 2]"],
    ),
    "truth rates mismatched": (
        _replace("truth/rates_hz", lambda d: d[:-2]),
        ["/truth/rates_hz", "expected shape [40, 3]"],
    ),
    "repeat truth mismatched": (
        _replace("truth/repeat_rates_hz", lambda d: d[:, :2]),
        ["/truth/repeat_rates_hz", "expected shape [8, 3]"],
    ),
    "repeat responses mismatched": (
        _replace("repeats/responses", lambda d: d[:, :5]),
        ["/repeats/responses", "expected shape [R, 8, n_cells]"],
    ),
    "overlapping splits": (
        _replace("splits/val", lambda d: np.array([[15, 30]], np.int64)),
        ["/splits", "overlaps", "non-overlapping [k, 2]"],
    ),
    "split beyond the end": (
        _replace("splits/test", lambda d: np.array([[35, 41]], np.int64)),
        ["/splits/test", "[35, 41)", "[0, 40)", "[k, 2] int64"],
    ),
    "split of wrong shape": (
        _replace("splits/test", lambda d: np.array([35, 40, 1], np.int64)),
        ["/splits/test", "[k, 2]"],
    ),
    "NaN stimulus": (_float_stim(np.nan), ["/stimulus", "NaN", "[n_frames, height, width]"]),
    "out-of-range stimulus": (
        _float_stim(1.5),
        ["/stimulus", "[-1, 1]", "1.5", "[n_frames, height, width]"],
    ),
    "stimulus wrong rank": (
        _replace("stimulus", lambda d: d[:, 0]),
        ["/stimulus", "[n_frames, height, width]"],
    ),
    "wrong version": (_set_attr("version", 2), ["/ attrs version", "version 1", "got 2"]),
    "not a version number": (_set_attr("version", "one"), ["/ attrs version", "version 1"]),
    "wrong format name": (_set_attr("format", "other"), ["/ attrs format", "npe.recording"]),
    "bad frame rate": (_set_attr("frame_rate_hz", -5.0), ["frame_rate_hz", "positive"]),
}


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_recording(_recording(), tmp_path_factory.mktemp("fmt") / "good.h5")


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_every_broken_layout_is_refused_with_its_group(
    case: str, good_file: Path, tmp_path: Path
) -> None:
    edit, expected = REFUSALS[case]
    path = tmp_path / "bad.h5"
    shutil.copy(good_file, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(RecordingFormatError) as info:
        read_recording(path)
    for text in expected:
        assert text in str(info.value), f"{text!r} not in {info.value!s}"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # reading changed nothing


def test_missing_and_non_hdf5_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordingFormatError, match="no such file"):
        read_recording(tmp_path / "absent.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(RecordingFormatError, match="not a readable HDF5 file"):
        read_recording(junk)


def test_in_memory_recording_checks_its_own_shapes() -> None:
    rec = _recording()
    with pytest.raises(RecordingFormatError, match=r"/responses: expected shape \[40, 3\]"):
        Recording(
            stimulus=rec.stimulus,
            responses=rec.responses[:10],
            cells=rec.cells,
            splits=rec.splits,
            frame_rate_hz=100.0,
            pixel_size_deg=0.1,
        )
    with pytest.raises(RecordingFormatError, match="/cells/id: cell ids must be unique"):
        CellInfo(ids=("a", "a"), types=("x", "y"), center_deg=np.zeros((2, 2), np.float32))


def test_contrast_convention() -> None:
    lum = np.array([[[0, 255], [127, 128]]], dtype=np.uint8)
    c = stimulus_as_contrast(lum)
    assert c.dtype == np.float32
    np.testing.assert_allclose(c, [[[-1.0, 1.0], [-0.5 / 127.5, 0.5 / 127.5]]], atol=1e-7)
