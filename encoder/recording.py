"""The npe recording format, version 1: stimulus frames and spike counts in one HDF5 file.

Real recordings and the synthetic retina share this layout, so every downstream tool
(training, evaluation, STA, INT8 calibration) reads one format. The reader validates
everything before returning, and every refusal names the HDF5 path and the shape it
expected, because a silently misread recording poisons every model trained on it.

Layout::

    / attrs: format="npe.recording", version=1, frame_rate_hz, pixel_size_deg, source
    /stimulus                 [n_frames, height, width] uint8 (0..255) or float32 contrast in [-1, 1]; attr kind
    /responses                [n_frames, n_cells] uint16 spike counts per cell per stimulus frame
    /cells/id                 [n_cells] str
    /cells/type               [n_cells] str
    /cells/center_deg         [n_cells, 2] float32 (x, y) degrees from the stimulus centre; NaN if unknown
    /splits/train|val|test    [k, 2] int64 half-open frame ranges, non-overlapping
    /repeats/stimulus         (optional) [n_rep_frames, height, width]
    /repeats/responses        (optional) [R, n_rep_frames, n_cells] uint16
    /truth/rates_hz           (optional) [n_frames, n_cells] float32
    /truth/repeat_rates_hz    (optional) [n_rep_frames, n_cells] float32
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from encoder.errors import EncoderError

FORMAT_NAME = "npe.recording"
FORMAT_VERSION = 1
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
STIMULUS_KINDS: tuple[str, ...] = ("uint8", "contrast")


class RecordingFormatError(EncoderError, ValueError):
    """A file (or in-memory recording) that breaks the npe recording layout."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RecordingFormatError(message)


def _check_stimulus(name: str, stimulus: NDArray[Any]) -> None:
    """Stimulus frames are uint8 luminance or float32 contrast in [-1, 1], never NaN."""
    _require(
        stimulus.ndim == 3,
        f"{name}: expected shape [n_frames, height, width], got {list(stimulus.shape)}",
    )
    if stimulus.dtype == np.uint8:
        return
    _require(
        stimulus.dtype == np.float32,
        f"{name}: expected dtype uint8 or float32, got {stimulus.dtype}",
    )
    _require(
        bool(np.all(np.isfinite(stimulus))),
        f"{name}: contains NaN or infinite values (expected [n_frames, height, width] uint8 "
        "0..255 or float32 contrast in [-1, 1])",
    )
    lo, hi = float(stimulus.min(initial=0.0)), float(stimulus.max(initial=0.0))
    _require(
        lo >= -1.0 and hi <= 1.0,
        f"{name}: float32 contrast must lie in [-1, 1], found range [{lo:.3g}, {hi:.3g}] "
        "(expected [n_frames, height, width] uint8 0..255 or float32 contrast in [-1, 1])",
    )


def check_splits(splits: dict[str, NDArray[np.int64]], n_frames: int) -> None:
    """train, val and test present; every range [k, 2] half-open, inside the frames, disjoint.

    A function of its own so a streaming validator (encoder.importers) checks a file's splits
    without loading its stimulus.
    """
    for name in SPLIT_NAMES:
        _require(name in splits, f"/splits/{name}: missing (expected [k, 2] int64)")
    all_ranges: list[tuple[int, int, str]] = []
    for name, ranges in splits.items():
        _require(
            ranges.ndim == 2 and ranges.shape[1] == 2,
            f"/splits/{name}: expected shape [k, 2], got {list(ranges.shape)}",
        )
        for start, stop in ranges.tolist():
            _require(
                0 <= start < stop <= n_frames,
                f"/splits/{name}: range [{start}, {stop}) is empty or outside "
                f"[0, {n_frames}) frames (expected [k, 2] int64 half-open ranges "
                f"within the {n_frames} frames)",
            )
            all_ranges.append((start, stop, name))
    all_ranges.sort()
    for (s0, e0, n0), (s1, e1, n1) in itertools.pairwise(all_ranges):
        _require(
            s1 >= e0,
            f"/splits: range [{s0}, {e0}) of {n0} overlaps [{s1}, {e1}) of {n1} "
            "(expected non-overlapping [k, 2] int64 half-open ranges)",
        )


