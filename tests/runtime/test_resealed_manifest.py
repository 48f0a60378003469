"""Re-sealed manifests (issue 16): the manifest's own seal is integrity, not authenticity.

A forger who edits a manifest and recomputes `manifest_sha256` passes the seal; what stops the
edited bundle is a digest held elsewhere: `--expect-digest` (pinned) or a deployment package's
signature (which covers every member's sha256). `npe run` writes the digest it ran into the
audit log and the run summary, so a run can be checked afterwards against the pinned one.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from export.deploy import build_package
from hardware.audit import EVENT_BUNDLE_LOADED, TYPE_EVENT, Record, iter_records
from npe_cli import app
from runtime.bundle import BundleManifest, bundle_digest, default_bundle_path
from runtime.package import PackageError, generate_keypair, verify_package

MANIFEST = "manifest.json"


def _reseal_with_an_edit(bundle: Path) -> None:
    """Flip every output's polarity (ON cells drive OFF phosphenes) and recompute the
    manifest's own digest, as a forger would."""
    raw = json.loads((bundle / MANIFEST).read_text())
    raw["output"]["polarity"] = [-p for p in raw["output"]["polarity"]]
    raw["manifest_sha256"] = BundleManifest.model_validate(raw).content_sha256()
    (bundle / MANIFEST).write_text(json.dumps(raw), encoding="utf-8")


@pytest.fixture
def resealed(tmp_path: Path) -> tuple[Path, str]:
    """(a re-sealed edited copy of the shipped bundle, the shipped bundle's digest)."""
    b = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), b)
    pinned = bundle_digest(b)
    _reseal_with_an_edit(b)
    return b, pinned


def test_the_seal_alone_does_not_catch_a_resealed_edit(resealed: tuple[Path, str]) -> None:
    """Stated plainly: without a pin or a signature the edited bundle verifies."""
    b, pinned = resealed
    r = CliRunner().invoke(app, ["inspect", str(b), "--json"])
    assert r.exit_code == 0, r.output
    digest = json.loads(r.output)["bundle_digest"]
    assert digest != pinned  # but its digest (what inspect prints to pin) changed


def test_a_resealed_manifest_is_refused_by_the_pinned_digest(
    resealed: tuple[Path, str], tmp_path: Path
) -> None:
    b, pinned = resealed
    for argv in (
        ["inspect", str(b), "--expect-digest", pinned],
        ["run", "--bundle", str(b), "--expect-digest", pinned, "--source", "synthetic:bar",
         "--duration", "1", "--log", str(tmp_path / "run" / "audit.log")],
    ):  # fmt: skip
        r = CliRunner().invoke(app, argv)
        assert r.exit_code == 2, r.output
        assert "is not the expected" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_resealed_manifest_is_refused_by_the_package_signature(
    resealed: tuple[Path, str], tmp_path: Path
) -> None:
    """Swap the re-sealed manifest into a signed package: the signed member digest differs."""
    b, _ = resealed
    kid = generate_keypair(tmp_path / "keys")
    pkg = tmp_path / "p.npepkg"
    build_package(
        default_bundle_path(), "utah96", None, None, tmp_path / "keys" / f"{kid}.key", pkg
    )
    forged = tmp_path / "forged.npepkg"
    with tarfile.open(pkg) as tin, tarfile.open(forged, "w:") as tout:
        for info in tin:
            fh = tin.extractfile(info)
            data = fh.read() if fh is not None else b""
            if info.name == f"bundle/{MANIFEST}":
                data = (b / MANIFEST).read_bytes()
            out = tarfile.TarInfo(info.name)
            out.size = len(data)
            tout.addfile(out, io.BytesIO(data))
    with pytest.raises(PackageError, match="was altered"):
        verify_package(forged, tmp_path / "keys")
    r = CliRunner().invoke(app, ["deploy", "verify", str(forged), "--keys", str(tmp_path / "keys")])
    assert r.exit_code == 2 and "altered" in r.stderr


def test_npe_run_records_the_bundle_digest_in_the_audit_log_and_summary(tmp_path: Path) -> None:
    digest = bundle_digest(default_bundle_path())
    log = tmp_path / "run" / "audit.log"
    r = CliRunner().invoke(
        app,
        ["run", "--expect-digest", digest, "--source", "synthetic:bar", "--duration", "0.3",
         "--as-fast-as-possible", "--log", str(log)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["extra"]["bundle_digest"] == digest
    events = [
        rec.json()
        for rec in iter_records(log)
        if isinstance(rec, Record)
        and rec.rtype == TYPE_EVENT
        and rec.json().get("kind") == EVENT_BUNDLE_LOADED
    ]
    assert len(events) == 1 and digest in str(events[0]["detail"])
