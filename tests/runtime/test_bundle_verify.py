"""runtime.bundle: the verifier refuses every kind of tampering, each with its own message.

The bundles here are built with `onnx.helper` only (no torch), the way the runtime sees them:
a tiny linear "model" window [1, T, H, W] → rates [1, n], plus a manifest written through the
real schema.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from runtime.bundle import (
    MANIFEST_NAME,
    BundleError,
    BundleManifest,
    InputGeometry,
    ModelForm,
    ModelInfo,
    OutputSpec,
    Parity,
    Preprocessing,
    TensorSpec,
    Timing,
    default_bundle_path,
    load_bundle,
    sha256_file,
    write_manifest,
)

T, H, W, N = 4, 6, 8, 3


def _manifest(files: dict[str, str]) -> BundleManifest:
    form = ModelForm(
        file="model.onnx",
        form="window",
        inputs=(TensorSpec(name="window", shape=(1, T, H, W)),),
        outputs=(TensorSpec(name="rates", shape=(1, N)),),
    )
    return BundleManifest(
        model=ModelInfo(name="linear", kind="cells", stateful=False),
        timing=Timing(frame_rate_hz=100.0, window_frames=T),
        input=InputGeometry(height=H, width=W, pixel_size_deg=0.5, field_of_view_deg=(4.0, 3.0)),
        output=OutputSpec(
            n=N,
            ids=("a", "b", "c"),
            types=("ON", "OFF", "unknown"),
            polarity=(1, -1, 0),
            positions_deg=((0.0, 0.0), (1.0, 1.0), (None, None)),
        ),
        preprocessing=Preprocessing(contrast_offset=127.5, contrast_scale=127.5),
        forms=(form,),
        files=files,
        parity=Parity(),
    )


def build_bundle(path: Path) -> Path:
    path.mkdir(parents=True)
    weights = np.random.default_rng(0).normal(size=(T * H * W, N)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["window", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["rates"]),
        ],
        "linear",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, [1, T, H, W])],
        [helper.make_tensor_value_info("rates", TensorProto.FLOAT, [1, N])],
        [
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array([1, T * H * W], np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    draft = _manifest({"model.onnx": "0" * 64})
    helper.set_model_props(model, draft.metadata_for(draft.forms[0]))
    onnx.save(model, path / "model.onnx")
    manifest = _manifest({"model.onnx": sha256_file(path / "model.onnx")})
    write_manifest(path, manifest)
    return path


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return build_bundle(tmp_path / "bundle")


def _edit_manifest(path: Path, edit: dict[str, object], reseal: bool = True) -> None:
    """Apply dotted-path edits; with `reseal`, also recompute manifest_sha256 (a careful forger)."""
    raw = json.loads((path / MANIFEST_NAME).read_text())
    for dotted, value in edit.items():
        node = raw
        keys = dotted.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if isinstance(node, list):
            node[int(keys[-1])] = value
        else:
            node[keys[-1]] = value
    if reseal:
        try:
            raw["manifest_sha256"] = BundleManifest.model_validate(raw).content_sha256()
        except ValidationError:
            pass  # an invalid manifest is refused before its digest is looked at
    (path / MANIFEST_NAME).write_text(json.dumps(raw))


def test_intact_bundle_loads_with_its_manifest(bundle: Path) -> None:
    b = load_bundle(bundle)
    assert b.verified
    assert b.manifest.output.positions_array().shape == (N, 2)
    assert np.isnan(b.manifest.output.positions_array()[2]).all()
    assert b.form("step").form == "window"  # no step form: falls back to the window form


def test_missing_model_file_is_refused(bundle: Path) -> None:
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"missing file 'model.onnx'"):
        load_bundle(bundle)


def test_altered_model_file_is_refused(bundle: Path) -> None:
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"'model.onnx' was altered"):
        load_bundle(bundle)


def test_extra_file_is_refused(bundle: Path) -> None:
    shutil.copy(bundle / "model.onnx", bundle / "model.int8.onnx")
    with pytest.raises(BundleError, match=r"extra file\(s\) not listed.*model.int8.onnx"):
        load_bundle(bundle)


def test_unknown_schema_version_is_refused(bundle: Path) -> None:
    _edit_manifest(bundle, {"schema_version": 3})
    with pytest.raises(BundleError, match=r"unknown schema version 3"):
        load_bundle(bundle)
    _edit_manifest(bundle, {"schema_version": 1})
    with pytest.raises(BundleError, match=r"schema version 1 carries no digest"):
        load_bundle(bundle)


def test_manifest_that_disagrees_with_the_model_inputs_is_refused(bundle: Path) -> None:
    _edit_manifest(bundle, {"forms.0.inputs.0.name": "frames"})
    with pytest.raises(BundleError, match=r"manifest inputs of 'model.onnx' do not match"):
        load_bundle(bundle)


def test_manifest_that_disagrees_with_the_model_outputs_is_refused(bundle: Path) -> None:
    # A consistent manifest (n = 4 everywhere) that still lies about the real model (n = 3).
    _edit_manifest(
        bundle,
        {
            "forms.0.outputs.0.shape": [1, 4],
            "output.n": 4,
            "output.ids": ["a", "b", "c", "d"],
            "output.types": ["ON"] * 4,
            "output.polarity": [1] * 4,
            "output.positions_deg": [[0, 0]] * 4,
        },
    )
    with pytest.raises(BundleError, match=r"manifest outputs of 'model.onnx' do not match"):
        load_bundle(bundle)


def test_manifest_that_disagrees_with_the_model_metadata_is_refused(bundle: Path) -> None:
    _edit_manifest(bundle, {"timing.frame_rate_hz": 120.0})
    with pytest.raises(BundleError, match=r"metadata 'npe.frame_rate_hz'"):
        load_bundle(bundle)


def test_missing_manifest_and_invalid_manifest_are_refused(bundle: Path) -> None:
    _edit_manifest(bundle, {"output.polarity": [1, 2, 0]})
    with pytest.raises(BundleError, match=r"invalid manifest at output"):
        load_bundle(bundle)
    (bundle / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match=r"missing manifest.json"):
        load_bundle(bundle)


def test_verify_false_skips_hash_checks_but_still_reads_schema(bundle: Path) -> None:
    (bundle / "model.onnx").write_bytes(b"garbage")
    assert not load_bundle(bundle, verify=False).verified
    with pytest.raises(BundleError, match="altered"):
        load_bundle(bundle)


def test_default_bundle_path_points_into_the_runtime_package() -> None:
    path = default_bundle_path()
    assert path.name == "default_bundle" and path.parent.name == "runtime"
