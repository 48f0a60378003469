"""Signed deployment packages: real Ed25519 keys, real tar files, real bundle/array/limits."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from export.deploy import build_package
from hardware.audit import EVENT_DEV_UNSIGNED, EVENT_PACKAGE_VERIFIED, inspect_log
from runtime.bundle import default_bundle_path
from runtime.package import (
    PackageError,
    extract_package,
    generate_keypair,
    revoke_key,
    verify_package,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(package, trusted key dir, key id) built from the shipped default bundle."""
    base = tmp_path_factory.mktemp("pkg")
    kid = generate_keypair(base / "keys")
    trusted = base / "trusted"
    trusted.mkdir()
    (trusted / f"{kid}.pub").write_bytes((base / "keys" / f"{kid}.pub").read_bytes())
    pkg = base / "p.npepkg"
    build_package(default_bundle_path(), "utah96", None, None, base / "keys" / f"{kid}.key", pkg)
    return pkg, trusted, kid


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None]) -> None:
    """Copy a package's tar, replacing (bytes) or dropping (None) members by name."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w:") as tout:
        for info in tin:
            fh = tin.extractfile(info)
            data = fh.read() if fh is not None else b""
            if info.name in change:
                new = change[info.name]
                if new is None:
                    continue
                data = new
            out = tarfile.TarInfo(info.name)
            out.size = len(data)
            tout.addfile(out, io.BytesIO(data))


def test_build_and_verify_ok(signed: tuple[Path, Path, str]) -> None:
    pkg, trusted, kid = signed
    v = verify_package(pkg, trusted)
    assert v.key_id == kid
    assert "bundle/manifest.json" in v.manifest.members and "array.json" in v.contents
    ext = extract_package(pkg, trusted)
    assert (ext.bundle / "manifest.json").is_file()
    assert oct(ext.root.stat().st_mode & 0o777) == "0o700"


def test_tampered_member_is_refused_naming_it(
    signed: tuple[Path, Path, str], tmp_path: Path
) -> None:
    pkg, trusted, _ = signed
    with tarfile.open(pkg) as t:
        fh = t.extractfile("limits.json")
        assert fh is not None
        data = bytearray(fh.read())
    data[10] ^= 1
    bad = tmp_path / "bad.npepkg"
    _rewrite(pkg, bad, {"limits.json": bytes(data)})
    with pytest.raises(PackageError, match=r"'limits\.json' was altered"):
        verify_package(bad, trusted)


def test_untrusted_key_is_refused(signed: tuple[Path, Path, str], tmp_path: Path) -> None:
    pkg, _, kid = signed
    other = tmp_path / "other"
    generate_keypair(other)
    for p in other.glob("*.key"):
        p.unlink()
    with pytest.raises(PackageError, match=f"key {kid}, which is not among the trusted"):
        verify_package(pkg, other)


def test_foreign_signature_over_altered_manifest_is_refused(
    signed: tuple[Path, Path, str], tmp_path: Path
) -> None:
    pkg, trusted, _ = signed
    with tarfile.open(pkg) as t:
        fh = t.extractfile("package.json")
        assert fh is not None
        manifest = fh.read()
    bad = tmp_path / "bad.npepkg"
    _rewrite(pkg, bad, {"package.json": manifest.replace(b"Z", b"Z ", 1)})
    with pytest.raises(PackageError, match="signature does not match"):
        verify_package(bad, trusted)


def test_revoked_key_is_refused(signed: tuple[Path, Path, str], tmp_path: Path) -> None:
    pkg, trusted, kid = signed
    keys = tmp_path / "trusted"
    keys.mkdir()
    (keys / f"{kid}.pub").write_bytes((trusted / f"{kid}.pub").read_bytes())
    verify_package(pkg, keys)
    revoke_key(kid, keys)
    assert json.loads((keys / "revoked.json").read_text())["revoked"] == [kid]
    with pytest.raises(PackageError, match=f"revoked key {kid}"):
        verify_package(pkg, keys)


def test_unsigned_archive_is_refused(signed: tuple[Path, Path, str], tmp_path: Path) -> None:
    pkg, trusted, _ = signed
    bad = tmp_path / "unsigned.npepkg"
    _rewrite(pkg, bad, {"package.sig": None})
    with pytest.raises(PackageError, match="unsigned package"):
        verify_package(bad, trusted)


@pytest.mark.parametrize("name", ["../evil.json", "/etc/evil", "bundle/../../x"])
def test_path_traversal_member_is_refused(
    signed: tuple[Path, Path, str], tmp_path: Path, name: str
) -> None:
    pkg, trusted, _ = signed
    bad = tmp_path / "trav.npepkg"
    with tarfile.open(pkg) as tin, tarfile.open(bad, "w:") as tout:
        for info in tin:
            tout.addfile(info, tin.extractfile(info))
        evil = tarfile.TarInfo(name)
        evil.size = 2
        tout.addfile(evil, io.BytesIO(b"{}"))
    with pytest.raises(PackageError, match="unsafe path"):
        verify_package(bad, trusted)
    assert not (tmp_path / "evil.json").exists()


def test_symlink_member_is_refused(signed: tuple[Path, Path, str], tmp_path: Path) -> None:
    pkg, trusted, _ = signed
    bad = tmp_path / "link.npepkg"
    with tarfile.open(pkg) as tin, tarfile.open(bad, "w:") as tout:
        for info in tin:
            tout.addfile(info, tin.extractfile(info))
        link = tarfile.TarInfo("run2.json")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tout.addfile(link)
    with pytest.raises(PackageError, match="not a regular file"):
        verify_package(bad, trusted)


def test_build_refuses_a_bad_limits_file_and_writes_nothing(
    signed: tuple[Path, Path, str], tmp_path: Path
) -> None:
    keys = tmp_path / "k"
    kid = generate_keypair(keys)
    lim = tmp_path / "limits.json"
    lim.write_text(json.dumps({"max_amplitude_ua": 1e6}))
    out = tmp_path / "p.npepkg"
    with pytest.raises(ValueError):
        build_package(default_bundle_path(), "utah96", lim, None, keys / f"{kid}.key", out)
    assert not out.exists()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DISPLAY", None)
    env.update(extra)
    return env


def _npe(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "npe_cli", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_npe_run_package_end_to_end(signed: tuple[Path, Path, str], tmp_path: Path) -> None:
    pkg, trusted, kid = signed
    log = tmp_path / "run" / "audit.log"
    proc = _npe(
        "run",
        "--package",
        str(pkg),
        "--trusted-keys",
        str(trusted),
        "--duration",
        "1",
        "--source",
        "synthetic:bar",
        "--log",
        str(log),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = inspect_log(log)
    assert report.ok and report.n_frames > 10
    assert report.events_by_kind.get(EVENT_PACKAGE_VERIFIED) == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["extra"]["package"]["key_id"] == kid


def test_npe_run_refuses_a_revoked_package_and_stimulates_nothing(
    signed: tuple[Path, Path, str], tmp_path: Path
) -> None:
    pkg, trusted, kid = signed
    keys = tmp_path / "trusted"
    keys.mkdir()
    (keys / f"{kid}.pub").write_bytes((trusted / f"{kid}.pub").read_bytes())
    assert _npe("deploy", "revoke", kid, "--keys", str(keys), cwd=tmp_path).returncode == 0
    log = tmp_path / "run" / "audit.log"
    proc = _npe(
        "run",
        "--package",
        str(pkg),
        "--trusted-keys",
        str(keys),
        "--duration",
        "1",
        "--source",
        "synthetic:bar",
        "--log",
        str(log),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "revoked key" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not log.exists()  # no chain was opened, nothing was sent


def test_prosthesis_mode_refuses_unsigned_and_dev_flag_is_audited(tmp_path: Path) -> None:
    log = tmp_path / "run" / "audit.log"
    args = ("run", "--duration", "1", "--source", "synthetic:bar", "--log", str(log))
    proc = _npe(*args, cwd=tmp_path, NPE_PROSTHESIS_MODE="1")
    assert proc.returncode == 2 and "prosthesis mode" in proc.stderr
    assert not log.exists()
    proc = _npe(*args, "--dev-unsigned", cwd=tmp_path, NPE_PROSTHESIS_MODE="1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert inspect_log(log).events_by_kind.get(EVENT_DEV_UNSIGNED) == 1


def test_npe_run_package_refuses_flags_it_fixes(
    signed: tuple[Path, Path, str], tmp_path: Path
) -> None:
    pkg, trusted, _ = signed
    proc = _npe(
        "run",
        "--package",
        str(pkg),
        "--trusted-keys",
        str(trusted),
        "--bundle",
        str(default_bundle_path()),
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "--package fixes" in proc.stderr


def test_deploy_verify_cli_refuses_unsigned(signed: tuple[Path, Path, str], tmp_path: Path) -> None:
    pkg, trusted, _ = signed
    bad = tmp_path / "unsigned.npepkg"
    _rewrite(pkg, bad, {"package.sig": None})
    proc = _npe("deploy", "verify", str(bad), "--keys", str(trusted), cwd=tmp_path)
    assert proc.returncode == 2 and "unsigned package" in proc.stderr
    ok = _npe("deploy", "verify", str(pkg), "--keys", str(trusted), cwd=tmp_path)
    assert ok.returncode == 0 and "OK" in ok.stdout


def _calibration(path: Path, array_name: str, electrode_id: str) -> Path:
    from hardware.calibration_file import (
        ElectrodeCalibration,
        PatientCalibration,
        save_calibration,
    )

    cal = PatientCalibration(
        version=1,
        patient_id="p",
        arrays=(array_name,),
        electrodes=(
            ElectrodeCalibration(
                electrode_id=electrode_id,
                threshold_ua=30,
                max_comfortable_ua=60,
                phosphene_deg=(0.0, 0.0),
            ),
        ),
    )
    return save_calibration(cal, path)


def test_calibration_is_packaged_and_checked_against_the_array(tmp_path: Path) -> None:
    from hardware.arrays import load_array

    utah = load_array("utah96")
    keys = tmp_path / "k"
    kid = generate_keypair(keys)
    good = _calibration(tmp_path / "good.json", utah.name, utah.electrode_ids[0])
    out = tmp_path / "p.npepkg"
    build_package(default_bundle_path(), "utah96", None, good, keys / f"{kid}.key", out)
    ext = extract_package(out, keys)
    assert ext.calibration is not None and ext.calibration.read_bytes() == good.read_bytes()
    bad = _calibration(tmp_path / "bad.json", utah.name, "no-such-electrode")
    out2 = tmp_path / "p2.npepkg"
    with pytest.raises(PackageError, match="does not fit array"):
        build_package(default_bundle_path(), "utah96", None, bad, keys / f"{kid}.key", out2)
    assert not out2.exists()
