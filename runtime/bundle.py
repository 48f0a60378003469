"""The bundle: schema (manifest v1) and verifier shared by `export` (writer) and `runtime` (reader).

A bundle is the only thing that leaves the lab, so it must be complete, verifiable and
impossible to misread. It is a directory::

    bundle/
        manifest.json        BundleManifest (schema "npe.bundle", version 1)
        model.onnx           full-window form  (window [1, T, H, W] → rates)
        model.step.onnx      step form of stateful models (frame [1, H, W] + state → rates + state_next)
        model.int8.onnx      optional INT8 (QDQ) version of a form
        *.ort                optional ORT-format copies for minimal ONNX Runtime builds

Every file except ``manifest.json`` is listed with its sha256 in ``manifest.files``;
``load_bundle`` refuses missing, altered or extra files, an unknown schema version and a
manifest that disagrees with the ONNX models' real inputs/outputs or metadata, each with its
own `BundleError` message, before anything runs.

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

SCHEMA_NAME: Literal["npe.bundle"] = "npe.bundle"
SCHEMA_VERSION: Literal[1] = 1
MANIFEST_NAME = "manifest.json"
#: Prefix of the keys this project writes into an ONNX model's ``metadata_props``.
METADATA_PREFIX = "npe."

DType = Literal["float32", "float16", "int64", "int32", "uint8", "int8", "bool"]


class BundleError(ValueError):
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

    contrast = clip((grayscale_uint8 - offset) / scale, clip_min, clip_max); the same convention
    as `encoder.recording.stimulus_as_contrast` (L - 127.5) / 127.5.
    """

    grayscale: bool = True
    resize: Literal["area"] = "area"
    contrast_offset: float = 127.5
    contrast_scale: float = Field(gt=0, default=127.5)
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
    schema_version: Literal[1] = SCHEMA_VERSION
    model: ModelInfo
    timing: Timing
    input: InputGeometry
    preprocessing: Preprocessing = Preprocessing()
    output: OutputSpec
    forms: tuple[ModelForm, ...] = Field(min_length=1)
    files: dict[str, str]
    parity: Parity
    versions: dict[str, str] = {}

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
            if Path(name).name != name or name == MANIFEST_NAME:
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
            f"{METADATA_PREFIX}schema": f"{self.schema_name}/{self.schema_version}",
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


def read_manifest(path: Path) -> BundleManifest:
    """Parse `path/manifest.json`, refusing an unknown schema before anything else."""
    mpath = path / MANIFEST_NAME
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory (no such directory)")
    if not mpath.is_file():
        raise BundleError(f"{path}: missing {MANIFEST_NAME}")
    try:
        raw = load_untrusted_json(mpath, "manifest")
    except UntrustedFileError as exc:
        raise BundleError(str(exc)) from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{mpath}: expected a JSON object")
    name, version = raw.get("schema_name"), raw.get("schema_version")
    if name != SCHEMA_NAME:
        raise BundleError(f"{mpath}: unknown schema name {name!r} (expected {SCHEMA_NAME!r})")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{mpath}: unknown schema version {version!r} "
            f"(this reader understands version {SCHEMA_VERSION})"
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BundleError(
            f"{mpath}: invalid manifest at {loc}: {first['msg']} ({exc.error_count()} error(s))"
        ) from exc


def _verify_files(path: Path, manifest: BundleManifest) -> None:
    for name, digest in sorted(manifest.files.items()):
        fpath = path / name
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


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Load the bundle at `path`; with `verify`, refuse it unless every check passes.

    Checks (each failure raises BundleError with its own message): manifest present and of
    a known schema version; every listed file present and matching its sha256; no extra files;
    every form's declared inputs/outputs (names, static shapes, dtypes) equal the ONNX graph's,
    and the ONNX metadata_props essentials equal the manifest. Runs no model, imports no torch.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if verify:
        _verify_files(path, manifest)
        _verify_models(path, manifest)
    return Bundle(path=path, manifest=manifest, verified=verify)
