"""The runtime's own, already-validated view of a model: what the live loop needs to know.

Why a separate type from the bundle manifest: the live loop should depend on a handful of
checked numbers (frame clock, window, geometry, contrast convention, output positions and
the ONNX tensor names of each form), not on the full export schema. `spec_from_bundle`
is the single place that reads a verified `runtime.bundle.Bundle`; tests and benchmarks
can also build a spec directly around tiny ONNX models (`tests/support/toymodel.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from runtime.errors import NpeRuntimeError

if TYPE_CHECKING:
    from runtime.bundle import Bundle

FormKind = Literal["window", "step"]


class SpecError(NpeRuntimeError, ValueError):
    """A model description the runtime cannot run (missing form, bad shape, ...)."""


@dataclass(frozen=True)
class StateTensor:
    """One recurrent state tensor of a step form: fed as `input`, returned as `output`.

    Initial value is zeros (bundle contract); shape is the static ONNX shape.
    """

    input: str
    output: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class FormSpec:
    """One ONNX file of a model and how to call it.

    window form: input [1, T, H, W] float32 contrast → output [1, n] or [1, n_types, H', W'].
    step form:   input [1, H, W] float32 contrast (+ state inputs) → output (+ state outputs).
    """

    path: Path
    form: FormKind
    precision: str
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    states: tuple[StateTensor, ...] = ()

    @property
    def n_out(self) -> int:
        return int(np.prod(self.output_shape))


@dataclass(frozen=True)
class ModelSpec:
    """Everything the live loop needs about a model (all checked in __post_init__).

    Attributes:
        frame_rate_hz: the model's frame clock; one bin per frame (10 ms at 100 Hz).
        window_frames: T, frames of history the window form sees (25 = 250 ms at 100 Hz).
        height, width: model input frame size in pixels.
        pixel_size_deg: degrees of visual angle per model pixel (sets the camera crop).
        contrast_offset, contrast_scale, clip: contrast = clip((L - offset) / scale), as
            the bundle's manifest states it (no default: the convention is the bundle's).
        positions_deg: [n, 2] float32 (x right, y up) of every output entry.
        polarity: [n] int8 (+1 ON, -1 OFF, 0 unknown).
    """

    name: str
    kind: Literal["cells", "ratemap"]
    forms: tuple[FormSpec, ...]
    frame_rate_hz: float
    window_frames: int
    height: int
    width: int
    pixel_size_deg: float
    positions_deg: NDArray[np.float32]
    polarity: NDArray[np.int8]
    contrast_offset: float
    contrast_scale: float
    ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    clip: tuple[float, float] = (-1.0, 1.0)
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frame_rate_hz <= 0:
            raise SpecError(f"frame_rate_hz must be > 0, got {self.frame_rate_hz}")
        if self.window_frames < 1:
            raise SpecError(f"window_frames must be ≥ 1, got {self.window_frames}")
        if self.height < 1 or self.width < 1:
            raise SpecError(f"frame size must be positive, got {self.height}x{self.width}")
        if self.pixel_size_deg <= 0:
            raise SpecError(f"pixel_size_deg must be > 0, got {self.pixel_size_deg}")
        if not self.forms:
            raise SpecError("model has no forms (no ONNX file to run)")
        n = self.positions_deg.shape[0]
        if self.positions_deg.shape != (n, 2):
            raise SpecError(f"positions_deg: expected [n, 2], got {list(self.positions_deg.shape)}")
        if self.polarity.shape != (n,):
            raise SpecError(f"polarity: expected [{n}], got {list(self.polarity.shape)}")
        for f in self.forms:
            if f.n_out != n:
                raise SpecError(
                    f"{f.path.name}: output {f.output_name} has {f.n_out} values but the "
                    f"model lists {n} output positions"
                )
            want = (
                (1, self.window_frames, self.height, self.width)
                if f.form == "window"
                else (1, self.height, self.width)
            )
            if tuple(f.input_shape) != want:
                raise SpecError(
                    f"{f.path.name}: {f.form} input {f.input_name} has shape "
                    f"{list(f.input_shape)}, expected {list(want)}"
                )

    @property
    def n_out(self) -> int:
        return int(self.positions_deg.shape[0])

    @property
    def bin_period_ns(self) -> int:
        return round(1e9 / self.frame_rate_hz)

    @property
    def field_deg(self) -> tuple[float, float]:
        """(width, height) of the model's field of view in degrees."""
        return (self.width * self.pixel_size_deg, self.height * self.pixel_size_deg)

    def find_form(self, form: FormKind, precision: str = "fp32") -> FormSpec | None:
        for f in self.forms:
            if f.form == form and f.precision == precision:
                return f
        return None

    def pick_form(self, prefer: FormKind | None = None, precision: str = "fp32") -> FormSpec:
        """The form to run live: step if the model has one (cheaper per bin), else window."""
        order: list[FormKind] = [prefer] if prefer else []
        order += [k for k in ("step", "window") if k not in order]
        for kind in order:
            f = self.find_form(kind, precision)
            if f is not None:
                return f
        have = ", ".join(f"{f.form}/{f.precision}" for f in self.forms)
        raise SpecError(
            f"model has no {prefer or 'step or window'} form in {precision} (has: {have})"
        )


