"""The shipped default bundle: it verifies, it is small, and re-exporting the shipped checkpoint
(no retraining) against the shipped parity excerpt gives the same parity figures and forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.default_bundle import CHECKPOINT_DIR, PARITY_DATA
from export.exporter import ExportOptions, export_bundle
from export.source import load_source
from runtime.bundle import default_bundle_path, load_bundle


def test_shipped_default_bundle_verifies_and_is_small() -> None:
    bundle = load_bundle(default_bundle_path())
    m = bundle.manifest
    assert m.model.stateful and m.find_form("step") is not None
    assert m.output.units == "spikes/s" and m.output.n > 0
    assert all(p.passed and p.n_real > 0 for p in m.parity.forms)
    total = sum((bundle.path / name).stat().st_size for name in m.files)
    assert total < 4 * 2**20  # "a few MB at most"


def test_reexporting_the_shipped_checkpoint_gives_the_same_parity(tmp_path: Path) -> None:
    shipped = load_bundle(default_bundle_path()).manifest
    again = export_bundle(
        load_source(CHECKPOINT_DIR),
        tmp_path / "bundle",
        ExportOptions(data=CHECKPOINT_DIR / PARITY_DATA),
    )
    assert again.forms == tuple(f for f in shipped.forms if f.precision == "fp32")
    assert (again.output, again.timing, again.input, again.model) == (
        shipped.output,
        shipped.timing,
        shipped.input,
        shipped.model,
    )
    assert len(again.parity.forms) == len(shipped.parity.forms)
    for new, old in zip(again.parity.forms, shipped.parity.forms, strict=True):
        assert (new.file, new.reference, new.n_real, new.n_random, new.passed) == (
            old.file,
            old.reference,
            old.n_real,
            old.n_random,
            old.passed,
        )
        # Same machine: bit-identical; other CPUs may pick other ORT kernels, hence a tolerance.
        assert new.correlation == pytest.approx(old.correlation, abs=1e-7)
        assert new.max_abs_err == pytest.approx(old.max_abs_err, rel=0.5, abs=1e-4)
    assert again.parity.step_frames == shipped.parity.step_frames
