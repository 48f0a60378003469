"""The bundle: schema (manifest v2) and verifier shared by `export` (writer) and `runtime` (reader).

A bundle is the only thing that leaves the lab, so it must be complete, verifiable and
impossible to misread. It is a directory::

    bundle/
        manifest.json        BundleManifest (schema "npe.bundle", version 2)
        model.onnx           full-window form  (window [1, T, H, W] → rates)
        model.step.onnx      step form of stateful models (frame [1, H, W] + state → rates + state_next)
        model.int8.onnx      optional INT8 (QDQ) version of a form
        *.ort                optional ORT-format copies for minimal ONNX Runtime builds

Every file except ``manifest.json`` is listed with its sha256 in ``manifest.files``;
``load_bundle`` refuses missing, altered or extra files, an unknown schema version and a
manifest that disagrees with the ONNX models' real inputs/outputs or metadata, each with its
own `BundleError` message, before anything runs.

Integrity of the manifest itself (version 2): ``manifest_sha256`` is the sha256 of the
manifest's canonical JSON (every field except that digest, keys sorted, no whitespace), so
editing any field the runtime uses (cell positions, polarity, shapes, preprocessing, parity
verdicts...) without recomputing it is refused. Someone who edits both the manifest and its
digest is only caught by a digest pinned elsewhere: `bundle_digest` (one sha256 over the
canonical manifest and the bytes of every file it names) is what the signed deployment package
signs, and ``load_bundle(..., expected_digest=...)`` / ``--expect-digest`` refuse any other.
A bundle whose recorded parity check failed is refused, and so is a file that is a symbolic
link or a name that leaves the bundle directory. The manifest is size- and depth-limited
before it is parsed, so a hostile 60 MB file costs a stat, not minutes.

This module imports only the standard library, numpy, pydantic and onnx - never torch - because
the runtime on the prosthesis computer must be able to verify a bundle with what it has.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hardware.untrusted_json import UntrustedFileError, load_untrusted_json
from runtime.errors import NpeRuntimeError

SCHEMA_NAME: Literal["npe.bundle"] = "npe.bundle"
#: 2: adds ``manifest_sha256`` (version 1 manifests carried no digest of their own content).
SCHEMA_VERSION: Literal[2] = 2
#: Version of the ``npe.*`` metadata_props layout inside the ONNX files; unchanged by manifest v2
#: (the shipped default bundle's ONNX files say "npe.bundle/1" and are kept byte for byte).
METADATA_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: Refuse larger manifests before reading them: the default bundle's (2048 outputs) is ~0.2 MB,
#: a 32k-output rate map ~4 MB; parsing this much takes well under a second.
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
#: Deepest JSON nesting a valid manifest needs is 5 (output.positions_deg[i][j]); allow slack.
MAX_MANIFEST_DEPTH = 16
_DIGEST_DOMAIN = b"npe.bundle-digest/1\n"
#: Prefix of the keys this project writes into an ONNX model's ``metadata_props``.
METADATA_PREFIX = "npe."

DType = Literal["float32", "float16", "int64", "int32", "uint8", "int8", "bool"]


class BundleError(NpeRuntimeError, ValueError):
    """A bundle that is incomplete, altered, of an unknown schema, or inconsistent with its models."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    """One named input or output of an ONNX model: static shape (batch 1) and dtype."""

    name: str = Field(min_length=1)
    shape: tuple[int, ...]
    dtype: DType = "float32"

    @model_validator(mode="after")
    def _static(self) -> TensorSpec:
        if any(d <= 0 for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: shape {list(self.shape)} must be static (> 0)")
        return self

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))


class StateSpec(_Frozen):
    """A recurrent state tensor: fed as `input`, returned as `output` (``<input>_next``).

    The initial value is all zeros of `shape`/`dtype`; after each call the runtime feeds the
    `output` back as the next call's `input` (ONNX Runtime keeps no hidden state).
    """

    input: str = Field(min_length=1)
    output: str = Field(min_length=1)
    shape: tuple[int, ...]
    dtype: DType = "float32"
    initial: Literal["zeros"] = "zeros"

    def zeros(self) -> NDArray[Any]:
        """Initial value: [*shape] zeros of `dtype`."""
        return np.zeros(self.shape, dtype=np.dtype(self.dtype))


class ModelForm(_Frozen):
    """One ONNX file of the bundle and how to call it.

    form "window": one call takes the whole window [1, T, H, W] and returns rates of its newest
    frame. form "step": one call takes one new frame [1, H, W] plus the state tensors and returns
    rates and the next state (stateful models only).
    """

    file: str = Field(min_length=1)
    form: Literal["window", "step"]
    precision: Literal["fp32", "int8"] = "fp32"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    state: tuple[StateSpec, ...] = ()
    #: Same graph in ORT format (for minimal/embedded ONNX Runtime builds), or None.
    ort_file: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelForm:
        ins = {t.name: t for t in self.inputs}
        outs = {t.name: t for t in self.outputs}
        if len(ins) != len(self.inputs) or len(outs) != len(self.outputs):
            raise ValueError(f"form {self.file}: duplicate tensor names")
        for s in self.state:
            for role, table, name in (("input", ins, s.input), ("output", outs, s.output)):
                if name not in table:
                    raise ValueError(
                        f"form {self.file}: state {role} {name!r} is not a model {role}"
                    )
                if table[name].shape != s.shape or table[name].dtype != s.dtype:
                    raise ValueError(
                        f"form {self.file}: state {name!r} spec {list(s.shape)} {s.dtype} differs "
                        f"from the {role} {list(table[name].shape)} {table[name].dtype}"
                    )
        if len(self.inputs) - len(self.state) != 1:
            raise ValueError(
                f"form {self.file}: expected exactly one data input besides the state, "
                f"got {len(self.inputs) - len(self.state)}"
            )
        if len(self.outputs) - len(self.state) != 1:
            raise ValueError(
                f"form {self.file}: expected exactly one rate output besides the state, "
                f"got {len(self.outputs) - len(self.state)}"
            )
        if self.form == "window" and self.state:
            raise ValueError(f"form {self.file}: a window form has no state")
        return self

    @property
    def data_input(self) -> TensorSpec:
        """The frame ([1, H, W], step) or window ([1, T, H, W], window) input."""
        state_in = {s.input for s in self.state}
        return next(t for t in self.inputs if t.name not in state_in)

    @property
    def rate_output(self) -> TensorSpec:
        """The rates output (spikes/s): [1, n] cells or [1, n_types, H', W'] rate map."""
        state_out = {s.output for s in self.state}
        return next(t for t in self.outputs if t.name not in state_out)


class ModelInfo(_Frozen):
    """What the model is. kind "cells": one output per recorded cell; "ratemap": a grid per type."""

    name: str = Field(min_length=1)
    kind: Literal["cells", "ratemap"]
    stateful: bool
    n_parameters: int = Field(ge=0, default=0)
    #: sha256 of the checkpoint weights the bundle was exported from (provenance).
    checkpoint_sha256: str = ""
    training_data_sha256: str = ""
    stimulus_kind: str = ""


class Timing(_Frozen):
    """Frame rate of the model's bins (one input frame per bin) and its window length."""

    frame_rate_hz: float = Field(gt=0)
    window_frames: int = Field(gt=0)

    @property
    def window_ms(self) -> float:
        return 1000.0 * self.window_frames / self.frame_rate_hz


