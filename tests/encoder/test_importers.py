"""`npe dataset import|export`: each public layout written here with h5py/pynwb, then imported.

The files are small but laid out as the published ones (train/test groups, per-cell repeat
datasets, NWB units + ImageSeries + trials); every imported array is compared exactly with
what the test wrote, and every malformed variant must exit 2 with one line naming the field
and leave nothing on disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from encoder.importers import ImportOptions, import_dataset
from encoder.recording import CellInfo, Recording, Repeats, read_recording, write_recording
from npe_cli import app

runner = CliRunner()

H, W = 6, 8
N_CELLS = 4


def _train_test_file(
    path: Path,
    *,
    repeat_key: str,
    with_time: bool,
    stimulus: str = "uint8",
    n_train: int = 200,
    n_test: int = 50,
    n_repeats: int = 3,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A Baccus/Goldin-style file; returns what was written (cells first, like the files)."""
    rng = np.random.default_rng(seed)
    if stimulus == "uint8":
        train_stim = rng.integers(0, 256, (n_train, H, W)).astype(np.uint8)
        test_stim = rng.integers(0, 256, (n_test, H, W)).astype(np.uint8)
    else:  # float contrast in [-1, 1]
        train_stim = rng.uniform(-1, 1, (n_train, H, W)).astype(np.float32)
        test_stim = rng.uniform(-1, 1, (n_test, H, W)).astype(np.float32)
    train_resp = rng.poisson(1.5, (N_CELLS, n_train)).astype(np.float64)
    repeats = rng.poisson(1.5, (N_CELLS, n_repeats, n_test)).astype(np.int32)
    with h5py.File(path, "w") as f:
        for part, stim, n in (("train", train_stim, n_train), ("test", test_stim, n_test)):
            g = f.create_group(part)
            g.create_dataset("stimulus", data=stim)
            if with_time:
                g.create_dataset("time", data=np.arange(n) * 0.01 + 5.0)
        f["train/response/binned"] = train_resp
        f["train/response/firing_rate_10ms"] = train_resp * 100.0
        f["test/response/binned"] = repeats.mean(axis=1)  # a trial average, as published
        for c in range(N_CELLS):
            name = f"cell{c + 1:02d}" if repeat_key == "cellNN" else f"cell_{c}"
            f[f"test/repeats/{name}"] = repeats[c]
    return {
        "train_stim": train_stim,
        "test_stim": test_stim,
        "train_resp": train_resp,
        "repeats": repeats,
    }


def _import(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, ["dataset", "import", *args])
    return result.exit_code, result.output


def test_deep_retina_import_is_exact(tmp_path: Path) -> None:
    src = tmp_path / "15-10-07" / "naturalscene.h5"
    src.parent.mkdir()
    written = _train_test_file(src, repeat_key="cellNN", with_time=True)
    out = tmp_path / "rec.h5"
    code, output = _import(
        ["deep-retina", str(src), "--out", str(out), "--cells", "0,2-3", "--pixel-size-deg", "0.1"]
    )
    assert code == 0, output
    rec = read_recording(out)
    keep = [0, 2, 3]
    assert rec.stimulus.dtype == np.uint8
    np.testing.assert_array_equal(
        rec.stimulus, np.concatenate([written["train_stim"], written["test_stim"]])
    )
    expected = np.concatenate(
        [written["train_resp"][keep].T, written["repeats"][keep, 0].T]
    ).astype(np.uint16)
    np.testing.assert_array_equal(rec.responses, expected)
    assert rec.repeats is not None
    np.testing.assert_array_equal(rec.repeats.stimulus, written["test_stim"])
    np.testing.assert_array_equal(
        rec.repeats.responses, written["repeats"][keep].transpose(1, 2, 0).astype(np.uint16)
    )
    assert rec.frame_rate_hz == pytest.approx(100.0)
    assert rec.pixel_size_deg == 0.1
    assert rec.splits["train"].tolist() == [[0, 180]]
    assert rec.splits["val"].tolist() == [[180, 200]]
    assert rec.splits["test"].tolist() == [[200, 250]]
    assert rec.cells.ids == ("cell0", "cell2", "cell3")
    assert rec.cells.types == ("unknown",) * 3
    assert np.isnan(rec.cells.center_deg).all()
    prov = json.loads(rec.extra_attrs["provenance"])
    assert prov["format"] == "deep-retina"
    assert prov["sources"][0]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert "train/response/binned" in prov["fields"]["/responses"]
    assert rec.extra_attrs["session"] == "15-10-07/naturalscene"
    assert json.loads(out.with_suffix(".json").read_text())["n_frames"] == 250


