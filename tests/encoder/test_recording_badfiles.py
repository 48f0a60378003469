"""Hostile recordings refused in one line, before anything large is read (issue 16)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from encoder.recording import RecordingFormatError, read_recording
from npe_cli import app

BAD_RATES = st.one_of(
    # No NUL and no lone surrogate: HDF5 cannot store a variable-length string holding a NUL,
    # and h5py writes strings as UTF-8, which has no encoding for a surrogate; h5py refuses to
    # write either, so such an attribute can never reach the reader.
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=8).map(
        lambda s: s or "x"
    ),
    st.sampled_from([float("nan"), float("inf"), -1.0, 0.0]),
    st.just(np.array([1.0, 2.0])),
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=BAD_RATES)
def test_bad_frame_rate_is_one_line(
    tiny_recording_path: Path, tmp_path: Path, value: object
) -> None:
    bad = tmp_path / "bad.h5"
    shutil.copy(tiny_recording_path, bad)
    with h5py.File(bad, "r+") as f:
        f.attrs["frame_rate_hz"] = value
    with pytest.raises(RecordingFormatError, match="frame_rate_hz") as exc:
        read_recording(bad)
    assert "\n" not in str(exc.value)


def test_huge_declared_stimulus_refused_before_reading(
    tiny_recording_path: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "huge.h5"
    shutil.copy(tiny_recording_path, bad)
    with h5py.File(bad, "r+") as f:
        del f["stimulus"]
        # 52 GB declared, chunked and never written: a few KB on disk.
        f.create_dataset("stimulus", shape=(200_000, 512, 512), dtype=np.uint8, chunks=(1, 64, 64))
    with pytest.raises(RecordingFormatError, match="reading budget"):
        read_recording(bad)
    r = CliRunner().invoke(app, ["dataset", "validate", str(bad)])
    out = " ".join(r.output.split())
    assert r.exit_code != 0 and "Traceback" not in out and "budget" in out


def test_directory_as_recording(tmp_path: Path) -> None:
    with pytest.raises(RecordingFormatError, match="directory"):
        read_recording(tmp_path)