class InputGeometry(_Frozen):
    """Input frame size and the visual field it covers.

    field_of_view_deg is (horizontal, vertical) = (width, height) * pixel_size_deg.
    """

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    pixel_size_deg: float = Field(gt=0)
    field_of_view_deg: tuple[float, float]

    @model_validator(mode="after")
    def _fov(self) -> InputGeometry:
        expected = (self.width * self.pixel_size_deg, self.height * self.pixel_size_deg)
        if not np.allclose(self.field_of_view_deg, expected, rtol=1e-6, atol=1e-9):
            raise ValueError(
                f"field_of_view_deg {list(self.field_of_view_deg)} != (width, height) * "
                f"pixel_size_deg = {list(expected)}"
            )
        return self


class Preprocessing(_Frozen):
    """What the runtime does to a camera frame before the model sees it.

    contrast = clip((grayscale_uint8 - offset) / scale, clip_min, clip_max). The offset and
    scale have no default on purpose: the convention is defined once, in
    `encoder.recording` (CONTRAST_OFFSET, CONTRAST_SCALE), which the runtime never imports;
    export writes those values here and every reader applies what the bundle states.
    """

    grayscale: bool = True
    resize: Literal["area"] = "area"
    contrast_offset: float
    contrast_scale: float = Field(gt=0)
    clip: tuple[float, float] = (-1.0, 1.0)