def test_chunked_import_equals_one_chunk_and_concatenates_sources(tmp_path: Path) -> None:
    a, b = tmp_path / "whitenoise.h5", tmp_path / "naturalscene.h5"
    wa = _train_test_file(a, repeat_key="cellNN", with_time=True, stimulus="float", seed=1)
    _train_test_file(b, repeat_key="cellNN", with_time=True, stimulus="float", seed=2)
    outs = []
    for chunk in (7, 4096):
        out = tmp_path / f"rec{chunk}.h5"
        opts = ImportOptions(pixel_size_deg=0.2, chunk_frames=chunk)
        import_dataset("deep-retina", [a, b], out, opts)
        outs.append(read_recording(out))
    small, big = outs
    np.testing.assert_array_equal(small.stimulus, big.stimulus)
    np.testing.assert_array_equal(small.responses, big.responses)
    assert small.n_frames == 500 and small.stimulus.dtype == np.float32
    np.testing.assert_array_equal(small.stimulus[:200], wa["train_stim"])
    assert small.splits["test"].tolist() == [[200, 250], [450, 500]]
    assert small.splits["val"].tolist() == [[180, 200], [430, 450]]


def test_goldin2022_import(tmp_path: Path) -> None:
    src = tmp_path / "mouse_goldin.h5"
    written = _train_test_file(
        src, repeat_key="cell_K", with_time=False, n_train=60, n_test=10, n_repeats=30
    )
    out = tmp_path / "g.h5"
    code, output = _import(["goldin2022", str(src), "--out", str(out), "--pixel-size-deg", "0.9"])
    assert code == 0, output
    rec = read_recording(out)
    assert rec.frame_rate_hz == pytest.approx(1000.0 / 300.0)
    np.testing.assert_array_equal(rec.responses[:60], written["train_resp"].T.astype(np.uint16))
    np.testing.assert_array_equal(rec.responses[60:], written["repeats"][:, 0].T)
    assert rec.repeats is not None and rec.repeats.n_repeats == 30
    np.testing.assert_array_equal(rec.repeats.responses, written["repeats"].transpose(1, 2, 0))
    code, output = _import(
        [
            "goldin2022",
            str(src),
            "--out",
            str(out),
            "--pixel-size-deg",
            "0.9",
            "--frame-rate-hz",
            "1.6667",
        ]
    )
    assert code == 0, output
    assert read_recording(out).frame_rate_hz == pytest.approx(1.6667)


def _break(
    field: str, action: Callable[[h5py.File], None]
) -> tuple[str, Callable[[h5py.File], None]]:
    return field, action


def _set(name: str, data: np.ndarray) -> Callable[[h5py.File], None]:
    def act(f: h5py.File) -> None:
        del f[name]
        f[name] = data

    return act


def _delete(name: str) -> Callable[[h5py.File], None]:
    def act(f: h5py.File) -> None:
        del f[name]

    return act


MALFORMED = [
    _break("train/response/binned", _delete("train/response/binned")),
    _break("train/response/binned", _set("train/response/binned", np.full((4, 200), 0.5))),
    _break("train/response/binned", _set("train/response/binned", np.ones((4, 199)))),
    _break("test/time", _set("test/time", np.zeros(50))),
    _break("train/stimulus", _set("train/stimulus", np.full((200, 6, 8), np.nan))),
    _break("test/repeats/cell02", _set("test/repeats/cell02", np.ones((3, 49)))),
    _break("test/repeats", _delete("test/repeats/cell04")),
    _break("/train", _delete("train")),
    _break("test/stimulus", _set("test/stimulus", np.zeros((50, 5, 8), np.uint8))),
]


@pytest.mark.parametrize(
    ("field", "breaker"), MALFORMED, ids=[f"{i}-{m[0]}" for i, m in enumerate(MALFORMED)]
)
def test_malformed_deep_retina_is_refused(
    tmp_path: Path, field: str, breaker: Callable[[h5py.File], None]
) -> None:
    src = tmp_path / "bad.h5"
    _train_test_file(src, repeat_key="cellNN", with_time=True)
    with h5py.File(src, "r+") as f:
        breaker(f)
    out = tmp_path / "sub" / "out.h5"  # a folder the import would create, then remove
    code, output = _import(["deep-retina", str(src), "--out", str(out), "--pixel-size-deg", "0.1"])
    assert code == 2, output
    assert field in output and "error" in output
    assert output.startswith("error: ") and output.count("\n") == 1, output  # no blank line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]  # nothing written


