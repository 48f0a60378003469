"""Every bad-file class of issue 16 through the real `npe` command line, one subprocess per case.

    PYTHONPATH=. python benchmarks/badfiles/run.py [--only SUBSTRING] [--skip-timing]
                                                  [--out benchmarks/badfiles/results.json]

Each case builds one bad input (a variant of a class the issue names: JSON nested 100,000
deep, not UTF-8, a directory, NaN, wrong types, huge declared sizes, wrong or foreign
calibrations, truncated or random HDF5 and ONNX, bad key and configuration files, …) inside a
temporary directory, runs `python -m npe_cli ARGS` on it with HOME pointed into that
directory, and records:

- traceback: "Traceback (most recent call last)" anywhere in stdout or stderr;
- wrong exit: an exit code other than the one documented for it (2: bad input refused;
  1 for a check command's negative verdict on a readable-but-damaged file, `npe log inspect`);
- not one line: stderr is not exactly one line starting with ``error:`` (warnings aside; a
  blank line above or below it counts as a line), or something was printed on stdout (a
  check command's verdict table aside);
- silently accepted: exit code 0;
- changed on disk: any file created, removed or altered anywhere in the temporary directory
  (the bad file itself, the output paths the command was given, HOME).

Then it times `npe inspect` on a bundle whose manifest is 60 MB, and `npe log inspect` on 1, 2
and 4 MB of damaged audit-log data (the time per MB must stay flat: linear). Prints a table
and writes JSON (pydantic models). Target: 0 in every column.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEEP = 100_000


class CaseResult(BaseModel):
    name: str
    klass: str
    command: str
    exit_code: int
    expected_exit: int
    traceback: bool
    one_line: bool
    silently_accepted: bool
    changed_on_disk: list[str]
    first_line: str
    seconds: float


class ClassSummary(BaseModel):
    klass: str
    cases: int
    tracebacks: int
    wrong_exit: int
    not_one_line: int
    silently_accepted: int
    changed_on_disk: int


class Timing(BaseModel):
    what: str
    size_mb: float
    seconds: float
    exit_code: int


class BadfilesReport(BaseModel):
    cases: int
    tracebacks: int
    wrong_exit: int
    not_one_line: int
    silently_accepted: int
    changed_on_disk: int
    by_class: list[ClassSummary]
    results: list[CaseResult]
    timings: list[Timing]
    log_inspect_seconds_per_mb_ratio_4_to_1: float | None
    met: bool


@dataclass
class Case:
    name: str
    klass: str
    argv: Callable[[], list[str]]  # builds the bad input, returns the npe arguments
    expected_exit: int = 2
    #: A check command's negative verdict (exit 1): it reports the damage as its table and
    #: writes its report to the output path it was given (under out/); no one-line rule.
    verdict: bool = False


# --- fixtures (all inside the temporary directory) ---------------------------------------


@dataclass
class Fixtures:
    tmp: Path
    bundle: Path
    checkpoint: Path
    recording: Path
    calibration: dict[str, object]
    orion_ids: list[str]
    limits: dict[str, object]
    audit_log: Path
    package: Path
    keys: Path
    counter: list[int]

    def new(self, name: str) -> Path:
        """A fresh path for one case's input."""
        self.counter[0] += 1
        d = self.tmp / "cases" / f"{self.counter[0]:03d}"
        d.mkdir(parents=True)
        return d / name


def _calibration(ids: list[str], array: str = "utah96", **over: object) -> dict[str, object]:
    electrodes = [
        {
            "electrode_id": i,
            "threshold_ua": 20.0,
            "max_comfortable_ua": 60.0,
            "phosphene_deg": [1.0 + k * 0.1, -1.0],
            **over,
        }
        for k, i in enumerate(ids)
    ]
    return {"version": 1, "patient_id": "p01", "arrays": [array], "electrodes": electrodes}


