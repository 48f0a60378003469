"""Integrity of the manifest itself: no edit of any field the runtime uses goes unnoticed.

Real bundles (the shipped default one copied, and the onnx.helper one of test_bundle_verify),
real files, the real `npe` CLI through typer's CliRunner. An edit that does not also rewrite
``manifest_sha256`` is refused by the digest; one that does (a careful forger) is refused by the
parity rule, the model checks, or a pinned `bundle_digest` (what the deployment package signs).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.toymodel import write_toy_bundle
from typer.testing import CliRunner

from npe_cli import app
from runtime.bundle import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    BundleError,
    BundleManifest,
    bundle_digest,
    default_bundle_path,
    load_bundle,
    read_manifest,
)

Leaf = tuple[tuple[str | int, ...], Any]


def _leaves(node: Any, prefix: tuple[str | int, ...] = ()) -> list[Leaf]:
    """Every (path, value) leaf of a parsed JSON value, except the digest itself."""
    if isinstance(node, dict):
        return [
            leaf
            for k, v in node.items()
            if prefix or k != "manifest_sha256"
            for leaf in _leaves(v, (*prefix, k))
        ]
    if isinstance(node, list):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, (*prefix, i))]
    return [(prefix, node)]


def _changed(value: Any) -> Any:
    """A different value of the same JSON kind (what a tamperer would write)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return -value if value not in (0,) else 1
    if isinstance(value, float):
        return value + 3.0
    if isinstance(value, str):
        return value + "x"
    return 3.0  # None (unknown cell position) → a position


def _set(raw: Any, path: tuple[str | int, ...], value: Any) -> None:
    node = raw
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


def _write_edit(bundle: Path, path: tuple[str | int, ...], raw: dict[str, Any]) -> None:
    edited = json.loads(json.dumps(raw))
    _set(edited, path, _changed(_get(raw, path)))
    (bundle / MANIFEST_NAME).write_text(json.dumps(edited), encoding="utf-8")