def test_unknown_pixel_size_and_bad_cells_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "s.h5"
    _train_test_file(src, repeat_key="cellNN", with_time=True)
    out = tmp_path / "out.h5"
    code, output = _import(["deep-retina", str(src), "--out", str(out)])
    assert code == 2 and "--pixel-size-deg" in output
    code, output = _import(
        ["deep-retina", str(src), "--out", str(out), "--pixel-size-deg", "1", "--cells", "1,9"]
    )
    assert code == 2 and "--cells" in output and "[9]" in output
    code, output = _import(["matlab", str(src), "--out", str(out), "--pixel-size-deg", "1"])
    assert code == 2 and "FORMAT" in output
    assert not out.exists()


def _nwb_file(path: Path, *, trials: bool = True, drop: bool = True) -> dict[str, np.ndarray]:
    """NWB with jittered timestamps, one dropped frame, 3 units, trials incl. 2 repeats."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.image import OpticalSeries

    rng = np.random.default_rng(3)
    n = 120
    ts = 10.0 + np.arange(n) * (1 / 60) + rng.uniform(-0.002, 0.002, n)
    if drop:
        ts[70:] += 1 / 60  # a dropped frame: one interval twice as long
    frames = rng.integers(0, 256, (n, H, W)).astype(np.uint8)
    frames[100:110] = frames[110:120]  # frames 100..119: one clip shown twice
    spikes = [np.sort(rng.uniform(ts[0] - 0.5, ts[-1] + 0.5, 300)) for _ in range(3)]
    spikes[0] = np.concatenate([spikes[0], ts[[5, 6, 6]]])  # spikes exactly on frame edges
    spikes[0].sort()
    nwb = NWBFile(
        session_description="t", identifier="sess-1", session_start_time=datetime.now(UTC)
    )
    nwb.add_stimulus(
        OpticalSeries(
            name="movie",
            data=frames,
            unit="n.a.",
            format="raw",
            timestamps=ts,
            distance=0.1,
            field_of_view=[0.1, 0.1],
            orientation="lower left",
            description="natural movie",
        )
    )
    nwb.add_unit_column("cell_type", "type")
    for i, st in enumerate(spikes):
        nwb.add_unit(spike_times=st, cell_type="ON" if i == 1 else "")
    if trials:
        nwb.add_trial_column("split", "split")
        for start, stop, kind in (
            (0, 80, "train"),
            (80, 90, "val"),
            (90, 100, "test"),
            (100, 110, "repeat"),
            (110, 120, "repeat"),
        ):
            end = ts[stop] if stop < n else ts[-1] + 0.02
            nwb.add_trial(start_time=ts[start], stop_time=end, split=kind)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return {"ts": ts, "frames": frames, "spikes": spikes}  # type: ignore[dict-item]


def _reference_counts(spikes: list[np.ndarray], ts: np.ndarray) -> np.ndarray:
    """Counts by the definition, one bin at a time: t_i <= s < t_{i+1}, last bin one median."""
    edges = [*ts.tolist(), float(ts[-1]) + float(np.median(np.diff(ts)))]
    out = np.zeros((len(ts), len(spikes)), dtype=np.int64)
    for c, st in enumerate(spikes):
        for i in range(len(ts)):
            out[i, c] = int(np.sum((st >= edges[i]) & (st < edges[i + 1])))
    return out


def test_nwb_import_bins_on_the_frames_own_timestamps(tmp_path: Path) -> None:
    src = tmp_path / "s.nwb"
    w = _nwb_file(src)
    out = tmp_path / "n.h5"
    code, output = _import(["nwb", str(src), "--out", str(out), "--pixel-size-deg", "0.05"])
    assert code == 0, output
    rec = read_recording(out)
    ref = _reference_counts(w["spikes"], w["ts"])  # type: ignore[arg-type]
    assert ref[:, 0].sum() > 0 and ref[6, 0] >= 2  # the on-edge spikes count in the later bin
    np.testing.assert_array_equal(rec.responses, ref[:100])
    np.testing.assert_array_equal(rec.stimulus, w["frames"][:100])
    assert rec.repeats is not None and rec.repeats.n_repeats == 2
    np.testing.assert_array_equal(rec.repeats.responses[0], ref[100:110])
    np.testing.assert_array_equal(rec.repeats.responses[1], ref[110:120])
    np.testing.assert_array_equal(rec.repeats.stimulus, w["frames"][100:110])
    assert rec.frame_rate_hz == pytest.approx(1.0 / np.median(np.diff(w["ts"])))
    assert rec.splits["train"].tolist() == [[0, 80]]
    assert rec.splits["val"].tolist() == [[80, 90]] and rec.splits["test"].tolist() == [[90, 100]]
    assert rec.cells.types == ("unknown", "ON", "unknown")
    assert rec.extra_attrs["session"] == "sess-1"


def test_nwb_malformed_is_refused(tmp_path: Path) -> None:
    from pynwb import NWBHDF5IO, NWBFile

    out = tmp_path / "o.h5"
    src = tmp_path / "s.nwb"
    _nwb_file(src)
    code, output = _import(["nwb", str(src), "--out", str(out)])
    assert code == 2 and "--pixel-size-deg" in output
    code, output = _import(
        ["nwb", str(src), "--out", str(out), "--pixel-size-deg", "1", "--series", "nope"]
    )
    assert code == 2 and "--series nope" in output and "movie" in output
    empty = tmp_path / "e.nwb"
    nwb = NWBFile(session_description="t", identifier="x", session_start_time=datetime.now(UTC))
    with NWBHDF5IO(str(empty), "w") as io:
        io.write(nwb)
    code, output = _import(["nwb", str(empty), "--out", str(out), "--pixel-size-deg", "1"])
    assert code == 2 and "ImageSeries" in output
    code, output = _import(["nwb", str(tmp_path / "missing.nwb"), "--out", str(out)])
    assert code == 2 and "no such file" in output
    assert not out.exists()


def _small_recording() -> Recording:
    rng = np.random.default_rng(7)
    n, n_rep = 90, 12
    return Recording(
        stimulus=rng.uniform(-1, 1, (n, H, W)).astype(np.float32),
        responses=rng.poisson(0.8, (n, 3)).astype(np.uint16),
        cells=CellInfo(
            ids=("a", "b", "c"),
            types=("ON transient", "unknown", "OFF sustained"),
            center_deg=np.array([[0.5, -0.25], [np.nan, np.nan], [1.0, 2.0]], dtype=np.float32),
        ),
        splits={
            "train": np.array([[0, 60]]),
            "val": np.array([[60, 75]]),
            "test": np.array([[75, 90]]),
        },
        frame_rate_hz=30.0,
        pixel_size_deg=0.125,
        repeats=Repeats(
            stimulus=rng.uniform(-1, 1, (n_rep, H, W)).astype(np.float32),
            responses=rng.poisson(2.0, (4, n_rep, 3)).astype(np.uint16),
        ),
    )


def test_nwb_export_then_import_gives_the_same_recording(tmp_path: Path) -> None:
    rec = _small_recording()
    src = write_recording(rec, tmp_path / "rec.h5")
    nwb = tmp_path / "rec.nwb"
    result = runner.invoke(
        app, ["dataset", "export", "--format", "nwb", str(src), "--out", str(nwb)]
    )
    assert result.exit_code == 0, result.output
    back = tmp_path / "back.h5"
    code, output = _import(["nwb", str(nwb), "--out", str(back)])
    assert code == 0, output
    got = read_recording(back)
    np.testing.assert_array_equal(got.responses, rec.responses)
    np.testing.assert_array_equal(got.stimulus, rec.stimulus)
    assert got.repeats is not None and rec.repeats is not None
    np.testing.assert_array_equal(got.repeats.responses, rec.repeats.responses)
    np.testing.assert_array_equal(got.repeats.stimulus, rec.repeats.stimulus)
    assert got.frame_rate_hz == pytest.approx(30.0) and got.pixel_size_deg == 0.125
    for name in ("train", "val", "test"):
        assert got.splits[name].tolist() == rec.splits[name].tolist()
    assert got.cells.ids == rec.cells.ids and got.cells.types == rec.cells.types
    np.testing.assert_array_equal(got.cells.center_deg, rec.cells.center_deg)


def test_export_refuses_a_broken_recording(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.attrs["format"] = "other"
    out = tmp_path / "x.nwb"
    result = runner.invoke(app, ["dataset", "export", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and "format" in result.output
    assert not out.exists()


def test_centers_from_sta_find_the_driving_pixel(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n_train, n_test = 3000, 300
    src = tmp_path / "wn.h5"
    with h5py.File(src, "w") as f:
        for part, n in (("train", n_train), ("test", n_test)):
            stim = np.where(rng.random((n, H, W)) < 0.5, -1.0, 1.0).astype(np.float32)
            drive = np.roll(
                stim[:, 2, 5], 2
            )  # the cell follows pixel (row 2, col 5), 2 frames late
            counts = rng.poisson(np.where(drive > 0, 3.0, 0.1))[None, :].astype(np.float64)
            f[f"{part}/stimulus"] = stim
            f[f"{part}/time"] = np.arange(n) * 0.01
            f[f"{part}/response/binned"] = counts
    out = tmp_path / "wn_rec.h5"
    code, output = _import(
        [
            "deep-retina",
            str(src),
            "--out",
            str(out),
            "--pixel-size-deg",
            "0.5",
            "--centers-from-sta",
        ]
    )
    assert code == 0, output
    center = read_recording(out).cells.center_deg[0]
    # (x right, y up) from the frame centre: col 5 of 8 → +0.75 deg; row 2 of 6 → +0.25 deg
    assert center[0] == pytest.approx((5 - 3.5) * 0.5, abs=0.2)
    assert center[1] == pytest.approx((2.5 - 2) * 0.5, abs=0.2)


def test_importers_import_no_torch() -> None:
    """The importers run where the reader runs: a fresh interpreter must not load torch."""
    import subprocess
    import sys

    code = "import sys, encoder.importers, encoder.cli_data; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def _nwb_with(
    path: Path,
    *,
    rate: bool = False,
    split_col: bool = True,
    repeat_lengths: tuple[int, int] = (10, 10),
) -> np.ndarray:
    """A small NWB variant: 60 frames by rate or timestamps, 2 units, repeat rows as given."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.image import ImageSeries

    rng = np.random.default_rng(11)
    frames = rng.integers(0, 256, (60, H, W)).astype(np.uint8)
    kwargs: dict[str, object] = (
        {"rate": 50.0, "starting_time": 2.0} if rate else {"timestamps": 2.0 + np.arange(60) / 50}
    )
    nwb = NWBFile(session_description="t", identifier="v", session_start_time=datetime.now(UTC))
    nwb.add_acquisition(
        ImageSeries(
            name="frames",
            data=frames,
            unit="n.a.",
            format="raw",
            description="pixel_size_deg=0.3",
            **kwargs,
        )
    )
    for _ in range(2):
        nwb.add_unit(spike_times=np.sort(rng.uniform(2.0, 3.2, 80)))
    if split_col:
        nwb.add_trial_column("split", "split")
    rows = [
        (0, 30, "train"),
        (30, 35, "val"),
        (35, 40, "test"),
        (40, 40 + repeat_lengths[0], "repeat"),
        (50, 50 + repeat_lengths[1], "repeat"),
    ]
    for a, b, kind in rows:
        extra = {"split": kind} if split_col else {}
        nwb.add_trial(start_time=2.0 + a / 50 - 1e-6, stop_time=2.0 + b / 50 - 1e-6, **extra)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return frames