def build_fixtures(tmp: Path) -> Fixtures:
    from encoder.recording import write_recording
    from encoder.synthetic.config import SimulationConfig
    from encoder.synthetic.simulate import simulate
    from export.deploy import build_package
    from hardware.arrays import load_array
    from hardware.audit import AuditLog
    from hardware.safety import SafetyLimits
    from hardware.types import StimulationFrame
    from runtime.package import RunConfig, generate_keypair

    (tmp / "home").mkdir()
    bundle = tmp / "bundle"
    shutil.copytree(ROOT / "runtime" / "default_bundle", bundle)
    checkpoint = tmp / "checkpoint"
    shutil.copytree(ROOT / "export" / "default_checkpoint", checkpoint)
    cfg = SimulationConfig(
        stimulus="natural", duration_scale=0.005, height=16, width=16, seed=7,
        n_repeats=3, repeat_seconds=2.0,
    )  # fmt: skip
    recording = write_recording(simulate(cfg).recording, tmp / "rec.h5")
    utah = load_array("utah96")
    limits = SafetyLimits()
    log = AuditLog(tmp / "good.log", utah, limits, note="badfiles fixture")
    amp = np.zeros(utah.n, np.float32)
    amp[:3] = 20.0
    for k in range(200):
        log.frame(
            StimulationFrame(
                sequence=k, timestamp_ns=k, electrode_ids=utah.electrode_ids, amplitude_ua=amp,
                phase_width_us=np.full(utah.n, 170.0, np.float32),
                interphase_gap_us=np.full(utah.n, 50.0, np.float32),
                pulse_rate_hz=np.full(utah.n, 300.0, np.float32),
                n_pulses=np.full(utah.n, 3, np.uint16),
            )
        )  # fmt: skip
    log.close()
    keys = tmp / "keys"
    kid = generate_keypair(keys)
    package = tmp / "good.npepkg"
    build_package(bundle, "utah96", None, None, keys / f"{kid}.key", package, RunConfig())
    return Fixtures(
        tmp=tmp,
        bundle=bundle,
        checkpoint=checkpoint,
        recording=recording,
        calibration=_calibration(list(utah.electrode_ids[:4])),
        orion_ids=list(load_array("orion60").electrode_ids[:4]),
        limits=json.loads(limits.model_dump_json()),
        audit_log=tmp / "good.log",
        package=package,
        keys=keys,
        counter=[0],
    )


# --- generic bad contents ----------------------------------------------------------------

DEEP_LIST = b"[" * DEEP + b"]" * DEEP
DEEP_OBJ = b'{"a":' * DEEP + b"1" + b"}" * DEEP
NOT_UTF8 = b'{"version": 1, "patient_id": "\xff\xfe"}'


def _json_variants(valid: dict[str, object]) -> dict[str, tuple[str, bytes | None]]:
    """class -> (variant name, bytes; None = a directory) for any JSON loader."""
    text = json.dumps(valid)
    long_string = dict(valid, patient_id="x" * 2_000_000)
    return {
        "deep list": ("JSON nested 100,000 deep", DEEP_LIST),
        "deep object": ("JSON nested 100,000 deep", DEEP_OBJ),
        "not UTF-8": ("not UTF-8", NOT_UTF8),
        "UTF-16": ("not UTF-8", text.encode("utf-16")),
        "directory": ("directory for a file", None),
        "truncated": ("truncated / garbage", text[: len(text) // 2].encode()),
        "random bytes": ("truncated / garbage", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8))),
        "empty": ("truncated / garbage", b""),
        "a list, not an object": ("wrong types", b"[1, 2, 3]"),
        "NaN literal": ("NaN / Infinity", text.replace("1", "NaN", 1).encode()),
        "huge number": ("NaN / Infinity", text.replace("1", "1e999", 1).encode()),
        "duplicate key": ("wrong types", text.replace("{", '{"version": 1, ', 1).encode()),
        "2 MB string": ("long strings", json.dumps(long_string).encode()),
        "20 MB file": ("oversize", b" " * (20 << 20) + text.encode()),
    }  # fmt: skip


def _put(path: Path, data: bytes | None) -> Path:
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    return path