def _get(raw: Any, path: tuple[str | int, ...]) -> Any:
    for k in path:
        raw = raw[k]
    return raw


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A copy of the shipped default bundle (ratemap, stateful, 2048 outputs, real parity)."""
    return Path(shutil.copytree(default_bundle_path(), tmp_path / "shipped"))


def test_every_single_field_edit_of_a_manifest_is_refused(tmp_path: Path) -> None:
    """Exhaustive over the small bundle's manifest: each leaf changed alone is refused."""
    bundle = write_toy_bundle(tmp_path / "b", window_frames=4, height=8, width=8, seed=2)
    raw = json.loads((bundle / MANIFEST_NAME).read_text())
    leaves = _leaves(raw)
    assert len(leaves) > 50
    undetected = []
    for path, _ in leaves:
        _write_edit(bundle, path, raw)
        try:
            read_manifest(bundle)
        except BundleError:
            continue
        undetected.append(path)
    assert undetected == []


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_field_edits_of_the_shipped_manifest_are_refused(
    shipped: Path, data: st.DataObject
) -> None:
    raw = json.loads((shipped / MANIFEST_NAME).read_text())
    path, _ = data.draw(st.sampled_from(_leaves(raw)))
    _write_edit(shipped, path, raw)
    with pytest.raises(BundleError):
        read_manifest(shipped)
    (shipped / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")


def _shift_positions(raw: dict[str, Any]) -> None:
    grid = raw["output"]["grid"]
    grid["xs_deg"] = [x + 3.0 for x in grid["xs_deg"]]
    raw["output"]["positions_deg"] = [
        [None if x is None else x + 3.0, y] for x, y in raw["output"]["positions_deg"]
    ]


def _flip_polarity(raw: dict[str, Any]) -> None:
    raw["output"]["polarity"] = [-p for p in raw["output"]["polarity"]]


def _fail_parity(raw: dict[str, Any]) -> None:
    raw["parity"]["forms"][0]["passed"] = False


def _rescale_rates(raw: dict[str, Any]) -> None:
    raw["preprocessing"]["contrast_scale"] = 12.75


def _retime(raw: dict[str, Any]) -> None:
    raw["timing"]["frame_rate_hz"] = 50.0


EDITS = {
    "positions+3deg": _shift_positions,
    "polarity flipped": _flip_polarity,
    "parity failed": _fail_parity,
    "contrast scale": _rescale_rates,
    "frame rate": _retime,
}


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("name", list(EDITS))
def test_npe_inspect_refuses_each_campaign_edit_with_exit_2(shipped: Path, name: str) -> None:
    before = (shipped / MANIFEST_NAME).read_bytes()
    raw = json.loads(before)
    EDITS[name](raw)
    (shipped / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")
    result = _invoke("inspect", str(shipped))
    assert result.exit_code == 2, result.output
    assert "manifest content was altered" in result.output
    assert len(result.output.strip().splitlines()) == 1  # one line


@pytest.mark.parametrize("name", list(EDITS))
def test_resealed_edits_are_caught_by_the_pinned_digest(shipped: Path, name: str) -> None:
    """A forger who recomputes manifest_sha256 still fails the signed (pinned) bundle digest."""
    pinned = bundle_digest(shipped)
    raw = json.loads((shipped / MANIFEST_NAME).read_text())
    EDITS[name](raw)
    raw["manifest_sha256"] = BundleManifest.model_validate(raw).content_sha256()
    (shipped / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")
    result = _invoke("inspect", str(shipped), "--expect-digest", pinned)
    assert result.exit_code == 2, result.output
    with pytest.raises(BundleError, match=r"not the expected|parity check|metadata"):
        load_bundle(shipped, expected_digest=pinned)


def test_intact_bundle_passes_inspect_and_its_pinned_digest(shipped: Path) -> None:
    digest = bundle_digest(shipped)
    assert digest == bundle_digest(default_bundle_path())  # a copy has the same digest
    result = _invoke("inspect", str(shipped), "--json", "--expect-digest", digest)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["bundle_digest"] == digest
    (shipped / "model.onnx").write_bytes((shipped / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(BundleError):
        bundle_digest(shipped)


def test_resealed_failed_parity_is_refused_without_a_pin(shipped: Path) -> None:
    raw = json.loads((shipped / MANIFEST_NAME).read_text())
    raw["parity"]["forms"][1]["passed"] = False
    raw["manifest_sha256"] = BundleManifest.model_validate(raw).content_sha256()
    (shipped / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")
    result = _invoke("inspect", str(shipped))
    assert result.exit_code == 2
    assert "parity check of 'model.step.onnx'" in result.output


def test_npe_run_refuses_an_edited_bundle_and_writes_nothing(shipped: Path, tmp_path: Path) -> None:
    raw = json.loads((shipped / MANIFEST_NAME).read_text())
    _flip_polarity(raw)
    (shipped / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")
    log = tmp_path / "run" / "audit.log"
    result = _invoke(
        "run", "--bundle", str(shipped), "--source", "synthetic:bar", "--log", str(log)
    )
    assert result.exit_code == 2, result.output
    assert "manifest content was altered" in result.output
    assert not log.exists()
    wrong = "0" * 64  # an intact bundle that is not the pinned one is refused too
    result = _invoke(
        "run", "--expect-digest", wrong, "--source", "synthetic:bar", "--log", str(log)
    )
    assert result.exit_code == 2, result.output
    assert "is not the expected" in result.output
    assert not log.exists()


def test_symlinked_file_leaving_the_bundle_is_refused(shipped: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(shipped / "model.onnx", outside)
    os.symlink(outside, shipped / "model.onnx")  # same bytes, so its sha256 still matches
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(shipped)
    assert _invoke("inspect", str(shipped)).exit_code == 2


def test_symlinked_manifest_is_refused(shipped: Path, tmp_path: Path) -> None:
    shutil.move(shipped / MANIFEST_NAME, tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", shipped / MANIFEST_NAME)
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(shipped)


@pytest.mark.parametrize("name", ["..", ".", "a\\b", "../model.onnx"])
def test_file_names_that_leave_the_bundle_are_refused(shipped: Path, name: str) -> None:
    raw = json.loads((shipped / MANIFEST_NAME).read_text())
    raw["files"][name] = "0" * 64
    (shipped / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(BundleError, match="plain file name"):
        read_manifest(shipped)


def test_a_60_mb_manifest_is_refused_fast(shipped: Path) -> None:
    raw = json.loads((shipped / MANIFEST_NAME).read_text())
    raw["versions"] = {"pad": "x" * (60 * 1024 * 1024)}
    (shipped / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")
    assert (shipped / MANIFEST_NAME).stat().st_size > MAX_MANIFEST_BYTES
    t0 = time.perf_counter()
    result = _invoke("inspect", str(shipped))
    elapsed_s = time.perf_counter() - t0
    assert result.exit_code == 2
    assert "byte limit" in result.output
    assert elapsed_s < 2.0


@pytest.mark.parametrize("depth", [17, 100_000])
def test_deeply_nested_manifest_is_refused(shipped: Path, depth: int) -> None:
    raw = json.loads((shipped / MANIFEST_NAME).read_text())
    text = json.dumps(raw)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    (shipped / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(BundleError, match="nested deeper"):
        read_manifest(shipped)


def test_non_finite_numbers_are_refused(shipped: Path) -> None:
    text = (
        (shipped / MANIFEST_NAME)
        .read_text()
        .replace('"frame_rate_hz": 100.0', '"frame_rate_hz": NaN')
    )
    (shipped / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(BundleError, match="NaN is not a number JSON allows"):
        read_manifest(shipped)
