"""Electrode arrays: data files describing where each electrode sits on cortex.

An array file (JSON, schema ``npe.array`` version 1, in ``hardware/array_data/``) lists each
electrode's id, its position on the cortical surface in mm (array-local, centred on the
array) and its geometric area in µm² (the safety layer turns charge into charge density with
it), plus the shank length and where the array was placed: ``placement.center_deg`` is the
visual-field position whose V1 representation lies under the array's centre. Together with the
wedge-dipole map (`hardware.retinotopy`) this gives every electrode a phosphene position
before a patient is calibrated. Every file is validated on load and refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hardware.errors import HardwareError
from hardware.retinotopy import DEFAULT_MAP, WedgeDipoleMap
from hardware.untrusted_json import UntrustedFileError, error_location, load_untrusted_json

ARRAY_SCHEMA = "npe.array"
ARRAY_VERSION = 1
ARRAY_DATA_DIR = Path(__file__).parent / "array_data"


#: The reference array (a 96-channel Utah array), every command's default.
DEFAULT_ARRAY = "utah96"


class ArrayError(HardwareError, ValueError):
    """An array file that cannot be used: missing, unreadable or inconsistent."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ElectrodeSpec(_Strict):
    id: str = Field(min_length=1, max_length=64)
    x_mm: float = Field(allow_inf_nan=False, ge=-100.0, le=100.0)
    y_mm: float = Field(allow_inf_nan=False, ge=-100.0, le=100.0)
    area_um2: float = Field(gt=0.0, le=1e8, allow_inf_nan=False)


class Placement(_Strict):
    center_deg: tuple[float, float]
    rotation_deg: float = Field(default=0.0, ge=-180.0, le=180.0)


class ArrayFile(_Strict):
    """The on-disk schema of an array file."""

    schema_name: Literal["npe.array"] = "npe.array"
    version: int
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    kind: Literal["penetrating", "surface"]
    shank_length_mm: float = Field(ge=0.0, le=10.0, allow_inf_nan=False)
    placement: Placement
    electrodes: tuple[ElectrodeSpec, ...] = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _check(self) -> ArrayFile:
        if self.version != ARRAY_VERSION:
            raise ValueError(f"unknown array version {self.version}; npe reads {ARRAY_VERSION}")
        ids = [e.id for e in self.electrodes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"electrode ids listed twice: {', '.join(dupes[:5])}")
        pos = np.array([[e.x_mm, e.y_mm] for e in self.electrodes])
        if len(pos) > 1:
            d = np.hypot(*(pos[:, None, :] - pos[None, :, :]).transpose(2, 0, 1))
            np.fill_diagonal(d, np.inf)
            if d.min() < 1e-3:
                i, j = np.unravel_index(np.argmin(d), d.shape)
                raise ValueError(f"electrodes {ids[i]} and {ids[j]} share one position")
        if self.kind == "penetrating" and self.shank_length_mm <= 0:
            raise ValueError("a penetrating array needs a shank length > 0")
        return self


