"""The bad-files benchmark's mechanism on a few of its cases (the full run is the benchmark's
business): each case is a real `npe` subprocess, the verdict columns add up, JSON is written."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "badfiles" / "run.py"


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("badfiles_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # pydantic resolves its annotations there
    spec.loader.exec_module(mod)
    return mod


def test_badfiles_benchmark_runs_its_cases_through_the_cli(tmp_path: Path) -> None:
    bench = _load()
    out = tmp_path / "results.json"
    only = ["audit log (log inspect): a flipped byte", "manifest (inspect): deep list",
            "calibration (run): made for orion60"]  # fmt: skip
    argv = ["--skip-timing", "--out", str(out)]
    for o in only:
        argv += ["--only", o]
    code = bench.main(argv)
    rep = json.loads(out.read_text())
    assert rep["cases"] == 3
    by_name = {r["name"]: r for r in rep["results"]}
    assert by_name[only[0]]["expected_exit"] == 1  # a damaged log is a verdict, not bad usage
    for r in rep["results"]:
        assert r["exit_code"] == r["expected_exit"] and r["one_line"] and not r["traceback"], r
        assert not r["changed_on_disk"], r
        if r["expected_exit"] == 2:
            assert r["first_line"].startswith("error: "), r
    assert code == 0 and rep["met"]
