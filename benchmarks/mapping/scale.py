"""Mapping + safety scaling benchmark (`python benchmarks/mapping/scale.py`), issue 17.

Per-bin p50/p99 of rates → safe frames for {96, 384, 1,024} electrodes × {2,048, 8,192,
32,768} rates, the general (pre-kernel) path on the same bins, allocations per bin, and the
shipped bundle's model step measured with onnxruntime in the same run for the ratio; then the
model rows: the shipped `streaming`, a larger `streaming` and a `cnn-lstm` step bundle
(export.scale_bundles), each step beside the mapping of its own output, and which fit a 10 ms
bin with margin. The
measuring code is `runtime.bench.scale.run_scale` (torch-free). Prints a table, writes JSON
(default benchmarks/mapping/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from rich.console import Console

from runtime.bench.scale import ELECTRODES, RATES, print_scale, run_scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bins", type=int, default=1000, help="timed bins per cell")
    ap.add_argument("--no-model", action="store_true", help="skip the ORT model step")
    ap.add_argument(
        "--no-models",
        action="store_true",
        help="skip the model rows (a larger streaming and a cnn-lstm step bundle)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    args = ap.parse_args()
    con = Console()
    with con.status("measuring") as status, tempfile.TemporaryDirectory() as tmp:
        say = lambda s: status.update(f"measuring {s}")  # noqa: E731
        rows: list[tuple[str, Path | None]] = []
        if not args.no_models:
            from export.scale_bundles import build_scale_bundles

            rows = [("streaming (shipped)", None), *build_scale_bundles(Path(tmp), progress=say)]
        report = run_scale(
            ELECTRODES,
            RATES,
            bins=args.bins,
            with_model=not args.no_model,
            progress=say,
            model_bundles=rows,
        )
    print_scale(con, report)
    doc = report.model_dump()
    doc["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    con.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