class RateMapGrid(_Frozen):
    """The output grid of a rate-map model: rates[0, k, i, j] sits at (xs_deg[j], ys_deg[i])."""

    type_labels: tuple[str, ...]
    ys_deg: tuple[float, ...]
    xs_deg: tuple[float, ...]


class OutputSpec(_Frozen):
    """The n rate entries of one call, flattened in C order, with identity and position.

    positions_deg are (x, y) degrees from the field centre, x right, y up; null (None) where a
    cell's centre is unknown (NaN in `positions_array`), since JSON has no NaN.
    """

    units: Literal["spikes/s"] = "spikes/s"
    n: int = Field(gt=0)
    ids: tuple[str, ...]
    types: tuple[str, ...]
    polarity: tuple[int, ...]
    positions_deg: tuple[tuple[float | None, float | None], ...]
    grid: RateMapGrid | None = None

    @model_validator(mode="after")
    def _lengths(self) -> OutputSpec:
        for name, seq in (
            ("ids", self.ids),
            ("types", self.types),
            ("polarity", self.polarity),
            ("positions_deg", self.positions_deg),
        ):
            if len(seq) != self.n:
                raise ValueError(f"output.{name}: expected {self.n} entries, got {len(seq)}")
        if any(p not in (-1, 0, 1) for p in self.polarity):
            raise ValueError("output.polarity: entries must be -1 (OFF), 0 (unknown) or +1 (ON)")
        if len(set(self.ids)) != self.n:
            raise ValueError("output.ids: must be unique")
        if self.grid is not None:
            g = self.grid
            expected = len(g.type_labels) * len(g.ys_deg) * len(g.xs_deg)
            if expected != self.n:
                raise ValueError(
                    f"output.grid: {len(g.type_labels)} types x {len(g.ys_deg)} x "
                    f"{len(g.xs_deg)} = {expected} entries, but output.n = {self.n}"
                )
        return self

    def positions_array(self) -> NDArray[np.float32]:
        """[n, 2] float32 (x, y) degrees, NaN where unknown."""
        rows = [[np.nan if v is None else v for v in xy] for xy in self.positions_deg]
        return np.asarray(rows, dtype=np.float32).reshape(self.n, 2)

    def polarity_array(self) -> NDArray[np.int8]:
        """[n] int8 polarity (+1 ON, -1 OFF, 0 unknown)."""
        return np.asarray(self.polarity, dtype=np.int8)


class ParityFigures(_Frozen):
    """ONNX Runtime vs PyTorch for one form, measured at export (rates in spikes/s)."""

    file: str
    reference: str  # what the ONNX output was compared with, e.g. "torch forward" / "torch forward_sequence"
    n_real: int = Field(ge=0)
    n_random: int = Field(ge=0)
    max_abs_err: float = Field(ge=0)
    max_rel_err: float = Field(ge=0)
    correlation: float
    passed: bool