@dataclass(frozen=True)
class ElectrodeArray:
    """One electrode array, as the mapper, safety layer and preview use it.

    Attributes:
        name: array name (e.g. "utah96").
        electrode_ids: [n] ids, the order every per-electrode array follows.
        positions_mm: [n, 2] float64 array-local cortex positions (mm, centred on the array).
        area_um2: [n] float64 geometric area of each electrode (µm²).
        shank_length_mm: 0 for surface arrays.
        placement_deg: visual-field position (x, y)° represented under the array centre.
        rotation_deg: rotation of the array's x axis against the cortical meridian axis.
        kind: "penetrating" or "surface".
        description: where the geometry comes from.
    """

    name: str
    electrode_ids: tuple[str, ...]
    positions_mm: NDArray[np.float64]
    area_um2: NDArray[np.float64]
    shank_length_mm: float
    placement_deg: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0
    kind: str = "penetrating"
    description: str = ""

    def __post_init__(self) -> None:
        n = len(self.electrode_ids)
        if self.positions_mm.shape != (n, 2):
            raise ValueError(
                f"ElectrodeArray.positions_mm: expected [{n}, 2], got {list(self.positions_mm.shape)}"
            )
        if self.area_um2.shape != (n,):
            raise ValueError(
                f"ElectrodeArray.area_um2: expected [{n}], got {list(self.area_um2.shape)}"
            )
        if not np.all(np.isfinite(self.area_um2)) or np.any(self.area_um2 <= 0):
            raise ValueError("ElectrodeArray.area_um2: every area must be finite and > 0")

    @property
    def n(self) -> int:
        return len(self.electrode_ids)

    @property
    def area_cm2(self) -> NDArray[np.float64]:
        """[n] geometric areas in cm² (1 µm² = 1e-8 cm²)."""
        return self.area_um2 * 1e-8

    def cortex_positions_mm(self, retinotopy: WedgeDipoleMap = DEFAULT_MAP) -> NDArray[np.float64]:
        """[n, 2] electrode positions in the map's cortex coordinates (mm)."""
        center_mm, _ = retinotopy.to_cortex(np.array([self.placement_deg]))
        rot = np.deg2rad(self.rotation_deg)
        r = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
        return center_mm[0] + self.positions_mm @ r.T

    def phosphene_positions_deg(
        self, retinotopy: WedgeDipoleMap = DEFAULT_MAP
    ) -> NDArray[np.float64]:
        """[n, 2] expected phosphene positions (degrees) from the retinotopic map alone."""
        hemi = -1 if self.placement_deg[0] < 0 else 1
        return retinotopy.to_visual(self.cortex_positions_mm(retinotopy), hemi)

    def id_checksum(self) -> int:
        """CRC-32 of the ordered electrode ids: the link refuses frames for another array."""
        import zlib

        return zlib.crc32("\n".join(self.electrode_ids).encode())

    def to_file(self) -> ArrayFile:
        return ArrayFile(
            version=ARRAY_VERSION,
            name=self.name,
            description=self.description,
            kind="surface" if self.kind == "surface" else "penetrating",
            shank_length_mm=self.shank_length_mm,
            placement=Placement(center_deg=self.placement_deg, rotation_deg=self.rotation_deg),
            electrodes=tuple(
                ElectrodeSpec(id=i, x_mm=float(p[0]), y_mm=float(p[1]), area_um2=float(a))
                for i, p, a in zip(
                    self.electrode_ids, self.positions_mm, self.area_um2, strict=True
                )
            ),
        )

    def to_json(self) -> str:
        return self.to_file().model_dump_json(indent=1)


def _from_file(f: ArrayFile) -> ElectrodeArray:
    return ElectrodeArray(
        name=f.name,
        electrode_ids=tuple(e.id for e in f.electrodes),
        positions_mm=np.array([[e.x_mm, e.y_mm] for e in f.electrodes], dtype=np.float64),
        area_um2=np.array([e.area_um2 for e in f.electrodes], dtype=np.float64),
        shank_length_mm=f.shank_length_mm,
        placement_deg=f.placement.center_deg,
        rotation_deg=f.placement.rotation_deg,
        kind=f.kind,
        description=f.description,
    )


def parse_array(raw: object, source: str = "<array>") -> ElectrodeArray:
    """Validate an already-parsed array document; ArrayError with every reason."""
    try:
        return _from_file(ArrayFile.model_validate(raw))
    except ValidationError as exc:
        reasons = "; ".join(
            f"{error_location(err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ArrayError(f"{source}: refused: {reasons}") from exc


def list_arrays() -> list[str]:
    """Names of the arrays shipped in hardware/array_data/."""
    return sorted(p.stem for p in ARRAY_DATA_DIR.glob("*.json"))


def load_array(name_or_path: str | Path) -> ElectrodeArray:
    """Load a shipped array by name ("utah96") or any array file by path."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = ARRAY_DATA_DIR / f"{name_or_path}.json"
        if not p.exists():
            raise ArrayError(
                f"unknown array {name_or_path!r}; shipped arrays: {', '.join(list_arrays())}"
            )
    try:
        raw = load_untrusted_json(p, "array file")
    except UntrustedFileError as exc:
        raise ArrayError(str(exc)) from exc
    return parse_array(raw, source=str(p))