def test_nwb_rate_only_series_and_pixel_size_from_description(tmp_path: Path) -> None:
    src = tmp_path / "r.nwb"
    frames = _nwb_with(src, rate=True)
    out = tmp_path / "r.h5"
    code, output = _import(["nwb", str(src), "--out", str(out)])
    assert code == 0, output
    rec = read_recording(out)
    assert rec.frame_rate_hz == pytest.approx(50.0) and rec.pixel_size_deg == 0.3
    np.testing.assert_array_equal(rec.stimulus, frames[:40])
    assert rec.repeats is not None and rec.repeats.responses.shape == (2, 10, 2)
    assert rec.cells.ids == ("0", "1")


@pytest.mark.parametrize(
    ("variant", "field"),
    [({"split_col": False}, "column 'split'"), ({"repeat_lengths": (10, 8)}, "repeat rows")],
)
def test_nwb_malformed_trials_are_refused(
    tmp_path: Path, variant: dict[str, object], field: str
) -> None:
    src = tmp_path / "t.nwb"
    _nwb_with(src, **variant)  # type: ignore[arg-type]
    out = tmp_path / "new_dir" / "t.h5"
    code, output = _import(["nwb", str(src), "--out", str(out)])
    assert code == 2 and field in output, output
    assert not out.parent.exists()


