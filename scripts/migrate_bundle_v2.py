"""Migrate a bundle's manifest from schema v1 to v2 in place by re-hashing only.

v2 adds ``manifest_sha256`` (the digest of the manifest's own canonical content); nothing else
changes, and the ONNX files are left byte for byte as they are (their sha256 in ``files`` is
re-checked first, so a bundle whose models were altered is not blessed). Used once for the
shipped default bundle: ``python scripts/migrate_bundle_v2.py runtime/default_bundle``.
Only run it on a bundle you exported yourself: sealing a manifest vouches for its content.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runtime.bundle import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    BundleManifest,
    sha256_file,
    write_manifest,
)


def migrate(path: Path) -> str:
    """Rewrite `path/manifest.json` as a sealed v2 manifest; returns its manifest_sha256."""
    raw = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    if raw.get("schema_version") != 1:
        raise SystemExit(f"{path}: schema version {raw.get('schema_version')!r}, expected 1")
    for name, digest in raw["files"].items():
        if sha256_file(path / name) != digest:
            raise SystemExit(f"{path}: {name} does not match its manifest sha256; not migrating")
    raw["schema_version"] = SCHEMA_VERSION
    return write_manifest(path, BundleManifest.model_validate(raw)).manifest_sha256


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(arg, migrate(Path(arg)))
