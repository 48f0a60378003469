"""Property tests for every loader of a user-supplied file (issue 16).

Hypothesis generates broken inputs per loader: truncations of a valid file, random bytes,
deep nesting, wrong types, NaN/Infinity, huge numbers, long strings and unknown keys in a
valid document, for the JSON loaders (arrays, calibrations, limits, manifests, implants), key
files, TOML configuration files, calibration session files, HDF5 recordings and ONNX models.
Each must either load (a mutation may happen to stay valid) or be refused with the loader's
own error class in one line; for inputs that cannot be valid (truncation, garbage, depth, NaN)
refusal is required. A few go through the CLI: exit code 2, one `error:` line, nothing
written. `max_examples` is small and `deadline=None`: the suite stays quick on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from calibration.session import SessionError, SessionLog
from encoder.recording import RecordingFormatError, read_recording
from hardware.arrays import ArrayError, load_array
from hardware.calibration_file import CalibrationError, load_calibration
from hardware.implant import ImplantError, load_implant
from hardware.keys import DeviceKeyError, load_or_create_device_key
from hardware.safety import SafetyConfigError, SafetyLimits
from npe_cli import app
from npe_config import ConfigFileError, load_config_file
from runtime.bundle import BundleError, BundleManifest, default_bundle_path, load_bundle

SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _one_line_refusal(load: Callable[[], object], error: type[Exception]) -> bool:
    """Call `load`; True if it was refused with `error` in one non-empty line, False if it
    loaded. Any other exception propagates (and fails the test: that is a traceback)."""
    try:
        load()
    except error as exc:
        msg = str(exc)
        assert msg.strip() and "\n" not in msg, msg
        return True
    return False


# --- mutations of a valid JSON document ----------------------------------------------------


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(doc, list) and doc:
        for i, v in enumerate(doc[:4]):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = json.loads(json.dumps(doc))
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


WRONG_VALUES = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]).map(lambda t: ("raw", t)),
    st.sampled_from([10**400, -(10**400), 2**64, -1, 0, 1e308, -1e308]).map(lambda v: ("v", v)),
    st.sampled_from(["no", "", "20", "x" * 100_000, [], {}, [[[]]], None, True, False]).map(
        lambda v: ("v", v)
    ),
    st.text(max_size=20).map(lambda v: ("v", v)),
)


def _mutated(doc: dict[str, Any]) -> st.SearchStrategy[tuple[bytes, bool]]:
    """(file bytes, must_refuse) from a valid document: one leaf set to a wrong value, an
    unknown key added, or the text truncated (truncation must be refused)."""
    leaves = list(_leaves(doc))
    text = json.dumps(doc)

    def leaf(args: tuple[tuple[Any, ...], tuple[str, Any]]) -> tuple[bytes, bool]:
        path, (kind, value) = args
        if kind == "raw":
            marker = "__npe_marker__"
            return json.dumps(_set(doc, path, marker)).replace(f'"{marker}"', value).encode(), True
        return json.dumps(_set(doc, path, value)).encode(), False

    unknown = st.text(min_size=1, max_size=10).filter(lambda k: k not in doc)
    return st.one_of(
        st.tuples(st.sampled_from(leaves), WRONG_VALUES).map(leaf),
        unknown.map(lambda k: (json.dumps({**doc, k: 1}).encode(), False)),
        st.integers(0, max(0, len(text) - 2)).map(lambda n: (text[:n].encode(), True)),
        st.binary(max_size=300).map(lambda b: (b"\xff" + b, True)),
        st.integers(65, 20_000).map(lambda n: (b'{"a":' * n + b"1" + b"}" * n, True)),
    )


def _calibration_doc() -> dict[str, Any]:
    ids = load_array("utah96").electrode_ids[:2]
    return {
        "version": 1,
        "patient_id": "p1",
        "arrays": ["utah96"],
        "electrodes": [
            {"electrode_id": i, "threshold_ua": 20.0, "max_comfortable_ua": 60.0,
             "phosphene_deg": [1.0, -1.0], "enabled": True}
            for i in ids
        ],
    }  # fmt: skip


JSON_LOADERS: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[Path], object], type]] = {
    "calibration": (_calibration_doc, load_calibration, CalibrationError),
    "limits": (lambda: json.loads(SafetyLimits().model_dump_json()), SafetyLimits.load,
               SafetyConfigError),
    "array": (lambda: json.loads(load_array("utah96").to_json()), load_array, ArrayError),
}  # fmt: skip


@pytest.mark.parametrize("name", list(JSON_LOADERS))
@SETTINGS
@given(data=st.data())
def test_json_loaders_refuse_mutations_in_one_line(
    tmp_path: Path, name: str, data: st.DataObject
) -> None:
    make, load, error = JSON_LOADERS[name]
    raw, must_refuse = data.draw(_mutated(make()))
    p = tmp_path / f"{name}.json"
    p.write_bytes(raw)
    refused = _one_line_refusal(lambda: load(p), error)
    assert refused or not must_refuse


def test_a_loaded_calibration_never_holds_a_non_finite_number(tmp_path: Path) -> None:
    """What the mutations may let through must still be finite (NaN never reaches scipy)."""
    doc = _calibration_doc()
    for value in ("NaN", "Infinity", "1e999"):
        p = tmp_path / "c.json"
        p.write_text(json.dumps(doc).replace("-1.0", value))
        assert _one_line_refusal(lambda p=p: load_calibration(p), CalibrationError)


def _implant_doc() -> dict[str, Any]:
    from hardware.implant import IMPLANT_DATA_DIR, list_implants

    return dict(json.loads((IMPLANT_DATA_DIR / f"{list_implants()[0]}.json").read_text()))


@SETTINGS
@given(data=st.data())
def test_implant_files_refuse_mutations_in_one_line(tmp_path: Path, data: st.DataObject) -> None:
    raw, must_refuse = data.draw(_mutated(_implant_doc()))
    p = tmp_path / "implant.json"
    p.write_bytes(raw)
    assert _one_line_refusal(lambda: load_implant(p), ImplantError) or not must_refuse


# --- manifests -------------------------------------------------------------------------------


def _fresh_bundle(tmp_path: Path) -> Path:
    """A new copy of the shipped bundle (hypothesis reuses a test's tmp_path across examples)."""
    b = tmp_path / "bundle"
    if b.exists():
        shutil.rmtree(b)
    shutil.copytree(default_bundle_path(), b)
    return b


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    return _fresh_bundle(tmp_path)


def _manifest_doc() -> dict[str, Any]:
    return dict(json.loads((default_bundle_path() / "manifest.json").read_text()))


@SETTINGS
@given(data=st.data())
def test_manifest_mutations_are_refused_even_when_resealed(
    tmp_path: Path, data: st.DataObject
) -> None:
    """Resealing (recomputing manifest_sha256) where the mutation still parses, so the deeper
    checks are reached; a mutation the schema accepts must then still match the models."""
    bundle_copy = _fresh_bundle(tmp_path)
    doc = _manifest_doc()
    raw, must_refuse = data.draw(_mutated(doc))
    try:
        edited = json.loads(raw)
        edited["manifest_sha256"] = BundleManifest.model_validate(edited).content_sha256()
        raw = json.dumps(edited).encode()
    except Exception:  # not a valid manifest: left as it is, must be refused
        must_refuse = must_refuse or raw != json.dumps(doc).encode()
    (bundle_copy / "manifest.json").write_bytes(raw)
    refused = _one_line_refusal(lambda: load_bundle(bundle_copy), BundleError)
    assert refused or not must_refuse


# --- ONNX models -----------------------------------------------------------------------------


def _rehash(bundle: Path) -> None:
    """Make the manifest agree with the (broken) files, so the ONNX checks are reached."""
    doc = json.loads((bundle / "manifest.json").read_text())
    for name in doc["files"]:
        doc["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    doc["manifest_sha256"] = BundleManifest.model_validate(doc).content_sha256()
    (bundle / "manifest.json").write_text(json.dumps(doc))


@SETTINGS
@given(
    edit=st.one_of(
        st.floats(0.0, 0.99).map(lambda f: ("truncate", f)),
        st.binary(min_size=0, max_size=2000).map(lambda b: ("random", b)),
        st.integers(0, 10_000).map(lambda i: ("flip", i)),
    )
)
def test_broken_onnx_models_are_one_line_bundle_errors(
    tmp_path: Path, edit: tuple[str, Any]
) -> None:
    bundle_copy = _fresh_bundle(tmp_path)
    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    kind, arg = edit
    if kind == "truncate":
        data = data[: int(len(data) * arg)]
    elif kind == "random":
        data = bytearray(arg)
    else:
        data[arg % len(data)] ^= 0xFF
    model.write_bytes(bytes(data))
    _rehash(bundle_copy)
    refused = _one_line_refusal(lambda: load_bundle(bundle_copy), BundleError)
    # A flipped byte inside a weight keeps a valid model; anything shorter or random is not.
    assert refused or kind == "flip"


def test_a_model_with_a_wrong_input_shape_is_refused(bundle_copy: Path) -> None:
    import onnx

    model = onnx.load(str(bundle_copy / "model.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[-1].dim_value += 1
    onnx.save(model, str(bundle_copy / "model.onnx"))
    _rehash(bundle_copy)
    with pytest.raises(BundleError, match="do not match the model"):
        load_bundle(bundle_copy)


# --- device key files --------------------------------------------------------------------------


@SETTINGS
@given(
    data=st.binary(max_size=200).filter(lambda b: len(b) != 32),
    mode=st.sampled_from([0o600, 0o400, 0o644, 0o640, 0o666]),
)
def test_bad_key_files_are_refused_in_one_line(tmp_path: Path, data: bytes, mode: int) -> None:
    p = tmp_path / "device.key"
    p.write_bytes(data)
    p.chmod(mode)
    assert _one_line_refusal(lambda: load_or_create_device_key(p), DeviceKeyError)
    assert p.read_bytes() == data  # never replaced


def test_key_file_directory_and_fifo_are_refused(tmp_path: Path) -> None:
    import os

    (tmp_path / "dir.key").mkdir()
    os.mkfifo(tmp_path / "fifo.key", 0o600)
    for name in ("dir.key", "fifo.key"):
        assert _one_line_refusal(
            lambda name=name: load_or_create_device_key(tmp_path / name), DeviceKeyError
        )


# --- TOML configuration files ------------------------------------------------------------------


def _run_command() -> Any:
    from typer.main import get_command

    return get_command(app).commands["run"]  # type: ignore[attr-defined]


TOML_BAD = st.one_of(
    st.integers(50, 30_000).map(lambda n: b"duration = " + b"[" * n + b"]" * n),
    st.integers(50, 30_000).map(lambda n: b"duration = " + b"{a=" * n + b"1" + b"}" * n),
    st.binary(max_size=200).map(lambda b: b'source = "\xff' + b + b'"'),
    st.sampled_from(
        [
            b'duration = "10"',
            b"duration = true",
            b"duration = [1]",
            b"duration = nan",
            b"duration = inf",
            b'preview = "no"',
            b"preview = 1",
            b"calibration = 5",
            b"threads = 2.5",
            b'threads = "2"',
            b"colour = 1",
            b"duration = = 1",
            b'source = "' + b"x" * 5000 + b'"',
            b"[npe.run]\nduration = {a = 1}",
        ]
    ),
)


@SETTINGS
@given(data=TOML_BAD)
def test_bad_config_files_are_refused_in_one_line(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "npe-config.toml"
    p.write_bytes(data)
    assert _one_line_refusal(lambda: load_config_file(p, _run_command()), ConfigFileError)


def test_a_good_config_file_still_loads(tmp_path: Path) -> None:
    p = tmp_path / "npe-config.toml"
    p.write_text('duration = 12\npreview = false\nsource = "synthetic:bar"\nthreads = 2\n')
    values = load_config_file(p, _run_command())
    assert values == {"duration": 12, "preview": False, "source": "synthetic:bar", "threads": 2}


# --- calibration session files ---------------------------------------------------------------

HEADER = {
    "kind": "header", "procedure": "threshold", "patient_id": "p1", "array": "utah96",
    "electrodes": ["e"], "calibration_path": "c.json", "link": "inprocess",
    "started": "2026-12-02T10:00:00+00:00",
}  # fmt: skip
TRIAL = {
    "kind": "trial", "index": 0, "electrode": "e", "sequence": 1, "requested_ua": 20.0,
    "delivered_ua": 20.0, "response": 1.0, "time": "2026-12-02T10:00:01+00:00",
}  # fmt: skip


@SETTINGS
@given(data=st.data())
def test_broken_session_files_are_refused_in_one_line(tmp_path: Path, data: st.DataObject) -> None:
    line, must_refuse = data.draw(_mutated(TRIAL))
    assume(b"\n" not in line and line.strip())  # a blank line is skipped by design
    p = tmp_path / "s.jsonl"
    p.write_bytes(json.dumps(HEADER).encode() + b"\n" + line + b"\n")
    refused = _one_line_refusal(lambda: SessionLog.open(p), SessionError)
    assert refused or not must_refuse


# --- HDF5 recordings ---------------------------------------------------------------------------


@SETTINGS
@given(
    edit=st.one_of(
        st.floats(0.0, 0.98).map(lambda f: ("truncate", f)),
        st.binary(max_size=4000).map(lambda b: ("random", b)),
        st.tuples(st.floats(0.0, 0.999), st.integers(1, 64)).map(lambda a: ("smash", a)),
    )
)
def test_damaged_recording_bytes_are_one_line_format_errors(
    tiny_recording_path: Path, tmp_path: Path, edit: tuple[str, Any]
) -> None:
    data = bytearray(tiny_recording_path.read_bytes())
    kind, arg = edit
    if kind == "truncate":
        data = data[: int(len(data) * arg)]
    elif kind == "random":
        data = bytearray(arg)
    else:
        at, n = arg
        i = int(len(data) * at)
        data[i : i + n] = bytes(np.random.default_rng(i).integers(0, 256, n, dtype=np.uint8))
    p = tmp_path / "bad.h5"
    p.write_bytes(bytes(data))
    refused = _one_line_refusal(lambda: read_recording(p), RecordingFormatError)
    assert refused or kind == "smash"  # smashed bytes may land in unused space


ATTR_VALUES = st.one_of(
    # h5py cannot store a NUL or a lone surrogate (not encodable as UTF-8) in a string
    # attribute: such a file cannot exist.
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=30),
    st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, 1e300, -(2**62)]),
    st.just(np.array([1.0, 2.0])),
    st.just(np.array([b"\xff\xfe"])),
    st.binary(max_size=20).filter(lambda b: b"\x00" not in b),
)


@SETTINGS
@given(attr=st.sampled_from(["format", "version", "frame_rate_hz", "pixel_size_deg"]),
       value=ATTR_VALUES)  # fmt: skip
def test_wrong_recording_attributes_are_refused(
    tiny_recording_path: Path, tmp_path: Path, attr: str, value: Any
) -> None:
    p = tmp_path / "bad.h5"
    shutil.copy(tiny_recording_path, p)
    with h5py.File(p, "r+") as f:
        f.attrs[attr] = value
    assert _one_line_refusal(lambda: read_recording(p), RecordingFormatError)


DATASETS = st.sampled_from(
    ["stimulus", "responses", "cells/id", "cells/center_deg", "splits/train"]
)
REPLACEMENTS = st.sampled_from(
    [
        {"data": np.array([b"a", b"\xff"])},
        {"data": np.full((3, 3), np.nan)},
        {"data": np.zeros((0,), np.float32)},
        {"data": np.array(7)},
        {"shape": (10**7, 10**5), "dtype": np.float32, "chunks": (16, 1024)},
    ]
)


@SETTINGS
@given(name=DATASETS, replacement=REPLACEMENTS)
def test_wrong_recording_datasets_are_refused(
    tiny_recording_path: Path, tmp_path: Path, name: str, replacement: dict[str, Any]
) -> None:
    p = tmp_path / "bad.h5"
    shutil.copy(tiny_recording_path, p)
    with h5py.File(p, "r+") as f:
        del f[name]
        f.create_dataset(name, **replacement)
    assert _one_line_refusal(lambda: read_recording(p), RecordingFormatError)


# --- through the command line: exit 2, one line, nothing written -----------------------------


CLI_BAD = st.one_of(
    st.binary(max_size=300),
    st.integers(65, 100_000).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([b'{"phosphene_deg": [NaN, NaN]}', b"\xff\xfe{}", b'{"version": 1e999}']),
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=CLI_BAD, where=st.sampled_from(["calibrate show", "inspect", "calibrate save"]))
def test_cli_refuses_broken_files_with_exit_2_and_writes_nothing(
    tmp_path: Path, data: bytes, where: str
) -> None:
    case = tmp_path / "case"
    if case.exists():
        shutil.rmtree(case)
    case.mkdir()
    if where == "inspect":
        shutil.copytree(default_bundle_path(), case / "b")
        (case / "b" / "manifest.json").write_bytes(data)
        argv = ["inspect", str(case / "b")]
    else:
        (case / "f").write_bytes(data)
        argv = [*where.split(), str(case / "f")]
    before = {p: p.stat().st_mtime_ns for p in case.rglob("*")}
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert {p: p.stat().st_mtime_ns for p in case.rglob("*")} == before


def test_an_unknown_key_with_a_line_break_is_still_a_one_line_refusal(tmp_path: Path) -> None:
    """Found by the implant property test: pydantic's error location is the key itself."""
    for doc, load, error in (
        (_implant_doc(), load_implant, ImplantError),
        (_calibration_doc(), load_calibration, CalibrationError),
        (json.loads(SafetyLimits().model_dump_json()), SafetyLimits.load, SafetyConfigError),
    ):
        p = tmp_path / "f.json"
        p.write_text(json.dumps({**doc, "a\nb": 1}))
        assert _one_line_refusal(lambda p=p, load=load: load(p), error)


def test_a_manifest_key_with_a_line_break_is_still_a_one_line_refusal(bundle_copy: Path) -> None:
    """Found by the manifest property test: the same location bug, in runtime/bundle.py."""
    (bundle_copy / "manifest.json").write_text(json.dumps({**_manifest_doc(), "a\nb": 1}))
    assert _one_line_refusal(lambda: load_bundle(bundle_copy), BundleError)