def test_progress_reports_every_frame_and_session_is_kept(tmp_path: Path) -> None:
    src = tmp_path / "p.h5"
    _train_test_file(src, repeat_key="cellNN", with_time=True)
    calls: list[tuple[str, int, int]] = []
    out = import_dataset(
        "deep-retina",
        [src],
        tmp_path / "p_rec.h5",
        ImportOptions(pixel_size_deg=0.1, chunk_frames=64, session="retina-7"),
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    frames = [(d, t) for s, d, t in calls if s == "frames"]
    assert [d for d, _ in frames] == [64, 128, 192, 200, 250]  # per chunk, per block
    assert all(t == 250 for _, t in frames)
    assert calls[-1][0] == "validating"
    assert read_recording(out).extra_attrs["session"] == "retina-7"


def test_streaming_validation_agrees_with_the_reader(tmp_path: Path) -> None:
    from encoder.importers.base import validate_recording_file
    from encoder.recording import RecordingFormatError

    path = write_recording(_small_recording(), tmp_path / "ok.h5")
    validate_recording_file(path, chunk_frames=8)  # a valid file passes
    with h5py.File(path, "r+") as f:
        f["stimulus"][40] = 3.0  # contrast outside [-1, 1] in a later chunk
    with pytest.raises(RecordingFormatError, match=r"/stimulus: float32 contrast must lie"):
        validate_recording_file(path, chunk_frames=8)
    with pytest.raises(RecordingFormatError, match=r"/stimulus: float32 contrast must lie"):
        read_recording(path)
    with h5py.File(path, "r+") as f:
        f["stimulus"][40] = 0.0
        del f["splits/val"]
    with pytest.raises(RecordingFormatError, match=r"/splits/val: missing"):
        validate_recording_file(path)


@pytest.mark.parametrize(
    ("values", "expected_kind", "expected"),
    [
        (np.array([0.0, 1.0]), "contrast", np.array([-1.0, 1.0])),  # 0/1 noise is luminance
        (np.array([0.0, 128.0, 255.0]), "uint8", np.array([0, 128, 255])),
        (np.array([-0.5, 0.5]), "contrast", np.array([-0.5, 0.5])),  # already contrast
        (np.array([-2.0, 1.0]), "contrast", np.array([-1.0, 0.5])),  # z-scored: / max |x|
    ],
)
def test_stimulus_values_are_mapped_by_their_range(
    tmp_path: Path, values: np.ndarray, expected_kind: str, expected: np.ndarray
) -> None:
    src = tmp_path / "m.h5"
    _train_test_file(src, repeat_key="cellNN", with_time=True)
    pattern = np.resize(values, 200 * H * W).reshape(200, H, W)
    with h5py.File(src, "r+") as f:
        del f["train/stimulus"], f["test/stimulus"]
        f["train/stimulus"] = pattern.astype(np.float64)
        f["test/stimulus"] = pattern[:50].astype(np.float64)
    out = import_dataset(
        "deep-retina", [src], tmp_path / "m_rec.h5", ImportOptions(pixel_size_deg=1)
    )
    rec = read_recording(out)
    assert rec.stimulus_kind == expected_kind
    np.testing.assert_allclose(rec.stimulus.reshape(-1)[: values.size], expected)
    prov = json.loads(rec.extra_attrs["provenance"])
    assert ("unchanged" if expected_kind == "uint8" else "contrast") in prov["fields"]["/stimulus"]


@pytest.mark.parametrize("fmt", ["deep-retina", "goldin2022", "nwb"])
def test_a_file_that_is_not_hdf5_is_exactly_one_line_in_every_format(
    tmp_path: Path, fmt: str
) -> None:
    """Off a terminal the import's progress bar must leave nothing: stdout empty, stderr the
    error line alone (rich's stopped bar used to add a blank line above it)."""
    src = tmp_path / "noise.h5"
    src.write_bytes(np.random.default_rng(1).bytes(4096))
    out = tmp_path / "out.h5"
    args = ["dataset", "import", fmt, str(src), "--out", str(out), "--pixel-size-deg", "0.1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {src}: ") and result.stderr.count("\n") == 1
    assert not out.exists()
