"""The signed deployment package: its contract, verification and extraction (torch-free).

A package is one uncompressed tar holding everything a run needs::

    package.json        the manifest: schema, every other member's sha256 and size
    package.sig         JSON {"key_id", "signature"}: Ed25519 over package.json's exact bytes
    bundle/...          the ONNX bundle (runtime/bundle.py checks it again after extraction)
    array.json          the electrode array (hardware/arrays.py), or
    implant.json        an implant of several arrays (hardware/implant.py's self-contained
                        ImplantRecord: every array's document with its placement, the
                        implant-wide limits and the links); exactly one of the two
    limits.json         the safety limits (hardware/safety.py)
    calibration.json    the patient calibration (optional; hardware/calibration_file.py)
    run.json            the effective run configuration (RunConfig)

Why it lives in runtime: the prosthesis computer verifies packages and has no torch; export
(which builds them) imports this contract. Verification reads the archive into memory under
size limits and checks, in order: member names and types (regular files only, no absolute
paths, no ``..``, no links), signature present, key trusted, key not revoked, signature valid,
every member's size and sha256, nothing missing and nothing extra. Only then is anything
written, into a fresh private (0700) temporary directory.

Keys: ``<key_id>.key`` (Ed25519 private key, PEM, mode 0600) and ``<key_id>.pub`` (public
key, PEM); key_id is the first 16 hex digits of the sha256 of the raw public key. A trusted
key directory holds ``.pub`` files and optionally ``revoked.json`` (``{"revoked": [ids]}``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.bundle import BundleError

SCHEMA_NAME = "npe.package"
SCHEMA_VERSION = 1
MANIFEST_NAME = "package.json"
SIGNATURE_NAME = "package.sig"
REVOKED_NAME = "revoked.json"
#: Environment variable naming the trusted key directory.
TRUSTED_KEYS_ENV = "NPE_TRUSTED_KEYS"
#: Environment variable that, set to 1, marks this computer as a prosthesis computer.
PROSTHESIS_ENV = "NPE_PROSTHESIS_MODE"
MAX_MEMBERS = 256
MAX_MEMBER_BYTES = 256 << 20
MAX_TOTAL_BYTES = 512 << 20
MAX_META_BYTES = 1 << 20
REQUIRED_MEMBERS = ("limits.json", "run.json")
#: A package drives one array or one implant: exactly one of these members.
TARGET_MEMBERS = ("array.json", "implant.json")


class PackageError(BundleError):
    """A deployment package (or key) that must not be used; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberInfo(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0, le=MAX_MEMBER_BYTES)


class RunConfig(_Strict):
    """The run settings a package fixes (the rest, e.g. source and duration, stay flags)."""

    form: str | None = None
    precision: str = "fp32"
    camera_fov_deg: float = Field(default=60.0, gt=0.0, le=180.0)


class PackageManifest(_Strict):
    schema_name: str = SCHEMA_NAME
    schema_version: int = SCHEMA_VERSION
    created_utc: str
    members: dict[str, MemberInfo]

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed: sorted keys, no whitespace, UTF-8."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()


class Signature(_Strict):
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")


@dataclass(frozen=True)
class VerifiedPackage:
    """A package whose signature, key and every member were checked; contents in memory."""

    path: Path
    manifest: PackageManifest
    key_id: str
    contents: dict[str, bytes]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.manifest.canonical_bytes()).hexdigest()


@dataclass(frozen=True)
class ExtractedPackage:
    """Paths of a verified package's parts, extracted into a private directory."""

    root: Path
    bundle: Path
    array: Path | None
    limits: Path
    calibration: Path | None
    run: RunConfig
    key_id: str
    sha256: str
    implant: Path | None = None