@dataclass(frozen=True)
class CellInfo:
    """Identity and receptive-field centre of the recorded cells.

    Attributes:
        ids: [n_cells] unique cell identifiers.
        types: [n_cells] cell type names ("ON transient", "OFF sustained", ..., "unknown").
        center_deg: [n_cells, 2] float32 (x, y) in degrees from the stimulus centre, NaN if unknown.
    """

    ids: tuple[str, ...]
    types: tuple[str, ...]
    center_deg: NDArray[np.float32]

    def __post_init__(self) -> None:
        n = len(self.ids)
        _require(n > 0, "/cells/id: expected at least one cell")
        _require(len(set(self.ids)) == n, "/cells/id: cell ids must be unique")
        _require(
            len(self.types) == n,
            f"/cells/type: expected shape [{n}] (one per cell), got [{len(self.types)}]",
        )
        _require(
            self.center_deg.shape == (n, 2),
            f"/cells/center_deg: expected shape [{n}, 2], got {list(self.center_deg.shape)}",
        )

    @property
    def n_cells(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Repeats:
    """A test clip shown R times: the basis of noise ceilings and explainable variance.

    Attributes:
        stimulus: [n_rep_frames, height, width] the repeated clip.
        responses: [R, n_rep_frames, n_cells] uint16 spike counts of each repeat.
        truth_rates_hz: [n_rep_frames, n_cells] float32 noise-free rates (synthetic only) or None.
    """

    stimulus: NDArray[Any]
    responses: NDArray[np.uint16]
    truth_rates_hz: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        _check_stimulus("/repeats/stimulus", self.stimulus)
        n_rep = self.stimulus.shape[0]
        _require(
            self.responses.ndim == 3 and self.responses.shape[1] == n_rep,
            f"/repeats/responses: expected shape [R, {n_rep}, n_cells], "
            f"got {list(self.responses.shape)}",
        )
        _require(
            self.responses.dtype == np.uint16,
            f"/repeats/responses: expected dtype uint16, got {self.responses.dtype}",
        )
        if self.truth_rates_hz is not None:
            expected = (n_rep, self.responses.shape[2])
            _require(
                self.truth_rates_hz.shape == expected,
                f"/truth/repeat_rates_hz: expected shape {list(expected)}, "
                f"got {list(self.truth_rates_hz.shape)}",
            )

    @property
    def n_repeats(self) -> int:
        return int(self.responses.shape[0])


@dataclass(frozen=True)
class Recording:
    """One recording (real or synthetic), validated on construction.

    Attributes:
        stimulus: [n_frames, height, width] uint8 luminance or float32 contrast in [-1, 1].
        responses: [n_frames, n_cells] uint16 spike counts per stimulus frame.
        cells: identities, types and receptive-field centres.
        splits: name → [k, 2] int64 half-open frame ranges; train, val and test are required.
        frame_rate_hz: stimulus frame rate (one response bin per frame).
        pixel_size_deg: visual angle of one stimulus pixel.
        source: free text: the rig, or the synthetic retina's parameters.
        repeats: the repeated test clip, if recorded.
        truth_rates_hz: [n_frames, n_cells] float32 noise-free rates (synthetic only) or None.
    """

    stimulus: NDArray[Any]
    responses: NDArray[np.uint16]
    cells: CellInfo
    splits: dict[str, NDArray[np.int64]]
    frame_rate_hz: float
    pixel_size_deg: float
    source: str = ""
    repeats: Repeats | None = None
    truth_rates_hz: NDArray[np.float32] | None = None
    extra_attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_stimulus("/stimulus", self.stimulus)
        n_frames = self.stimulus.shape[0]
        n_cells = self.cells.n_cells
        _require(
            self.responses.shape == (n_frames, n_cells),
            f"/responses: expected shape [{n_frames}, {n_cells}] (n_frames, n_cells), "
            f"got {list(self.responses.shape)}",
        )
        _require(
            self.responses.dtype == np.uint16,
            f"/responses: expected dtype uint16, got {self.responses.dtype}",
        )
        _require(
            np.isfinite(self.frame_rate_hz) and self.frame_rate_hz > 0,
            f"/ attrs frame_rate_hz: expected a positive number, got {self.frame_rate_hz}",
        )
        _require(
            np.isfinite(self.pixel_size_deg) and self.pixel_size_deg > 0,
            f"/ attrs pixel_size_deg: expected a positive number, got {self.pixel_size_deg}",
        )
        check_splits(self.splits, n_frames)
        if self.repeats is not None:
            _require(
                self.repeats.stimulus.shape[1:] == self.stimulus.shape[1:],
                f"/repeats/stimulus: expected frames of {list(self.stimulus.shape[1:])}, "
                f"got {list(self.repeats.stimulus.shape[1:])}",
            )
            _require(
                self.repeats.responses.shape[2] == n_cells,
                f"/repeats/responses: expected shape [R, n_rep_frames, {n_cells}], "
                f"got {list(self.repeats.responses.shape)}",
            )
        if self.truth_rates_hz is not None:
            _require(
                self.truth_rates_hz.shape == (n_frames, n_cells),
                f"/truth/rates_hz: expected shape [{n_frames}, {n_cells}], "
                f"got {list(self.truth_rates_hz.shape)}",
            )

    @property
    def n_frames(self) -> int:
        return int(self.stimulus.shape[0])

    @property
    def n_cells(self) -> int:
        return self.cells.n_cells

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(height, width) of one stimulus frame in pixels."""
        return (int(self.stimulus.shape[1]), int(self.stimulus.shape[2]))

    @property
    def stimulus_kind(self) -> str:
        return "uint8" if self.stimulus.dtype == np.uint8 else "contrast"

    def split_frames(self, name: str) -> int:
        """Number of frames in split `name`."""
        ranges = self.splits[name]
        return int((ranges[:, 1] - ranges[:, 0]).sum())


#: The contrast convention, defined once: contrast = (L − CONTRAST_OFFSET) / CONTRAST_SCALE
#: for uint8 luminance L (0 → −1, 255 → +1 around mid-grey 127.5). Training uses it here;
#: export writes it into every bundle's manifest (`preprocessing`), and the runtime (which
#: never imports this package) applies the bundle's values.
CONTRAST_OFFSET = 127.5
CONTRAST_SCALE = 127.5


def stimulus_as_contrast(stimulus: NDArray[Any]) -> NDArray[np.float32]:
    """[n, h, w] uint8 luminance (or float32 contrast) → float32 contrast in [-1, 1].

    uint8 maps 0 → -1, 255 → +1 around mid-grey (`CONTRAST_OFFSET`, `CONTRAST_SCALE`), the
    convention every model and, through the bundle's manifest, the runtime share.
    """
    if stimulus.dtype == np.uint8:
        return ((stimulus.astype(np.float32) - CONTRAST_OFFSET) / CONTRAST_SCALE).astype(np.float32)
    return np.asarray(stimulus, dtype=np.float32)


def write_recording(recording: Recording, path: str | Path) -> Path:
    """Write `recording` to `path` in format version 1 (overwrites)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    str_dtype = h5py.string_dtype(encoding="utf-8")
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["version"] = FORMAT_VERSION
        f.attrs["frame_rate_hz"] = float(recording.frame_rate_hz)
        f.attrs["pixel_size_deg"] = float(recording.pixel_size_deg)
        f.attrs["source"] = recording.source
        for key, value in recording.extra_attrs.items():
            f.attrs[key] = value
        stim = f.create_dataset(
            "stimulus", data=recording.stimulus, chunks=True, compression="gzip", compression_opts=1
        )
        stim.attrs["kind"] = recording.stimulus_kind
        f.create_dataset("responses", data=recording.responses, compression="gzip")
        cells = f.create_group("cells")
        cells.create_dataset(
            "id", data=np.array(recording.cells.ids, dtype=object), dtype=str_dtype
        )
        cells.create_dataset(
            "type", data=np.array(recording.cells.types, dtype=object), dtype=str_dtype
        )
        cells.create_dataset("center_deg", data=recording.cells.center_deg.astype(np.float32))
        splits = f.create_group("splits")
        for name, ranges in recording.splits.items():
            splits.create_dataset(name, data=np.asarray(ranges, dtype=np.int64).reshape(-1, 2))
        if recording.repeats is not None:
            rep = f.create_group("repeats")
            rs = rep.create_dataset("stimulus", data=recording.repeats.stimulus, compression="gzip")
            rs.attrs["kind"] = (
                "uint8" if recording.repeats.stimulus.dtype == np.uint8 else "contrast"
            )
            rep.create_dataset("responses", data=recording.repeats.responses, compression="gzip")
        if recording.truth_rates_hz is not None or (
            recording.repeats is not None and recording.repeats.truth_rates_hz is not None
        ):
            truth = f.create_group("truth")
            if recording.truth_rates_hz is not None:
                truth.create_dataset(
                    "rates_hz", data=recording.truth_rates_hz.astype(np.float32), compression="gzip"
                )
            if recording.repeats is not None and recording.repeats.truth_rates_hz is not None:
                truth.create_dataset(
                    "repeat_rates_hz",
                    data=recording.repeats.truth_rates_hz.astype(np.float32),
                    compression="gzip",
                )
    return path


#: Largest dataset the reader loads (bytes, as declared in the file, checked before reading):
#: a hostile file can declare a 52 GB stimulus that would end in MemoryError.
MAX_DATASET_BYTES = 4 * 1024**3


def _dataset(f: h5py.File, name: str, expected: str) -> NDArray[Any]:
    _require(name in f, f"/{name}: missing (expected {expected})")
    obj = f[name]
    _require(isinstance(obj, h5py.Dataset), f"/{name}: expected a dataset {expected}, got a group")
    declared = int(np.prod(obj.shape, dtype=np.float64)) * int(obj.dtype.itemsize)
    _require(
        declared <= MAX_DATASET_BYTES,
        f"/{name}: declares {declared} bytes (shape {list(obj.shape)}), above the "
        f"{MAX_DATASET_BYTES}-byte reading budget",
    )
    return np.asarray(obj[()])


def _integers(f: h5py.File, name: str, expected: str) -> NDArray[np.int64]:
    """An integer dataset as int64 (a float one, NaN included, is refused, not cast)."""
    raw = _dataset(f, name, expected)
    _require(
        np.issubdtype(raw.dtype, np.integer),
        f"/{name}: expected {expected}, got dtype {raw.dtype}",
    )
    return raw.astype(np.int64)


def _strings(f: h5py.File, name: str, expected: str) -> tuple[str, ...]:
    raw = _dataset(f, name, expected)
    _require(raw.ndim == 1, f"/{name}: expected {expected}, got shape {list(raw.shape)}")
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw.tolist())