class Int8Figures(_Frozen):
    """Accuracy and speed of the INT8 model against fp32 (test split, measured at export)."""

    file: str | None  # None: INT8 model was refused (drop too large) and not written
    source_form: str
    calibration_source: str
    n_calibration_windows: int = Field(ge=0)
    n_test_windows: int = Field(ge=0)
    mean_pcc_fp32: float
    mean_pcc_int8: float
    pcc_drop: float
    max_pcc_drop: float
    latency_ms_fp32: float = Field(ge=0)
    latency_ms_int8: float = Field(ge=0)
    passed: bool


class Parity(_Frozen):
    """All verification results; runtime may show them, export refuses to write failing ones."""

    onnx_checker: Literal["full_check passed"] = "full_check passed"
    min_correlation: float = 0.99999
    forms: tuple[ParityFigures, ...] = ()
    step_frames: int = Field(ge=0, default=0)
    int8: Int8Figures | None = None


class BundleManifest(_Frozen):
    """manifest.json of a bundle (schema "npe.bundle", version 1)."""

    schema_name: Literal["npe.bundle"] = SCHEMA_NAME
    schema_version: Literal[2] = SCHEMA_VERSION
    model: ModelInfo
    timing: Timing
    input: InputGeometry
    preprocessing: Preprocessing
    output: OutputSpec
    forms: tuple[ModelForm, ...] = Field(min_length=1)
    files: dict[str, str]
    parity: Parity
    versions: dict[str, str] = {}
    #: sha256 of `canonical_bytes()` (everything above); "" until `sealed()` fills it in.
    manifest_sha256: str = ""

    def canonical_bytes(self) -> bytes:
        """Canonical JSON of every field except ``manifest_sha256``: the bytes its digest covers.

        Keys sorted, no whitespace, UTF-8, no NaN/Infinity; computed from the validated model,
        so every value the runtime reads is in it and formatting-only edits do not matter.
        """
        content = self.model_dump(mode="json", exclude={"manifest_sha256"})
        return json.dumps(
            content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")

    def content_sha256(self) -> str:
        """Lowercase hex sha256 of `canonical_bytes()` (what ``manifest_sha256`` must equal)."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def sealed(self) -> BundleManifest:
        """This manifest with ``manifest_sha256`` set; writers call it (via `write_manifest`)."""
        return self.model_copy(update={"manifest_sha256": self.content_sha256()})

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        h, w, t = self.input.height, self.input.width, self.timing.window_frames
        for f in self.forms:
            for name in (f.file, f.ort_file):
                if name is not None and name not in self.files:
                    raise ValueError(f"forms: file {name!r} is not listed in files")
            expected_in = (1, t, h, w) if f.form == "window" else (1, h, w)
            if f.data_input.shape != expected_in:
                raise ValueError(
                    f"form {f.file}: data input {f.data_input.name!r} has shape "
                    f"{list(f.data_input.shape)}, expected {list(expected_in)} for form {f.form!r}"
                )
            if f.rate_output.numel != self.output.n:
                raise ValueError(
                    f"form {f.file}: rate output {f.rate_output.name!r} "
                    f"{list(f.rate_output.shape)} has {f.rate_output.numel} entries, "
                    f"output.n = {self.output.n}"
                )
        if self.model.stateful != any(f.form == "step" for f in self.forms):
            raise ValueError("model.stateful must be true exactly when a step form is present")
        if (self.model.kind == "ratemap") != (self.output.grid is not None):
            raise ValueError("output.grid must be given exactly for kind 'ratemap'")
        for name, digest in self.files.items():
            if not _plain_name(name) or name == MANIFEST_NAME:
                raise ValueError(f"files: {name!r} must be a plain file name, not the manifest")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"files: {name!r} has no valid lowercase hex sha256")
        return self

    def find_form(self, form: str, precision: str = "fp32") -> ModelForm | None:
        """The first form with this call style and precision, or None."""
        return next((f for f in self.forms if f.form == form and f.precision == precision), None)

    def metadata_for(self, form: ModelForm) -> dict[str, str]:
        """Essentials written into (and checked against) the ONNX model's metadata_props."""
        return {
            f"{METADATA_PREFIX}schema": f"{self.schema_name}/{METADATA_VERSION}",
            f"{METADATA_PREFIX}model_name": self.model.name,
            f"{METADATA_PREFIX}model_kind": self.model.kind,
            f"{METADATA_PREFIX}form": form.form,
            f"{METADATA_PREFIX}precision": form.precision,
            f"{METADATA_PREFIX}frame_rate_hz": repr(float(self.timing.frame_rate_hz)),
            f"{METADATA_PREFIX}window_frames": str(self.timing.window_frames),
            f"{METADATA_PREFIX}input_hw": f"{self.input.height}x{self.input.width}",
            f"{METADATA_PREFIX}pixel_size_deg": repr(float(self.input.pixel_size_deg)),
            f"{METADATA_PREFIX}field_of_view_deg": json.dumps(list(self.input.field_of_view_deg)),
            f"{METADATA_PREFIX}preprocessing": self.preprocessing.model_dump_json(),
            f"{METADATA_PREFIX}output_units": self.output.units,
            f"{METADATA_PREFIX}output_n": str(self.output.n),
            f"{METADATA_PREFIX}state": json.dumps([[s.input, s.output] for s in form.state]),
        }


def _plain_name(name: str) -> bool:
    """A file name that stays inside the bundle directory: no separators, no '.'/'..', no NUL."""
    return (
        bool(name)
        and name not in (".", "..")
        and not any(c in name for c in "/\\\0")
        and Path(name).name == name
    )


@dataclass(frozen=True)
class Bundle:
    """A loaded (and, unless asked otherwise, verified) bundle.

    Attributes:
        path: the bundle directory.
        manifest: its parsed manifest.
        verified: whether hashes and model signatures were checked on load.
    """

    path: Path
    manifest: BundleManifest
    verified: bool

    def form(self, form: str = "step", precision: str = "fp32") -> ModelForm:
        """The requested form; falls back to the window form if a step form was asked but absent."""
        found = self.manifest.find_form(form, precision)
        if found is None and form == "step":
            found = self.manifest.find_form("window", precision)
        if found is None:
            have = [(f.form, f.precision) for f in self.manifest.forms]
            raise BundleError(
                f"{self.path}: no {form}/{precision} form in this bundle (has {have})"
            )
        return found

    def file_path(self, form: ModelForm) -> Path:
        return self.path / form.file


def sha256_file(path: Path) -> str:
    """Lowercase hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_bundle_path() -> Path:
    """The shipped default bundle (the `streaming` model on the default synthetic recording)."""
    return Path(__file__).resolve().parent / "default_bundle"


def _json_depth(value: Any) -> int:
    """Deepest nesting of lists/objects in a parsed JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _read_manifest_json(path: Path, mpath: Path) -> dict[str, Any]:
    """The manifest's JSON object, after size, link and nesting checks (cheap ones first)."""
    if mpath.is_symlink():
        raise BundleError(f"{mpath}: is a symbolic link; a bundle holds its manifest itself")
    if not mpath.is_file():
        raise BundleError(f"{path}: missing {MANIFEST_NAME}")
    try:
        # Size before reading, regular file, UTF-8, bracket depth without recursion, no
        # NaN/Infinity, no duplicate keys (hardware.untrusted_json, the one such loader).
        raw = load_untrusted_json(
            mpath, "manifest", max_bytes=MAX_MANIFEST_BYTES, max_depth=MAX_MANIFEST_DEPTH
        )
    except UntrustedFileError as exc:
        raise BundleError(str(exc)) from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{mpath}: expected a JSON object")
    if _json_depth(raw) > MAX_MANIFEST_DEPTH:
        raise BundleError(
            f"{mpath}: nested deeper than {MAX_MANIFEST_DEPTH} levels; not a manifest"
        )
    return raw


def read_manifest(path: Path) -> BundleManifest:
    """Parse `path/manifest.json` and check its own digest, refusing an unknown schema first.

    The digest is checked even without file verification: a manifest edited in any field
    the runtime uses is never returned.
    """
    mpath = path / MANIFEST_NAME
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory (no such directory)")
    raw = _read_manifest_json(path, mpath)
    name, version = raw.get("schema_name"), raw.get("schema_version")
    if name != SCHEMA_NAME:
        raise BundleError(f"{mpath}: unknown schema name {name!r} (expected {SCHEMA_NAME!r})")
    if version == 1:
        raise BundleError(
            f"{mpath}: schema version 1 carries no digest of its own content and is no longer "
            f"trusted; re-export the bundle (this reader understands version {SCHEMA_VERSION})"
        )
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{mpath}: unknown schema version {version!r} "
            f"(this reader understands version {SCHEMA_VERSION})"
        )
    try:
        manifest = BundleManifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        # repr() for a key with a line break (pydantic's location is the key): one line.
        loc = ".".join(str(p) if str(p).isprintable() else repr(p) for p in first["loc"])
        loc = loc or "(top level)"
        raise BundleError(
            f"{mpath}: invalid manifest at {loc}: {first['msg']} ({exc.error_count()} error(s))"
        ) from exc
    actual = manifest.content_sha256()
    if manifest.manifest_sha256 != actual:
        shown = manifest.manifest_sha256[:16] or "(none)"
        raise BundleError(
            f"{mpath}: manifest content was altered (sha256 {actual[:16]}… != manifest_sha256 "
            f"{shown}…)"
        )
    return manifest


