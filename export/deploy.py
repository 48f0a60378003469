"""Build a signed deployment package (`npe deploy build`): export writes what runtime reads.

Every part is first checked with the same loaders the prosthesis computer uses
(runtime.package.validate_contents), in a temporary directory, so a package that would be
refused at run time is never written. The archive is written to a temp file and renamed,
so a failure leaves nothing at --out.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from runtime.package import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    MemberInfo,
    PackageError,
    PackageManifest,
    RunConfig,
    Signature,
    load_private_key,
    tar_bytes,
    validate_contents,
    write_members,
)


def _bundle_members(bundle: Path) -> dict[str, bytes]:
    if not bundle.is_dir():
        raise PackageError(f"{bundle}: not a bundle directory")
    out: dict[str, bytes] = {}
    for p in sorted(bundle.iterdir()):
        if p.is_symlink() or not p.is_file():
            raise PackageError(f"{p}: bundles hold regular files only")
        out[f"bundle/{p.name}"] = p.read_bytes()
    return out


def build_package(
    bundle: Path,
    array: str | Path | None,
    limits: Path | None,
    calibration: Path | None,
    key_file: Path,
    out: Path,
    run: RunConfig | None = None,
    implant: str | Path | None = None,
) -> PackageManifest:
    """Validate the parts, sign their manifest with key_file and write the archive to out.

    `implant` (a name or implant file) packages an implant instead of `array`: its arrays go
    in embedded, placed, as one self-contained implant.json (so the package needs no array
    files beside it), and the calibration is checked against the implant (qualified ids).
    """
    from hardware.arrays import load_array
    from hardware.safety import SafetyLimits

    if out.exists():
        raise PackageError(f"{out}: exists; not overwriting a package")
    key, key_id = load_private_key(key_file)
    contents = _bundle_members(bundle)
    if (array is None) == (implant is None):
        raise PackageError("a package holds one array or one implant: give exactly one")
    if implant is not None:
        from hardware.implant import load_implant

        record = load_implant(implant).to_record()
        contents["implant.json"] = record.model_dump_json(indent=1).encode()
    else:
        assert array is not None
        contents["array.json"] = load_array(array).to_json().encode()
    lim = SafetyLimits.load(limits) if limits is not None else SafetyLimits()
    contents["limits.json"] = lim.model_dump_json(indent=2).encode()
    if calibration is not None:
        if not calibration.is_file():
            raise PackageError(f"{calibration}: no such calibration file")
        contents["calibration.json"] = calibration.read_bytes()
    contents["run.json"] = (run or RunConfig()).model_dump_json(indent=2).encode()
    with tempfile.TemporaryDirectory(prefix="npe-deploy-") as tmp:
        write_members(contents, Path(tmp))
        validate_contents(Path(tmp))
    manifest = PackageManifest(
        created_utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        members={
            n: MemberInfo(sha256=hashlib.sha256(d).hexdigest(), size=len(d))
            for n, d in contents.items()
        },
    )
    raw = manifest.canonical_bytes()
    signature = key.sign(raw)  # type: ignore[attr-defined]
    sig = Signature(key_id=key_id, signature=signature.hex())
    contents[MANIFEST_NAME] = raw
    contents[SIGNATURE_NAME] = json.dumps(sig.model_dump()).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp_out.write_bytes(tar_bytes(contents))
        tmp_out.replace(out)
    finally:
        tmp_out.unlink(missing_ok=True)
    return manifest