#: What h5py and numpy raise on a damaged or hostile file once it has opened (a truncated
#: dataset, a bad filter, a dtype that will not convert, a string that is not UTF-8).
_H5_READ_ERRORS = (OSError, KeyError, TypeError, ValueError, RuntimeError, OverflowError)


def read_recording(path: str | Path) -> Recording:
    """Read and validate a recording; raise RecordingFormatError naming what is wrong.

    Any error h5py or numpy raises while reading an opened file (truncated data, wrong
    dtypes, undecodable strings) becomes a RecordingFormatError too: the file is untrusted,
    so a damaged one is a one-line refusal, not a traceback.
    """
    path = Path(path)
    try:
        return _read_recording(path)
    except RecordingFormatError:
        raise
    except _H5_READ_ERRORS as exc:
        raise RecordingFormatError(
            f"{path}: unreadable recording ({type(exc).__name__}: {' '.join(str(exc).split())})"
        ) from exc


def _read_recording(path: Path) -> Recording:
    if not path.exists():
        raise RecordingFormatError(f"{path}: no such file")
    if not path.is_file():
        raise RecordingFormatError(
            f"{path}: is a directory or not a regular file, expected a recording"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise RecordingFormatError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        _require(fmt == FORMAT_NAME, f"/ attrs format: expected {FORMAT_NAME!r}, got {fmt!r}")
        version = f.attrs.get("version")
        try:
            version_ok = version is not None and int(version) == FORMAT_VERSION
        except (TypeError, ValueError):
            version_ok = False
        _require(
            version_ok,
            f"/ attrs version: this reader understands version {FORMAT_VERSION}, "
            f"got {version.item() if isinstance(version, np.generic) else version!r}",
        )
        # Upper bounds: no camera or screen runs above 10 kHz, and one pixel cannot span more
        # than the visual field; a file claiming so would be trained and exported as is.
        for attr, upper in (("frame_rate_hz", 10_000.0), ("pixel_size_deg", 180.0)):
            _require(attr in f.attrs, f"/ attrs {attr}: missing (expected a positive number)")
            value = f.attrs[attr]
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, (bool, np.bool_)
            )
            _require(
                numeric and bool(np.isfinite(value)) and 0 < float(value) <= upper,
                f"/ attrs {attr}: expected a positive finite number up to {upper:g}, got {value!r}",
            )
        stimulus = _dataset(f, "stimulus", "[n_frames, height, width] uint8 or float32")
        responses = _dataset(f, "responses", "[n_frames, n_cells] uint16")
        _require("cells" in f, "/cells: missing group (expected id, type, center_deg)")
        ids = _strings(f, "cells/id", "[n_cells] str")
        types = _strings(f, "cells/type", "[n_cells] str")
        center = _dataset(f, "cells/center_deg", "[n_cells, 2] float32").astype(np.float32)
        _require("splits" in f, "/splits: missing group (expected train, val, test)")
        splits = {name: _integers(f, f"splits/{name}", "[k, 2] int64") for name in f["splits"]}
        repeats = None
        if "repeats" in f:
            rep_truth = (
                _dataset(f, "truth/repeat_rates_hz", "[n_rep_frames, n_cells] float32").astype(
                    np.float32
                )
                if "truth/repeat_rates_hz" in f
                else None
            )
            repeats = Repeats(
                stimulus=_dataset(f, "repeats/stimulus", "[n_rep_frames, height, width]"),
                responses=_dataset(f, "repeats/responses", "[R, n_rep_frames, n_cells] uint16"),
                truth_rates_hz=rep_truth,
            )
        truth = (
            _dataset(f, "truth/rates_hz", "[n_frames, n_cells] float32").astype(np.float32)
            if "truth/rates_hz" in f
            else None
        )
        known = {"format", "version", "frame_rate_hz", "pixel_size_deg", "source"}
        extra = {k: v for k, v in f.attrs.items() if k not in known}
        source = f.attrs.get("source", "")
        return Recording(
            stimulus=stimulus,
            responses=responses,
            cells=CellInfo(ids=ids, types=types, center_deg=center),
            splits=splits,
            frame_rate_hz=float(f.attrs["frame_rate_hz"]),
            pixel_size_deg=float(f.attrs["pixel_size_deg"]),
            source=source.decode() if isinstance(source, bytes) else str(source),
            repeats=repeats,
            truth_rates_hz=truth,
            extra_attrs=extra,
        )


