"""One bad file per class through the npe CLI: exit code, one line, traceback (issue 16).

Run from the repository root: PYTHONPATH=. python benchmarks/badfiles/run.py [--json OUT.json]. Prints a table and writes JSON.
Everything is generated in a temporary directory; nothing outside it is written.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from typer.testing import CliRunner

from hardware.arrays import load_array
from npe_cli import app


@dataclass
class Result:
    case: str
    exit_code: int
    one_line: bool
    traceback: bool
    first_line: str


def _cal(array: str, ids: list[str], **over: object) -> bytes:
    el = [
        {
            "electrode_id": i,
            "threshold_ua": 20.0,
            "max_comfortable_ua": 60.0,
            "phosphene_deg": [1.0, 1.0],
            **over,
        }
        for i in ids
    ]
    doc = {"version": 1, "patient_id": "p", "arrays": [array], "electrodes": el}
    return json.dumps(doc).encode()


def cases(tmp: Path) -> dict[str, Callable[[], list[str]]]:
    utah = list(load_array("utah96").electrode_ids[:3])

    def cal_show(data: bytes | None) -> Callable[[], list[str]]:
        def make() -> list[str]:
            p = tmp / f"c{abs(hash(data))}.json"
            if data is None:
                p.mkdir(exist_ok=True)
            else:
                p.write_bytes(data)
            return [
                "calibrate",
                "show",
                str(p),
                "--png",
                str(tmp / "m.png"),
                "--json-out",
                str(tmp / "s.json"),
            ]

        return make

    def lim(data: bytes) -> Callable[[], list[str]]:
        def make() -> list[str]:
            p = tmp / "limits.json"
            p.write_bytes(data)
            return [
                "run",
                "--limits",
                str(p),
                "--duration",
                "1",
                "--source",
                "synthetic:noise",
                "--log",
                str(tmp / "a.log"),
            ]

        return make

    return {
        "calibration: nested 100k deep": cal_show(b"[" * 100_000 + b"]" * 100_000),
        "calibration: not UTF-8": cal_show(b"\xff\xfe{}"),
        "calibration: directory": cal_show(None),
        "calibration: phosphene NaN": cal_show(
            _cal("utah96", utah, phosphene_deg=["NaN"]).replace(b'"NaN"', b"NaN")
        ),
        'calibration: enabled "no"': cal_show(_cal("utah96", utah, enabled="no")),
        "limits: nested 100k deep": lim(b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        for name, make in cases(Path(d)).items():
            r = CliRunner().invoke(app, make())
            text = r.output.strip()
            tb = "Traceback" in text or (
                r.exception is not None and not isinstance(r.exception, SystemExit)
            )
            results.append(
                Result(
                    name,
                    r.exit_code,
                    len(text.splitlines()) <= 1 and bool(text),
                    tb,
                    " ".join(text.split())[:100],
                )
            )
    print(f"{'class':34} {'exit':>4} {'one line':>8} {'traceback':>9}")
    for x in results:
        print(f"{x.case:34} {x.exit_code:>4} {x.one_line!s:>8} {x.traceback!s:>9}")
    out = json.dumps([asdict(x) for x in results], indent=2)
    if args.json:
        args.json.write_text(out)
    print(out)


if __name__ == "__main__":
    main()