def spec_from_bundle(bundle: Bundle) -> ModelSpec:
    """Build a ModelSpec from a loaded `runtime.bundle.Bundle` (export engineer's schema).

    The bundle loader has already checked hashes and that the manifest agrees with the ONNX
    files, so this only translates; shapes are re-checked by ModelSpec itself.
    """
    man = bundle.manifest
    forms = tuple(
        FormSpec(
            path=bundle.file_path(f),
            form=f.form,
            precision=f.precision,
            input_name=f.data_input.name,
            input_shape=tuple(f.data_input.shape),
            output_name=f.rate_output.name,
            output_shape=tuple(f.rate_output.shape),
            states=tuple(StateTensor(s.input, s.output, tuple(s.shape)) for s in f.state),
        )
        for f in man.forms
    )
    for f, mf in zip(forms, man.forms, strict=True):
        bad = [t.name for t in mf.inputs + mf.outputs if t.dtype != "float32"]
        if bad:
            raise SpecError(
                f"{f.path.name}: tensors {bad} are not float32; the runtime feeds float32"
            )
    main = man.find_form("window") or man.forms[0]
    pre = man.preprocessing
    return ModelSpec(
        name=man.model.name,
        kind=man.model.kind,
        forms=forms,
        frame_rate_hz=man.timing.frame_rate_hz,
        window_frames=man.timing.window_frames,
        height=man.input.height,
        width=man.input.width,
        pixel_size_deg=man.input.pixel_size_deg,
        positions_deg=man.output.positions_array(),
        polarity=man.output.polarity_array(),
        ids=man.output.ids,
        types=man.output.types,
        contrast_offset=pre.contrast_offset,
        contrast_scale=pre.contrast_scale,
        clip=pre.clip,
        sha256=man.files.get(main.file, ""),
        extra={
            "bundle": str(bundle.path),
            "grid_shape": (
                (
                    len(man.output.grid.type_labels),
                    len(man.output.grid.ys_deg),
                    len(man.output.grid.xs_deg),
                )
                if man.output.grid is not None
                else None
            ),
        },
    )


def load_model_spec(
    path: Path | str | None = None, verify: bool = True, expected_digest: str | None = None
) -> ModelSpec:
    """Load and verify a bundle directory (default: the shipped one) into a ModelSpec.

    `expected_digest` pins the bundle (see `runtime.bundle.bundle_digest`).
    """
    from runtime import bundle as bundle_mod

    p = Path(path) if path is not None else bundle_mod.default_bundle_path()
    bundle = bundle_mod.load_bundle(p, verify=verify, expected_digest=expected_digest)
    spec = spec_from_bundle(bundle)
    # What a pinned --expect-digest or a package signature covers; `npe run` logs it.
    spec.extra["bundle_digest"] = bundle_mod.digest_of_loaded(bundle)
    spec.extra["n_parameters"] = bundle.manifest.model.n_parameters
    return spec