# --- keys -------------------------------------------------------------------------------


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _public_raw(key: object) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    assert isinstance(key, Ed25519PublicKey)
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def generate_keypair(out_dir: Path) -> str:
    """Write a fresh Ed25519 key pair into out_dir; return its key id. Refuses to overwrite."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    priv = Ed25519PrivateKey.generate()
    pub = priv.public_key()
    kid = key_id_of(_public_raw(pub))
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / f"{kid}.key", out_dir / f"{kid}.pub"
    if key_path.exists() or pub_path.exists():
        raise PackageError(f"{key_path}: exists; not overwriting a key")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, priv.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    finally:
        os.close(fd)
    pub_path.write_bytes(pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return kid


def load_private_key(path: Path) -> tuple[object, str]:
    """The signing key at `path` and its key id; refuses a key readable by group/others."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if not path.is_file():
        raise PackageError(f"{path}: no such signing key file")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PackageError(
            f"{path}: signing key is accessible by group/others (mode {oct(mode & 0o777)}); "
            "chmod 600 it"
        )
    try:
        from hardware.untrusted_json import UntrustedFileError, read_untrusted_bytes

        key = load_pem_private_key(
            read_untrusted_bytes(path, "signing key file", 64 << 10), password=None
        )
    except UntrustedFileError as exc:
        raise PackageError(str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise PackageError(f"{path}: not a PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise PackageError(f"{path}: not an Ed25519 private key")
    return key, key_id_of(_public_raw(key.public_key()))


def default_trusted_keys() -> Path:
    env = os.environ.get(TRUSTED_KEYS_ENV)
    return Path(env) if env else Path.home() / ".config" / "npe" / "trusted_keys"


def prosthesis_mode() -> bool:
    """True on a computer configured as a prosthesis computer ($NPE_PROSTHESIS_MODE=1, or the
    file ~/.config/npe/prosthesis-mode exists): there, `npe run` needs a signed package."""
    env = os.environ.get(PROSTHESIS_ENV)
    if env is not None:
        return env.strip() not in ("", "0", "false", "no")
    return (Path.home() / ".config" / "npe" / "prosthesis-mode").exists()


def revoked_ids(keys_dir: Path) -> set[str]:
    path = keys_dir / REVOKED_NAME
    if not path.exists():
        return set()
    from hardware.untrusted_json import UntrustedFileError, load_untrusted_json

    try:
        raw = load_untrusted_json(path, "revocation list", max_bytes=MAX_META_BYTES)
        if not isinstance(raw, dict):
            raise TypeError("expected a JSON object")
        ids = raw["revoked"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise TypeError("'revoked' must be a list of key ids")
    except (UntrustedFileError, KeyError, TypeError) as exc:
        # An unreadable revocation list must not silently trust everything.
        raise PackageError(f"{path}: unreadable revocation list ({exc})") from exc
    return set(ids)


def revoke_key(key_id: str, keys_dir: Path) -> Path:
    """Add key_id to keys_dir/revoked.json (atomically); return the list's path."""
    if not keys_dir.is_dir():
        raise PackageError(f"{keys_dir}: no such key directory")
    try:
        Signature.model_validate({"key_id": key_id, "signature": "0" * 128})
    except ValidationError:
        raise PackageError(f"{key_id!r}: not a key id (16 hex digits)") from None
    ids = revoked_ids(keys_dir) | {key_id}
    path = keys_dir / REVOKED_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"revoked": sorted(ids)}, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def trusted_public_keys(keys_dir: Path) -> dict[str, object]:
    """key id → public key for every `*.pub` in keys_dir (named by the id it really has)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if not keys_dir.is_dir():
        raise PackageError(f"{keys_dir}: no trusted key directory (see `npe deploy keygen`)")
    out: dict[str, object] = {}
    from hardware.untrusted_json import UntrustedFileError, read_untrusted_bytes

    for p in sorted(keys_dir.glob("*.pub")):
        try:
            key = load_pem_public_key(read_untrusted_bytes(p, "public key file", 64 << 10))
        except UntrustedFileError as exc:
            raise PackageError(str(exc)) from exc
        except ValueError as exc:
            raise PackageError(f"{p}: not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise PackageError(f"{p}: not an Ed25519 public key")
        out[key_id_of(_public_raw(key))] = key
    return out


# --- archive reading --------------------------------------------------------------------


def _check_name(name: str) -> None:
    p = PurePosixPath(name)
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or ".." in p.parts
        or p.parts[0:1] == ("",)
        or any(part in ("", ".") for part in name.split("/"))
    ):
        raise PackageError(f"member {name!r}: unsafe path (absolute, '..' or odd name)")


def read_members(path: Path) -> dict[str, bytes]:
    """Every member's bytes, refusing links, devices, unsafe names and oversize archives."""
    if not path.is_file():
        raise PackageError(f"{path}: no such package file")
    contents: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                _check_name(info.name)
                if not info.isreg():
                    raise PackageError(
                        f"{path}: member {info.name!r} is not a regular file (links and "
                        "directories are refused)"
                    )
                if info.name in contents:
                    raise PackageError(f"{path}: member {info.name!r} appears twice")
                if len(contents) >= MAX_MEMBERS:
                    raise PackageError(f"{path}: more than {MAX_MEMBERS} members")
                if info.size > MAX_MEMBER_BYTES or total + info.size > MAX_TOTAL_BYTES:
                    raise PackageError(f"{path}: member {info.name!r} exceeds the size limits")
                fh = tar.extractfile(info)
                assert fh is not None  # regular file
                data = fh.read()
                total += len(data)
                contents[info.name] = data
    except PackageError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise PackageError(f"{path}: {exc}") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PackageError(f"{path}: not a readable package archive ({exc})") from exc
    return contents


def verify_package(path: Path, keys_dir: Path | None = None) -> VerifiedPackage:
    """Check everything about the package at `path` against the trusted keys in keys_dir
    (default: $NPE_TRUSTED_KEYS or ~/.config/npe/trusted_keys); raise PackageError naming
    the first problem. Writes nothing."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    keys_dir = keys_dir if keys_dir is not None else default_trusted_keys()
    contents = read_members(path)
    if MANIFEST_NAME not in contents:
        raise PackageError(f"{path}: no {MANIFEST_NAME}; not an npe deployment package")
    if SIGNATURE_NAME not in contents:
        raise PackageError(f"{path}: unsigned package (no {SIGNATURE_NAME}); refused")
    raw_manifest = contents[MANIFEST_NAME]
    if len(raw_manifest) > MAX_META_BYTES or len(contents[SIGNATURE_NAME]) > MAX_META_BYTES:
        raise PackageError(f"{path}: manifest or signature too large")
    try:
        sig = Signature.model_validate_json(contents[SIGNATURE_NAME])
    except ValidationError as exc:
        raise PackageError(
            f"{path}: malformed {SIGNATURE_NAME} ({exc.errors()[0]['msg']})"
        ) from None
    trusted = trusted_public_keys(keys_dir)
    if sig.key_id in revoked_ids(keys_dir):
        raise PackageError(f"{path}: signed by revoked key {sig.key_id}; refused")
    pub = trusted.get(sig.key_id)
    if pub is None:
        raise PackageError(
            f"{path}: signed by key {sig.key_id}, which is not among the trusted keys in "
            f"{keys_dir}; refused"
        )
    assert isinstance(pub, Ed25519PublicKey)
    try:
        pub.verify(bytes.fromhex(sig.signature), raw_manifest)
    except InvalidSignature:
        raise PackageError(
            f"{path}: signature does not match {MANIFEST_NAME} (altered or forged); refused"
        ) from None
    try:
        manifest = PackageManifest.model_validate_json(raw_manifest)
    except ValidationError as exc:
        raise PackageError(f"{path}: invalid {MANIFEST_NAME} ({exc.errors()[0]['msg']})") from None
    if manifest.schema_name != SCHEMA_NAME or manifest.schema_version != SCHEMA_VERSION:
        raise PackageError(
            f"{path}: unknown package schema {manifest.schema_name!r} v{manifest.schema_version}"
        )
    if manifest.canonical_bytes() != raw_manifest:
        raise PackageError(f"{path}: {MANIFEST_NAME} is not in canonical form")
    for name in manifest.members:
        _check_name(name)
    for name in REQUIRED_MEMBERS:
        if name not in manifest.members:
            raise PackageError(f"{path}: manifest lacks required member {name!r}")
    targets = [n for n in TARGET_MEMBERS if n in manifest.members]
    if len(targets) != 1:
        raise PackageError(
            f"{path}: manifest must hold exactly one of {' and '.join(TARGET_MEMBERS)} "
            f"(has {len(targets)})"
        )
    for name, info in sorted(manifest.members.items()):
        data = contents.get(name)
        if data is None:
            raise PackageError(f"{path}: member {name!r} listed in the manifest is missing")
        if len(data) != info.size or hashlib.sha256(data).hexdigest() != info.sha256:
            raise PackageError(f"{path}: member {name!r} was altered (size or sha256 differs)")
    extra = sorted(set(contents) - set(manifest.members) - {MANIFEST_NAME, SIGNATURE_NAME})
    if extra:
        raise PackageError(f"{path}: member(s) not in the manifest: {', '.join(extra)}")
    members = {n: contents[n] for n in manifest.members}
    return VerifiedPackage(path, manifest, sig.key_id, members)


def write_members(contents: dict[str, bytes], root: Path) -> None:
    """Write already-checked member bytes below root (names were checked by _check_name)."""
    for name, data in sorted(contents.items()):
        dest = root.joinpath(*PurePosixPath(name).parts)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        dest.write_bytes(data)


def validate_contents(root: Path) -> ExtractedPackage:
    """Load every part with its own loader and check them against each other (calibration
    against the array, limits within the hardware's): the same check at build and at run."""
    from hardware.arrays import load_array
    from hardware.calibration_file import load_calibration
    from hardware.pipeline import StimulationPipeline
    from hardware.safety import SafetyLimits
    from runtime.bundle import load_bundle

    bundle = root / "bundle"
    load_bundle(bundle, verify=True)
    lim = SafetyLimits.load(root / "limits.json")
    cal_path = root / "calibration.json"
    if (root / "implant.json").exists():
        if (root / "array.json").exists():
            raise PackageError("a package holds array.json or implant.json, not both")
        _validate_implant(root / "implant.json", lim, cal_path if cal_path.exists() else None)
        return ExtractedPackage(
            root=root,
            bundle=bundle,
            array=None,
            limits=root / "limits.json",
            calibration=cal_path if cal_path.exists() else None,
            run=_run_config(root),
            key_id="",
            sha256="",
            implant=root / "implant.json",
        )
    arr = load_array(root / "array.json")
    cal = load_calibration(cal_path) if cal_path.exists() else None
    if cal is not None:
        unknown = sorted(set(cal.by_id()) - set(arr.electrode_ids))
        if arr.name not in cal.arrays or unknown:
            raise PackageError(
                f"calibration.json does not fit array {arr.name!r} (calibration arrays "
                f"{list(cal.arrays)}, unknown electrodes {unknown[:5]})"
            )
    StimulationPipeline(arr, cal, lim)  # refuses limits the mapping cannot meet
    run = _run_config(root)
    return ExtractedPackage(
        root=root,
        bundle=bundle,
        array=root / "array.json",
        limits=root / "limits.json",
        calibration=cal_path if cal is not None else None,
        run=run,
        key_id="",
        sha256="",
    )


def _run_config(root: Path) -> RunConfig:
    try:
        return RunConfig.model_validate_json((root / "run.json").read_bytes())
    except ValidationError as exc:
        raise PackageError(f"{root / 'run.json'}: refused ({exc.errors()[0]['msg']})") from None


def _validate_implant(path: Path, limits: object, calibration: Path | None) -> None:
    """The implant loads, its calibration fits it (qualified ids), and its pipeline builds."""
    from hardware.implant import ImplantPipeline, load_implant
    from hardware.implant_calibration import load_implant_calibration
    from hardware.safety import SafetyLimits

    assert isinstance(limits, SafetyLimits)
    imp = load_implant(path)
    cals = (
        load_implant_calibration(calibration, imp, limits.max_amplitude_ua)
        if calibration is not None
        else {}
    )
    ImplantPipeline(imp, limits, calibrations=cals)


def extract_package(path: Path, keys_dir: Path | None = None) -> ExtractedPackage:
    """Verify, then extract into a fresh private temp directory and validate the contents.
    The caller owns (and may delete) the returned root."""
    pkg = verify_package(path, keys_dir)
    root = Path(tempfile.mkdtemp(prefix="npe-package-"))  # mode 0700
    write_members(pkg.contents, root)
    ext = validate_contents(root)
    return ExtractedPackage(**{**vars(ext), "key_id": pkg.key_id, "sha256": pkg.sha256})


def tar_bytes(contents: dict[str, bytes]) -> bytes:
    """An uncompressed tar of `contents` (regular files, fixed metadata, sorted)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(contents):
            info = tarfile.TarInfo(name)
            info.size = len(contents[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(contents[name]))
    return buf.getvalue()