@dataclass
class StimulusFile:
    """A recording's stimulus left on disk: frames are read only where they are indexed.

    For callers that need a few windows of a large recording (INT8 calibration frames) without
    loading it. Use as a context manager, or call close().

    Attributes:
        stimulus: the ``/stimulus`` dataset [n_frames, height, width] (h5py, lazy).
        frame_rate_hz: the recording's frame rate.
        train_ranges: half-open frame ranges of the train split (the whole recording when the
            file has no train split).
    """

    stimulus: h5py.Dataset
    frame_rate_hz: float
    train_ranges: list[tuple[int, int]]
    _file: h5py.File

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> StimulusFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_stimulus(path: str | Path) -> StimulusFile:
    """Open a recording's stimulus lazily; RecordingFormatError names what is wrong.

    Checks what reading windows needs: the format and version attributes, a positive finite
    frame rate, a 3-D stimulus and well-formed train ranges.
    """
    path = Path(path)
    try:
        return _open_stimulus(path)
    except RecordingFormatError:
        raise
    except _H5_READ_ERRORS as exc:
        raise RecordingFormatError(
            f"{path}: unreadable recording ({type(exc).__name__}: {' '.join(str(exc).split())})"
        ) from exc


def open_recording_file(path: Path) -> h5py.File:
    """`path` opened read-only after checking that it is a regular file, readable as HDF5 and
    an npe recording of this format version (the caller closes it). One check, shared by the
    stimulus opener and the lazy training reader, so both refuse a foreign file alike."""
    if not path.is_file():
        raise RecordingFormatError(
            f"{path}: no such file" if not path.exists() else f"{path}: not a regular file"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise RecordingFormatError(f"{path}: not a readable HDF5 file ({exc})") from exc
    try:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        version = f.attrs.get("version")
        if (
            fmt != FORMAT_NAME
            or not isinstance(version, int | np.integer)
            or int(version) != FORMAT_VERSION
        ):
            raise RecordingFormatError(
                f"{path}: not an npe recording v{FORMAT_VERSION} (attrs format={fmt!r}, version={version!r})"
            )
    except BaseException:
        f.close()
        raise
    return f


def _open_stimulus(path: Path) -> StimulusFile:
    f = open_recording_file(path)
    try:
        rate = f.attrs.get("frame_rate_hz")
        if (
            not isinstance(rate, float | int | np.floating | np.integer)
            or not 0 < float(rate) < 1e4
        ):
            raise RecordingFormatError(
                f"{path}: / attrs frame_rate_hz: expected a positive number, got {rate!r}"
            )
        stim = f.get("stimulus")
        if not isinstance(stim, h5py.Dataset) or stim.ndim != 3:
            raise RecordingFormatError(f"{path}: /stimulus: expected [n_frames, height, width]")
        n_frames = int(stim.shape[0])
        ranges = [(0, n_frames)]
        train = f.get("splits/train")
        if isinstance(train, h5py.Dataset) and train.size:
            tr = np.asarray(train, dtype=np.int64).reshape(-1, 2)
            if (tr[:, 0] < 0).any() or (tr[:, 1] > n_frames).any() or (tr[:, 1] < tr[:, 0]).any():
                raise RecordingFormatError(f"{path}: /splits/train: ranges outside [0, {n_frames})")
            ranges = [(int(a), int(b)) for a, b in tr]
        return StimulusFile(stim, float(rate), ranges, f)
    except BaseException:
        f.close()
        raise