def cases(fx: Fixtures) -> list[Case]:
    out: list[Case] = []
    tmp = fx.tmp

    def run_args(*extra: str) -> list[str]:
        return [
            "run", "--duration", "1", "--source", "synthetic:noise", "--as-fast-as-possible",
            "--log", str(tmp / "out" / "run.log"), "--summary-json", str(tmp / "out" / "s.json"),
            *extra,
        ]  # fmt: skip

    def show_args(p: Path) -> list[str]:
        return ["calibrate", "show", str(p), "--png", str(tmp / "out" / "m.png"),
                "--json-out", str(tmp / "out" / "s.json")]  # fmt: skip

    # JSON loaders, every generic variant.
    json_loaders: dict[str, tuple[dict[str, object], Callable[[Path], list[str]]]] = {
        "calibration (calibrate show)": (fx.calibration, show_args),
        "calibration (run)": (fx.calibration, lambda p: run_args("--calibration", str(p))),
        "limits (run)": (fx.limits, lambda p: run_args("--limits", str(p))),
        "limits (stimulator serve)": (
            fx.limits,
            lambda p: [
                "stimulator",
                "serve",
                "--port",
                "0",
                "--duration",
                "1",
                "--limits",
                str(p),
                "--key-file",
                str(tmp / "home" / "k.key"),
            ],
        ),
        "array (run)": ({"name": "x", "electrodes": []}, lambda p: run_args("--array", str(p))),
    }
    for loader, (valid, make_args) in json_loaders.items():
        for variant, (klass, data) in _json_variants(valid).items():

            def make(data: bytes | None = data, make_args=make_args) -> list[str]:  # type: ignore[no-untyped-def]
                return list(make_args(_put(fx.new("file.json"), data)))

            out.append(Case(f"{loader}: {variant}", klass, make))

    # Manifests: the bad manifest inside an otherwise valid bundle copy.
    for variant, (klass, data) in _json_variants({"schema": "npe.bundle"}).items():

        def make_manifest(data: bytes | None = data) -> list[str]:
            b = fx.new("bundle")
            shutil.copytree(fx.bundle, b)
            (b / "manifest.json").unlink()
            _put(b / "manifest.json", data)
            return ["inspect", str(b)]

        out.append(Case(f"manifest (inspect): {variant}", klass, make_manifest))
        if klass in ("JSON nested 100,000 deep", "not UTF-8", "directory for a file"):

            def make_manifest_run(data: bytes | None = data) -> list[str]:
                b = fx.new("bundle")
                shutil.copytree(fx.bundle, b)
                (b / "manifest.json").unlink()
                _put(b / "manifest.json", data)
                return run_args("--bundle", str(b))

            out.append(Case(f"manifest (run): {variant}", klass, make_manifest_run))

    # Wrong calibrations (valid JSON, valid schema, wrong for what they drive).
    utah_ids = [str(e["electrode_id"]) for e in fx.calibration["electrodes"]]  # type: ignore[union-attr, index]
    wrong: dict[str, tuple[str, dict[str, object], list[str]]] = {
        "phosphene [NaN, NaN]": ("NaN / Infinity", _calibration(utah_ids), ["nan"]),
        "phosphene [Infinity, 0]": ("NaN / Infinity", _calibration(utah_ids), ["inf"]),
        "all ids unknown": ("wrong calibration", _calibration(["zz1", "zz2"]), []),
        "one extra unknown id": ("wrong calibration", _calibration([*utah_ids, "zz9"]), []),
        "empty electrode list": ("wrong calibration", _calibration([]), []),
        "made for orion60": ("wrong calibration", _calibration(fx.orion_ids, "orion60"), []),
        "orion60 ids labelled utah96": ("wrong calibration", _calibration(fx.orion_ids), []),
        'enabled "no"': ("wrong types", _calibration(utah_ids, enabled="no"), []),
        "enabled 0": ("wrong types", _calibration(utah_ids, enabled=0), []),
        'threshold "20"': ("wrong types", _calibration(utah_ids, threshold_ua="20"), []),
        "threshold above the safety maximum": (
            "above the safety maximum", _calibration(utah_ids, threshold_ua=150.0, max_comfortable_ua=160.0), [],
        ),
        "max comfortable above the safety maximum": (
            "above the safety maximum", _calibration(utah_ids, max_comfortable_ua=150.0), [],
        ),
        "max comfortable above these limits (50 µA)": (
            "above the safety maximum", _calibration(utah_ids, max_comfortable_ua=80.0), ["limits50"],
        ),
        "unknown field": ("wrong types", _calibration(utah_ids, colour="blue"), []),
    }  # fmt: skip
    for variant, (klass, doc, tags) in wrong.items():
        text = json.dumps(doc)
        if "nan" in tags:
            text = text.replace("[1.0, -1.0]", "[NaN, NaN]")
        if "inf" in tags:
            text = text.replace("[1.0, -1.0]", "[Infinity, 0]")
        limits50 = "limits50" in tags

        def make_run(text: str = text, limits50: bool = limits50) -> list[str]:
            p = fx.new("cal.json")
            p.write_text(text)
            extra = ["--calibration", str(p)]
            if limits50:
                lp = p.with_name("limits.json")
                lp.write_text(json.dumps(dict(fx.limits, max_amplitude_ua=50.0)))
                extra += ["--limits", str(lp)]
            return run_args(*extra)

        out.append(Case(f"calibration (run): {variant}", klass, make_run))
        if not limits50 and "orion60 ids" not in variant:

            def make_show(text: str = text) -> list[str]:
                p = fx.new("cal.json")
                p.write_text(text)
                return show_args(p)

            # `calibrate show` has no array to check against unless the file names one:
            # only the file's own consistency (NaN, types, schema, emptiness) is its business.
            # The same holds for currents above a safety maximum: show has no limits file
            # (`npe run` and `npe deploy build` check them against theirs).
            if (
                klass not in ("wrong calibration", "above the safety maximum")
                or variant == "empty electrode list"
            ):
                out.append(Case(f"calibration (calibrate show): {variant}", klass, make_show))

    # Recordings (HDF5).
    def recording_variant(edit: Callable[[Path], None]) -> Callable[[], Path]:
        def make() -> Path:
            p = fx.new("rec.h5")
            shutil.copy(fx.recording, p)
            edit(p)
            return p

        return make

    def attrs(**kv: object) -> Callable[[Path], None]:
        def edit(p: Path) -> None:
            with h5py.File(p, "r+") as f:
                for k, v in kv.items():
                    f.attrs[k] = v

        return edit

    def replace_ds(name: str, **kw: object) -> Callable[[Path], None]:
        def edit(p: Path) -> None:
            with h5py.File(p, "r+") as f:
                del f[name]
                f.create_dataset(name, **kw)  # type: ignore[arg-type]

        return edit

    def raw(data: bytes | Callable[[bytes], bytes]) -> Callable[[Path], None]:
        def edit(p: Path) -> None:
            p.write_bytes(data(p.read_bytes()) if callable(data) else data)

        return edit

    def nonutf8_ids(p: Path) -> None:
        with h5py.File(p, "r+") as f:
            n = f["cells/id"].shape[0]
            del f["cells/id"]
            f.create_dataset("cells/id", data=np.array([b"\xff\xfe"] * n, dtype="S2"))

    rec_cases: dict[str, tuple[str, Callable[[Path], None] | None]] = {
        'frame_rate_hz "100"': ("recording attributes", attrs(frame_rate_hz="100")),
        "frame_rate_hz NaN": ("recording attributes", attrs(frame_rate_hz=float("nan"))),
        "frame_rate_hz -1": ("recording attributes", attrs(frame_rate_hz=-1.0)),
        "frame_rate_hz an array": ("recording attributes", attrs(frame_rate_hz=np.array([1.0, 2.0]))),
        'version "1"': ("recording attributes", attrs(version="one")),
        "format an array": ("recording attributes", attrs(format=np.array([1, 2]))),
        "52 GB stimulus declared": (
            "huge declared sizes",
            replace_ds("stimulus", shape=(200_000, 512, 512), dtype=np.uint8, chunks=(1, 64, 64)),
        ),
        "10^12 responses declared": (
            "huge declared sizes",
            replace_ds("responses", shape=(10**9, 1000), dtype=np.uint16, chunks=(1024, 16)),
        ),
        "stimulus float64 NaN": (
            "HDF5 wrong dtypes",
            replace_ds("stimulus", data=np.full((4, 16, 16), np.nan)),
        ),
        "responses a string dataset": (
            "HDF5 wrong dtypes", replace_ds("responses", data=np.array([b"a", b"b"])),
        ),
        "cell ids not UTF-8": ("HDF5 wrong dtypes", nonutf8_ids),
        "not HDF5 (random bytes)": (
            "truncated / garbage", raw(bytes(np.random.default_rng(2).integers(0, 256, 8192, dtype=np.uint8))),
        ),
        "truncated to half": ("truncated / garbage", raw(lambda b: b[: len(b) // 2])),
        "truncated to 1 kB": ("truncated / garbage", raw(lambda b: b[:1024])),
        "empty file": ("truncated / garbage", raw(b"")),
        "a JSON file": ("truncated / garbage", raw(b'{"format": "npe.recording"}')),
        "directory": ("directory for a file", None),
    }  # fmt: skip
    rec_cmds: dict[str, Callable[[Path], list[str]]] = {
        "dataset validate": lambda p: ["dataset", "validate", str(p)],
        "train": lambda p: ["train", "--data", str(p), "--model", "ln", "--out",
                            str(tmp / "out" / "train"), "--max-epochs", "1"],
        "evaluate": lambda p: ["evaluate", str(fx.checkpoint), "--data", str(p), "--json",
                               str(tmp / "out" / "e.json"), "--no-figures"],
    }  # fmt: skip
    for variant, (klass, edit) in rec_cases.items():
        for cmd, make_args in rec_cmds.items():
            if (
                cmd != "dataset validate"
                and klass in ("truncated / garbage",)
                and "half" not in variant
            ):
                continue  # one garbage variant each for train/evaluate is enough

            def make_rec(edit=edit, make_args=make_args) -> list[str]:  # type: ignore[no-untyped-def]
                if edit is None:
                    p = fx.new("rec.h5")
                    p.mkdir()
                else:
                    p = recording_variant(edit)()
                return list(make_args(p))

            out.append(Case(f"recording ({cmd}): {variant}", klass, make_rec))

    # ONNX models inside a bundle whose manifest is re-hashed (so the model itself is reached).
    def bundle_with(model_bytes: Callable[[bytes], bytes]) -> Path:
        from runtime.bundle import BundleManifest

        b = fx.new("bundle")
        shutil.copytree(fx.bundle, b)
        man = json.loads((b / "manifest.json").read_text())
        for name in list(man["files"]):
            if name.endswith(".onnx"):
                path = b / name
                path.write_bytes(model_bytes(path.read_bytes()))
                man["files"][name] = hashlib.sha256(path.read_bytes()).hexdigest()
        m = BundleManifest.model_validate(man)
        man["manifest_sha256"] = m.content_sha256()
        (b / "manifest.json").write_text(json.dumps(man))
        return b

    def wrong_input_shape(data: bytes) -> bytes:
        import onnx

        model = onnx.load_from_string(data)
        for inp in model.graph.input:
            dims = inp.type.tensor_type.shape.dim
            if len(dims) >= 2:
                dims[-1].dim_value = dims[-1].dim_value + 3
        return model.SerializeToString()

    onnx_cases: dict[str, Callable[[bytes], bytes]] = {
        "truncated ONNX": lambda d: d[: len(d) // 3],
        "random-bytes ONNX": lambda d: bytes(np.random.default_rng(3).integers(0, 256, len(d), dtype=np.uint8)),
        "empty ONNX": lambda d: b"",
        "wrong input shape": wrong_input_shape,
    }  # fmt: skip
    for variant, edit_model in onnx_cases.items():
        for cmd in ("inspect", "run"):

            def make_onnx(edit_model=edit_model, cmd=cmd) -> list[str]:  # type: ignore[no-untyped-def]
                b = bundle_with(edit_model)
                return ["inspect", str(b)] if cmd == "inspect" else run_args("--bundle", str(b))

            out.append(
                Case(f"ONNX ({cmd}): {variant}", "ONNX truncated / garbage / shape", make_onnx)
            )

    def onnx_dir() -> list[str]:
        b = fx.new("bundle")
        shutil.copytree(fx.bundle, b)
        (b / "model.onnx").unlink()
        (b / "model.onnx").mkdir()
        return ["inspect", str(b)]

    out.append(Case("ONNX (inspect): model.onnx a directory", "directory for a file", onnx_dir))

    def resealed() -> list[str]:
        from runtime.bundle import bundle_digest

        digest = bundle_digest(fx.bundle)
        b = fx.new("bundle")
        shutil.copytree(fx.bundle, b)
        man = json.loads((b / "manifest.json").read_text())
        man["output"]["polarity"] = [-x for x in man["output"]["polarity"]]
        from runtime.bundle import BundleManifest

        man["manifest_sha256"] = BundleManifest.model_validate(man).content_sha256()
        (b / "manifest.json").write_text(json.dumps(man))
        return ["inspect", str(b), "--expect-digest", digest]

    out.append(
        Case("manifest (inspect --expect-digest): edited and re-sealed", "manifest edits", resealed)
    )

    # Audit logs (log inspect): unreadable -> 2, readable but damaged -> 1 (its verdict).
    good_log = fx.audit_log.read_bytes()
    rng = np.random.default_rng(4)
    log_cases: dict[str, tuple[str, bytes | None, int]] = {
        "directory": ("directory for a file", None, 2),
        "random bytes 64 kB": ("truncated / garbage", bytes(rng.integers(0, 256, 65536, dtype=np.uint8)), 2),
        "empty file": ("truncated / garbage", b"", 2),
        "7 bytes cut from the middle": ("damaged audit log", good_log[: len(good_log) // 2] + good_log[len(good_log) // 2 + 7 :], 1),
        "a flipped byte": ("damaged audit log", good_log[:5000] + bytes([good_log[5000] ^ 0xFF]) + good_log[5001:], 1),
        "random 64 kB in the middle": ("damaged audit log", good_log[: len(good_log) // 2] + bytes(rng.integers(0, 256, 65536, dtype=np.uint8)) + good_log[len(good_log) // 2 :], 1),
    }  # fmt: skip
    for variant, (klass, data, code) in log_cases.items():

        def make_log(data: bytes | None = data) -> list[str]:
            p = _put(fx.new("a.log"), data)
            return ["log", "inspect", str(p), "--json-out", str(tmp / "out" / "r.json")]

        out.append(
            Case(f"audit log (log inspect): {variant}", klass, make_log, code, verdict=code == 1)
        )

    # Device key files (stimulator serve --key-file, run --key-file).
    def key_case(
        data: bytes | None, mode: int = 0o600, fifo: bool = False
    ) -> Callable[[], list[str]]:
        def make() -> list[str]:
            p = fx.new("device.key")
            if fifo:
                os.mkfifo(p, 0o600)
            else:
                _put(p, data)
                if data is not None:
                    p.chmod(mode)
            return ["stimulator", "serve", "--port", "0", "--duration", "1", "--key-file", str(p),
                    "--state-dir", str(tmp / "home" / "state")]  # fmt: skip

        return make

    out += [
        Case("key file (stimulator serve): directory", "directory for a file", key_case(None)),
        Case("key file (stimulator serve): 31 bytes", "bad key files", key_case(b"k" * 31)),
        Case("key file (stimulator serve): empty", "bad key files", key_case(b"")),
        Case("key file (stimulator serve): 20 MB", "oversize", key_case(b"k" * (20 << 20))),
        Case(
            "key file (stimulator serve): world-readable",
            "bad key files",
            key_case(b"k" * 32, 0o644),
        ),
        Case("key file (stimulator serve): a FIFO", "bad key files", key_case(None, fifo=True)),
    ]

    def run_key(data: bytes | None) -> Callable[[], list[str]]:
        def make() -> list[str]:
            p = _put(fx.new("device.key"), data)
            if data is not None:
                p.chmod(0o600)
            return run_args("--link", "udp://127.0.0.1:9", "--key-file", str(p))

        return make

    out += [
        Case("key file (run --link): directory", "directory for a file", run_key(None)),
        Case("key file (run --link): 33 bytes", "bad key files", run_key(b"k" * 33)),
    ]

    # Configuration files (--config TOML) for run, train and bench.
    toml_cases: dict[str, tuple[str, bytes | None]] = {
        "deep array": ("JSON nested 100,000 deep", b"duration = " + b"[" * DEEP + b"]" * DEEP + b"\n"),
        "deep inline table": ("JSON nested 100,000 deep", b"duration = " + b"{a=" * DEEP + b"1" + b"}" * DEEP + b"\n"),
        "not UTF-8": ("not UTF-8", b'source = "\xff\xfe"\n'),
        "directory": ("directory for a file", None),
        "not TOML": ("truncated / garbage", b"duration = = 1\n"),
        "unknown key": ("wrong types", b"colour = 1\n"),
        'duration "10"': ("wrong types", b'duration = "10"\n'),
        'preview "no"': ("wrong types", b'preview = "no"\n'),
        "duration true": ("wrong types", b"duration = true\n"),
        "calibration 5": ("wrong types", b"calibration = 5\n"),
        "duration nan": ("NaN / Infinity", b"duration = nan\n"),
        "duration inf": ("NaN / Infinity", b"duration = inf\n"),
        "duration an array": ("wrong types", b"duration = [1, 2]\n"),
        "2 MB file": ("oversize", b"# " + b"x" * (2 << 20) + b"\n"),
        "100 kB string": ("long strings", b'source = "' + b"x" * 100_000 + b'"\n'),
    }  # fmt: skip
    for variant, (klass, data) in toml_cases.items():

        def make_run_cfg(data: bytes | None = data) -> list[str]:
            p = _put(fx.new("npe-config.toml"), data)
            return run_args("--config", str(p))

        out.append(Case(f"config (run --config): {variant}", klass, make_run_cfg))
    for variant in ("deep array", "not UTF-8", "directory", "unknown key"):
        klass, data = toml_cases[variant]

        def make_train_cfg(data: bytes | None = data) -> list[str]:
            p = _put(fx.new("npe-config.toml"), data)
            return ["train", "--config", str(p), "--data", str(fx.recording), "--model", "ln",
                    "--out", str(tmp / "out" / "train")]  # fmt: skip

        out.append(Case(f"config (train --config): {variant}", klass, make_train_cfg))

    def train_bad_max_epochs() -> list[str]:
        p = fx.new("npe-config.toml")
        p.write_bytes(b'max-epochs = "3"\n')
        return ["train", "--config", str(p), "--data", str(fx.recording), "--model", "ln",
                "--out", str(tmp / "out" / "train")]  # fmt: skip

    out.append(Case('config (train --config): max-epochs "3"', "wrong types", train_bad_max_epochs))

    # Calibration session files (calibrate save SESSION).
    header = {
        "kind": "header", "procedure": "threshold", "patient_id": "p01", "array": "utah96",
        "electrodes": utah_ids[:1], "calibration_path": str(tmp / "out" / "cal.json"),
        "link": "inprocess", "started": "2026-12-02T10:00:00+00:00",
    }  # fmt: skip
    trial = {
        "kind": "trial", "index": 0, "electrode": utah_ids[0], "sequence": 1,
        "requested_ua": 20.0, "delivered_ua": 20.0, "response": 1.0,
        "time": "2026-12-02T10:00:01+00:00",
    }  # fmt: skip
    hline = json.dumps(header).encode() + b"\n"
    session_cases: dict[str, tuple[str, bytes | None]] = {
        "deep line": ("JSON nested 100,000 deep", hline + DEEP_LIST + b"\n"),
        "not UTF-8": ("not UTF-8", hline + b'{"kind": "\xff"}\n'),
        "directory": ("directory for a file", None),
        "a list line": ("wrong types", hline + b"[1, 2]\n"),
        "delivered NaN": ("NaN / Infinity", hline + json.dumps(trial).replace("20.0,", "NaN,", 1).encode() + b"\n"),
        "delivered \"20\"": ("wrong types", hline + json.dumps(dict(trial, delivered_ua="lots")).encode() + b"\n"),
        "random bytes": ("truncated / garbage", bytes(rng.integers(0, 256, 4096, dtype=np.uint8)) + b"\n"),
        "70 MB": ("oversize", hline + b" " * (70 << 20) + b"\n"),
    }  # fmt: skip
    for variant, (klass, data) in session_cases.items():

        def make_session(data: bytes | None = data) -> list[str]:
            p = _put(fx.new("session.jsonl"), data)
            return ["calibrate", "save", str(p)]

        out.append(Case(f"session (calibrate save): {variant}", klass, make_session))

    # Deployment packages (deploy verify).
    good_pkg = fx.package.read_bytes()
    pkg_cases: dict[str, tuple[str, bytes | None]] = {
        "directory": ("directory for a file", None),
        "truncated": ("truncated / garbage", good_pkg[: len(good_pkg) // 2]),
        "random bytes": ("truncated / garbage", bytes(rng.integers(0, 256, 20000, dtype=np.uint8))),
        "empty": ("truncated / garbage", b""),
        "a flipped byte in the bundle": ("manifest edits", good_pkg[:6000] + bytes([good_pkg[6000] ^ 1]) + good_pkg[6001:]),
    }  # fmt: skip
    for variant, (klass, data) in pkg_cases.items():

        def make_pkg(data: bytes | None = data) -> list[str]:
            p = _put(fx.new("p.npepkg"), data)
            return ["deploy", "verify", str(p), "--keys", str(fx.keys)]

        out.append(Case(f"package (deploy verify): {variant}", klass, make_pkg))

    def revoked_deep() -> list[str]:
        k = fx.new("keys")
        shutil.copytree(fx.keys, k)
        (k / "revoked.json").write_bytes(DEEP_OBJ)
        return ["deploy", "verify", str(fx.package), "--keys", str(k)]

    def pub_dir() -> list[str]:
        k = fx.new("keys")
        shutil.copytree(fx.keys, k)
        (k / "extra.pub").mkdir()
        return ["deploy", "verify", str(fx.package), "--keys", str(k)]

    out += [
        Case("revocation list (deploy verify): deep", "JSON nested 100,000 deep", revoked_deep),
        Case("trusted key (deploy verify): a .pub directory", "directory for a file", pub_dir),
    ]
    return out


# --- running -----------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its kind, size, mtime and mode (a change in any is seen)."""
    snap: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "d" if stat.S_ISDIR(st.st_mode) else "f"
            size = 0 if kind == "d" else st.st_size
            snap[str(p.relative_to(root))] = f"{kind}:{size}:{st.st_mtime_ns}:{st.st_mode:o}"
    return snap


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPE_")}
    env.update(
        HOME=str(tmp / "home"),
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
        NPE_STATE_DIR=str(tmp / "home" / "state"),
        NPE_TRUSTED_KEYS=str(tmp / "keys"),
        NPE_PROSTHESIS_MODE="0",
    )
    return env


def run_case(case: Case, fx: Fixtures, timeout_s: float = 180.0) -> CaseResult:
    try:
        argv = case.argv()
    except Exception as exc:  # a benchmark bug: report it as a failed case, keep going
        return CaseResult(
            name=case.name, klass=case.klass, command="(case not built)", exit_code=-1,
            expected_exit=case.expected_exit, traceback=True, one_line=False,
            silently_accepted=False, changed_on_disk=[], first_line=f"case build failed: {exc!r}",
            seconds=0.0,
        )  # fmt: skip
    (fx.tmp / "out").mkdir(exist_ok=True)
    before = _snapshot(fx.tmp)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "npe_cli", *argv],
            cwd=fx.tmp, env=_env(fx.tmp), capture_output=True, text=True,
            errors="replace", timeout=timeout_s,
        )  # fmt: skip
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = -9
        stdout = (
            (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        )
        stderr = "timeout"
    seconds = time.perf_counter() - t0
    after = _snapshot(fx.tmp)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if case.verdict:  # its report, where it was told to write it
        changed = [k for k in changed if k != "out" and not k.startswith("out/")]
    # Blank lines count: "one line" means nothing above or below it (warnings aside).
    lines = [ln for ln in stderr.splitlines() if not ln.startswith("warning:")]
    tb = "Traceback (most recent call last)" in stdout + stderr
    # ... and stdout stays empty: a refusal prints nothing else (no progress bar, no header).
    one = len(lines) == 1 and lines[0].startswith("error: ") and not stdout.strip()
    if case.verdict:  # the verdict is the table on stdout
        one = not lines or (len(lines) == 1 and lines[0].startswith("error: "))
    return CaseResult(
        name=case.name,
        klass=case.klass,
        command=" ".join(a if len(a) < 60 else a[:57] + "..." for a in argv[:3]),
        exit_code=code,
        expected_exit=case.expected_exit,
        traceback=tb,
        one_line=one,
        silently_accepted=code == 0,
        changed_on_disk=changed[:10],
        first_line=(lines[0] if lines else stdout.strip()[:200])[:240],
        seconds=round(seconds, 2),
    )


def _summaries(results: list[CaseResult]) -> list[ClassSummary]:
    out = []
    for klass in sorted({r.klass for r in results}):
        rs = [r for r in results if r.klass == klass]
        out.append(
            ClassSummary(
                klass=klass,
                cases=len(rs),
                tracebacks=sum(r.traceback for r in rs),
                wrong_exit=sum(r.exit_code != r.expected_exit for r in rs),
                not_one_line=sum(not r.one_line for r in rs),
                silently_accepted=sum(r.silently_accepted for r in rs),
                changed_on_disk=sum(bool(r.changed_on_disk) for r in rs),
            )
        )
    return out


def timings(fx: Fixtures) -> list[Timing]:
    """`npe inspect` on a 60 MB manifest; `npe log inspect` on 1, 2, 4 MB of damaged data."""
    out: list[Timing] = []
    b = fx.new("bundle")
    shutil.copytree(fx.bundle, b)
    man = (b / "manifest.json").read_bytes()
    (b / "manifest.json").write_bytes(man[:-1] + b' , "pad": "' + b"x" * (60 << 20) + b'"}')
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "npe_cli", "inspect", str(b)], cwd=fx.tmp,
                       env=_env(fx.tmp), capture_output=True)  # fmt: skip
    out.append(Timing(what="npe inspect, 60 MB manifest", size_mb=60.0,
                      seconds=round(time.perf_counter() - t0, 3), exit_code=p.returncode))  # fmt: skip
    good = fx.audit_log.read_bytes()
    rng = np.random.default_rng(5)
    for mb in (1, 2, 4):
        path = fx.new("damaged.log")
        path.write_bytes(good[:4096] + bytes(rng.integers(0, 256, mb << 20, dtype=np.uint8)))
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "npe_cli", "log", "inspect", str(path), "--json-out",
             str(path.with_suffix(".json"))],
            cwd=fx.tmp, env=_env(fx.tmp), capture_output=True,
        )  # fmt: skip
        out.append(Timing(what=f"npe log inspect, {mb} MB damaged", size_mb=float(mb),
                          seconds=round(time.perf_counter() - t0, 3), exit_code=p.returncode))  # fmt: skip
    return out


def _startup_s(fx: Fixtures) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "npe_cli", "--help"], cwd=fx.tmp, env=_env(fx.tmp),
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only", action="append", default=None,
        help="run only cases whose name contains this (repeatable)",
    )  # fmt: skip
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument(
        "--update", action="store_true",
        help="with --only: replace those cases (and any of the same class and loader that no "
        "longer exist) in the existing --out file, keep the rest and its timings",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args(argv)
    kept_timings: list[Timing] = []
    with tempfile.TemporaryDirectory(prefix="npe-badfiles-") as d:
        fx = build_fixtures(Path(d))
        selected = [
            c for c in cases(fx) if args.only is None or any(o in c.name for o in args.only)
        ]
        results = []
        for k, case in enumerate(selected, 1):
            r = run_case(case, fx)
            bad = (
                r.traceback or r.exit_code != r.expected_exit or not r.one_line or r.changed_on_disk
            )
            print(f"[{k}/{len(selected)}] {'FAIL' if bad else 'ok  '} {case.name}: exit "
                  f"{r.exit_code} {r.first_line[:110]}", file=sys.stderr, flush=True)  # fmt: skip
            if r.changed_on_disk:
                print(f"      changed: {r.changed_on_disk}", file=sys.stderr)
            results.append(r)
        times = [] if args.skip_timing else timings(fx)
        startup = _startup_s(fx) if times else 0.0
    if args.update and args.only and args.out.exists():
        old = BadfilesReport.model_validate_json(args.out.read_text())
        results = [r for r in old.results if not any(o in r.name for o in args.only)] + results
        if not times:
            times = []  # the ratio below is taken from the old report, with its start-up
            kept_timings = old.timings
    by_class = _summaries(results)
    log_t = {t.size_mb: t.seconds - startup for t in times if "log inspect" in t.what}
    ratio = (log_t[4.0] / 4) / (log_t[1.0] / 1) if len(log_t) == 3 and log_t[1.0] > 0 else None
    if args.update and ratio is None and args.out.exists():
        ratio = BadfilesReport.model_validate_json(
            args.out.read_text()
        ).log_inspect_seconds_per_mb_ratio_4_to_1
        times = times or kept_timings
    total = {
        "tracebacks": sum(c.tracebacks for c in by_class),
        "wrong_exit": sum(c.wrong_exit for c in by_class),
        "not_one_line": sum(c.not_one_line for c in by_class),
        "silently_accepted": sum(c.silently_accepted for c in by_class),
        "changed_on_disk": sum(c.changed_on_disk for c in by_class),
    }
    rep = BadfilesReport(
        cases=len(results), by_class=by_class, results=results, timings=times,
        log_inspect_seconds_per_mb_ratio_4_to_1=None if ratio is None else round(ratio, 2),
        met=not any(total.values()), **total,
    )  # fmt: skip
    print(f"{'class':34} {'cases':>5} {'tracebk':>7} {'exit≠':>5} {'!1line':>6} "
          f"{'accept':>6} {'disk':>4}")  # fmt: skip
    for c in by_class:
        print(f"{c.klass:34} {c.cases:5d} {c.tracebacks:7d} {c.wrong_exit:5d} "
              f"{c.not_one_line:6d} {c.silently_accepted:6d} {c.changed_on_disk:4d}")  # fmt: skip
    print(f"{'total':34} {rep.cases:5d} {rep.tracebacks:7d} {rep.wrong_exit:5d} "
          f"{rep.not_one_line:6d} {rep.silently_accepted:6d} {rep.changed_on_disk:4d}")  # fmt: skip
    for t in times:
        print(f"{t.what:40} {t.seconds:7.2f} s (exit {t.exit_code})")
    if times:
        print(
            f"interpreter start-up (subtracted for the ratio): {startup:.2f} s; "
            f"log inspect s/MB at 4 MB ÷ at 1 MB: {rep.log_inspect_seconds_per_mb_ratio_4_to_1}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(rep.model_dump_json(indent=2) + "\n")
    print(f"wrote {args.out}; target 0 everywhere: {'met' if rep.met else 'NOT met'}")
    return 0 if rep.met else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