def write_manifest(path: Path, manifest: BundleManifest) -> BundleManifest:
    """Seal `manifest` (fill in ``manifest_sha256``) and write it as `path/manifest.json`."""
    sealed = manifest.sealed()
    (path / MANIFEST_NAME).write_text(sealed.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return sealed


def _verify_parity(path: Path, manifest: BundleManifest) -> None:
    """Refuse a bundle whose own export-time checks failed (export never writes one)."""
    for fig in manifest.parity.forms:
        if not fig.passed:
            raise BundleError(
                f"{path}: parity check of {fig.file!r} against {fig.reference} failed at export "
                f"(correlation {fig.correlation:.6f}); this bundle must not run"
            )
    q = manifest.parity.int8
    if q is not None and q.file is not None and not q.passed:
        raise BundleError(
            f"{path}: INT8 model {q.file!r} failed its accuracy check at export "
            f"(PCC drop {q.pcc_drop:.4f} > {q.max_pcc_drop}); this bundle must not run"
        )


def _verify_files(path: Path, manifest: BundleManifest) -> None:
    root = path.resolve()
    for name, digest in sorted(manifest.files.items()):
        fpath = path / name
        if fpath.is_symlink():
            raise BundleError(
                f"{path}: file {name!r} is a symbolic link; a bundle holds its files itself"
            )
        if fpath.resolve().parent != root:
            raise BundleError(f"{path}: file {name!r} lies outside the bundle directory")
        if not fpath.is_file():
            raise BundleError(f"{path}: missing file {name!r} listed in the manifest")
        actual = sha256_file(fpath)
        if actual != digest:
            raise BundleError(
                f"{path}: file {name!r} was altered (sha256 {actual[:16]}… != manifest "
                f"{digest[:16]}…)"
            )
    listed = set(manifest.files) | {MANIFEST_NAME}
    extra = sorted(p.name for p in path.iterdir() if p.name not in listed)
    if extra:
        raise BundleError(
            f"{path}: extra file(s) not listed in the manifest: {', '.join(extra)} "
            "(a bundle holds exactly its manifest's files)"
        )


def _onnx_signature(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Real graph inputs (minus initialisers) and outputs of an onnx.ModelProto as TensorSpecs."""
    from onnx import helper

    init = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tt = value.type.tensor_type
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        dtype = str(np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)))
        if any(d <= 0 for d in dims):
            raise BundleError(
                f"model tensor {value.name!r} has a dynamic shape {list(dims)}; "
                "bundles need static batch-1 shapes"
            )
        return TensorSpec.model_validate({"name": value.name, "shape": dims, "dtype": dtype})

    ins = [spec(v) for v in model.graph.input if v.name not in init]
    outs = [spec(v) for v in model.graph.output]
    return ins, outs


def _verify_models(path: Path, manifest: BundleManifest) -> None:
    import onnx

    for form in manifest.forms:
        fpath = path / form.file
        try:
            model = onnx.load(str(fpath), load_external_data=False)
        except Exception as exc:  # onnx raises several protobuf/decoding errors
            raise BundleError(
                f"{path}: {form.file!r} is not a readable ONNX model ({exc})"
            ) from exc
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            raise BundleError(f"{path}: {form.file!r} uses external data; bundles are one file")
        ins, outs = _onnx_signature(model)
        for role, real, declared in (
            ("inputs", ins, form.inputs),
            ("outputs", outs, form.outputs),
        ):
            real_t = [(t.name, tuple(t.shape), t.dtype) for t in real]
            decl_t = [(t.name, tuple(t.shape), t.dtype) for t in declared]
            if real_t != decl_t:
                raise BundleError(
                    f"{path}: manifest {role} of {form.file!r} do not match the model: "
                    f"manifest {decl_t} vs model {real_t}"
                )
        meta = {p.key: p.value for p in model.metadata_props}
        for key, value in manifest.metadata_for(form).items():
            if meta.get(key) != value:
                raise BundleError(
                    f"{path}: metadata {key!r} of {form.file!r} is {meta.get(key)!r} but the "
                    f"manifest says {value!r}"
                )


def bundle_digest(path: str | Path) -> str:
    """One sha256 over the canonical manifest and the bytes of every file it names.

    This is what a deployment package signs: it changes with any edit of the manifest (even one
    that also rewrites ``manifest_sha256``) and of any file. The bundle is verified first, so
    a digest is only ever given for a bundle that `load_bundle` accepts.
    """
    bundle = load_bundle(path, verify=True)
    return _digest_of(bundle.path, bundle.manifest)


def digest_of_loaded(bundle: Bundle) -> str:
    """`bundle_digest` of a bundle already loaded (and verified) by `load_bundle`."""
    return _digest_of(bundle.path, bundle.manifest)


def _digest_of(path: Path, manifest: BundleManifest) -> str:
    h = hashlib.sha256(_DIGEST_DOMAIN)
    canonical = manifest.canonical_bytes()
    h.update(len(canonical).to_bytes(8, "big") + canonical)
    for name in sorted(manifest.files):
        h.update(name.encode("utf-8") + b"\0" + bytes.fromhex(sha256_file(path / name)))
    return h.hexdigest()


def load_bundle(
    path: str | Path, verify: bool = True, expected_digest: str | None = None
) -> Bundle:
    """Load the bundle at `path`; with `verify`, refuse it unless every check passes.

    Checks (each failure raises BundleError with its own message): manifest present, within
    the size and nesting limits, of a known schema version and matching its own
    ``manifest_sha256`` (always, even without `verify`); every listed file a plain file inside
    the bundle (no symbolic links) matching its sha256; no extra files; no failed parity check;
    every form's declared inputs/outputs (names, static shapes, dtypes) equal the ONNX graph's,
    and the ONNX metadata_props essentials equal the manifest. With `expected_digest` (e.g. the
    signed one of a deployment package), `bundle_digest` must equal it. Runs no model, imports
    no torch.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if verify or expected_digest is not None:
        _verify_files(path, manifest)
        _verify_parity(path, manifest)
        _verify_models(path, manifest)
    if expected_digest is not None:
        actual = _digest_of(path, manifest)
        if actual != expected_digest.strip().lower():
            raise BundleError(
                f"{path}: bundle digest {actual[:16]}… is not the expected "
                f"{expected_digest.strip()[:16]}… (a different or edited bundle)"
            )
    return Bundle(path=path, manifest=manifest, verified=verify or expected_digest is not None)
