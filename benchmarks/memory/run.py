"""Peak memory of training on a recording the size of Maheswaranathan 2023's (issue 15).

Run from the repository root: PYTHONPATH=. .venv/bin/python benchmarks/memory/run.py
[--frames 360000 --steps 200 --prefetch 0,2 --eager --json benchmarks/memory/results.json]

Generates a 360,000 × 50 × 50 uint8 recording (~900 MB of frames; written in chunks, laid out
like `npe dataset import` writes: 256-frame HDF5 chunks, gzip level 1) in a temporary
directory, deleted afterwards. Then, for each --prefetch depth, a child process trains the
default `streaming` model for --steps optimiser steps (one epoch of `--epoch-ms` chosen to
give that many steps, then validation on 18,000 frames), and the parent reads the child's peak
resident set (`ru_maxrss` of the waited-for child). The child also reports the fraction of the
training loop's time spent waiting for batches. --eager adds the old way for comparison: the
whole recording read into memory first (`read_recording`).

Target (issue 15): peak < 2 GB with lazy reads. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET_BYTES = 2 * 1024**3
FRAME_SIZE = 50
FRAME_RATE_HZ = 100.0
N_CELLS = 40
CHUNK_MS = 640.0  # 64 predicted frames per chunk at 100 Hz (the default)
BATCH = 8
#: A narrower `streaming` (4 channels, 9 px first kernel) by default: the benchmark measures
#: the data path, and the default model's ~5 s steps on the shared 2-core VM would make 200
#: steps take a quarter of an hour. A smaller model hides less loading behind compute, so the
#: waiting fraction it reports is the pessimistic one. `--model-config '{}'` runs the default.
SMALL_STREAMING = {
    "spatial1": 4,
    "kernel1": 9,
    "channels1": 4,
    "spatial2": 4,
    "channels2": 4,
    "n_types": 4,
}


def write_big_recording(path: Path, n_frames: int, seed: int = 0) -> None:
    """A valid npe recording v1 of `n_frames` random 50×50 uint8 frames, written in blocks."""
    import h5py

    from encoder.recording import FORMAT_NAME, FORMAT_VERSION

    rng = np.random.default_rng(seed)
    n_val = n_test = max(300, n_frames // 20)
    n_train = n_frames - n_val - n_test
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["version"] = FORMAT_VERSION
        f.attrs["frame_rate_hz"] = FRAME_RATE_HZ
        f.attrs["pixel_size_deg"] = 0.05
        f.attrs["source"] = "benchmarks/memory: random uint8 frames"
        f.attrs["session"] = "memory-benchmark"
        stim = f.create_dataset(
            "stimulus",
            shape=(n_frames, FRAME_SIZE, FRAME_SIZE),
            dtype=np.uint8,
            chunks=(256, FRAME_SIZE, FRAME_SIZE),
            compression="gzip",
            compression_opts=1,
        )
        stim.attrs["kind"] = "uint8"
        block = 256 * 40
        for a in range(0, n_frames, block):
            b = min(n_frames, a + block)
            stim[a:b] = rng.integers(0, 256, (b - a, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        f.create_dataset(
            "responses",
            data=rng.poisson(0.3, (n_frames, N_CELLS)).astype(np.uint16),
            chunks=(4096, N_CELLS),
            compression="gzip",
        )
        cells = f.create_group("cells")
        str_dtype = h5py.string_dtype(encoding="utf-8")
        cells.create_dataset(
            "id", data=np.array([f"c{i}" for i in range(N_CELLS)], dtype=object), dtype=str_dtype
        )
        cells.create_dataset(
            "type", data=np.array(["unknown"] * N_CELLS, dtype=object), dtype=str_dtype
        )
        cells.create_dataset("center_deg", data=np.full((N_CELLS, 2), np.nan, dtype=np.float32))
        splits = f.create_group("splits")
        splits["train"] = np.array([[0, n_train]], dtype=np.int64)
        splits["val"] = np.array([[n_train, n_train + n_val]], dtype=np.int64)
        splits["test"] = np.array([[n_train + n_val, n_frames]], dtype=np.int64)


def child(
    data: Path, out: Path, steps: int, prefetch: int, eager: bool, model_config: dict[str, Any]
) -> dict[str, Any]:
    """Train in this process; what the parent needs besides the peak RSS."""
    from encoder.recording import read_recording
    from encoder.train import Callback, EpochMetrics, EpochStarted, StepDone, TrainConfig, train

    class LoopClock(Callback):
        """Wall time of the training loop proper (first batch request to last step)."""

        def __init__(self) -> None:
            self.loop_ms = 0.0
            self._t0 = 0.0

        def on_epoch_start(self, trainer: Any, event: EpochStarted) -> None:
            self._t0 = time.monotonic()

        def on_step_end(self, trainer: Any, event: StepDone) -> None:
            self.loop_ms = (time.monotonic() - self._t0) * 1000.0

    clock = LoopClock()
    epochs: list[EpochMetrics] = []
    recording = read_recording(data) if eager else None
    chunk_frames = round(CHUNK_MS * FRAME_RATE_HZ / 1000.0)
    cfg = TrainConfig(
        model="streaming",
        model_config=model_config,
        batch_size=BATCH,
        chunk_ms=CHUNK_MS,
        epoch_ms=steps * BATCH * chunk_frames * 1000.0 / FRAME_RATE_HZ,
        max_epochs=1,
        threads=2,
        prefetch=prefetch,
    )
    t0 = time.monotonic()
    result = train(
        data,
        out,
        cfg,
        recording=recording,
        callbacks=[clock],
        progress=lambda e: epochs.append(e) if isinstance(e, EpochMetrics) else None,
    )
    (metrics,) = epochs
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    return {
        "steps": metrics.sessions[0].steps,
        "train_loop_ms": clock.loop_ms,
        "data_wait_ms": metrics.data_wait_ms,
        "data_wait_fraction": metrics.data_wait_ms / clock.loop_ms if clock.loop_ms else None,
        "epoch_ms": metrics.epoch_ms,
        "total_s": time.monotonic() - t0,
        "vm_hwm_bytes": hwm,
        "stopped": result.stopped,
    }


def run_child(
    data: Path, out: Path, steps: int, prefetch: int, eager: bool, model_config: dict[str, Any]
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(data), str(out), str(steps), str(prefetch)]
    cmd += ["--model-config", json.dumps(model_config)]
    if eager:
        cmd.append("--eager")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    # ru_maxrss of children is the largest of any child so far; children run one at a time
    # and each prints its own VmHWM as well, which is the figure per row.
    row["peak_rss_bytes"] = row["vm_hwm_bytes"]
    row["ru_maxrss_children_bytes"] = peak_kib * 1024 if peak_kib > before else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, metavar=("DATA", "OUT", "STEPS", "PREFETCH"))
    parser.add_argument("--eager", action="store_true", help="also measure the in-memory read")
    parser.add_argument("--frames", type=int, default=360_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--prefetch", default="0,2", help="comma-separated prefetch depths")
    parser.add_argument("--model-config", default=json.dumps(SMALL_STREAMING))
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()
    if args.child:
        data, out, steps, prefetch = args.child
        model_config = json.loads(args.model_config)
        print(
            json.dumps(
                child(Path(data), Path(out), int(steps), int(prefetch), args.eager, model_config)
            )
        )
        return

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="npe-memory-") as tmp:
        data = Path(tmp) / "big.h5"
        t0 = time.monotonic()
        write_big_recording(data, args.frames)
        write_s = time.monotonic() - t0
        print(f"wrote {args.frames} frames ({data.stat().st_size / 1e6:.0f} MB) in {write_s:.0f} s")
        runs = [(int(p), False) for p in args.prefetch.split(",")]
        if args.eager:
            runs.append((2, True))
        for prefetch, eager in runs:
            row = run_child(
                data,
                Path(tmp) / f"run-{prefetch}-{eager}",
                args.steps,
                prefetch,
                eager,
                json.loads(args.model_config),
            )
            row.update({"prefetch": prefetch, "reads": "eager (whole file)" if eager else "lazy"})
            row["meets_target"] = row["peak_rss_bytes"] < TARGET_BYTES
            rows.append(row)
            print(
                f"{row['reads']:>18}  prefetch {prefetch}  peak {row['peak_rss_bytes'] / 2**30:.2f} GiB  "
                f"waited {100 * (row['data_wait_fraction'] or 0):.1f} % of {row['train_loop_ms'] / 1000:.0f} s "
                f"({row['steps']} steps)"
            )
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"training peak memory, {args.frames:,} frames of 50×50 uint8")
    for col in ("reads", "prefetch", "steps", "peak RSS", "< 2 GB", "waiting on data", "loop s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["reads"],
            str(r["prefetch"]),
            str(r["steps"]),
            f"{r['peak_rss_bytes'] / 2**30:.2f} GiB",
            "yes" if r["meets_target"] else "NO",
            f"{100 * (r['data_wait_fraction'] or 0):.1f} %",
            f"{r['train_loop_ms'] / 1000:.0f}",
        )
    Console().print(table)
    payload = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_1min": os.getloadavg()[0],
        },
        "frames": args.frames,
        "model": "streaming",
        "model_config": json.loads(args.model_config),
        "batch_size": BATCH,
        "chunk_ms": CHUNK_MS,
        "frame_shape": [FRAME_SIZE, FRAME_SIZE],
        "target_bytes": TARGET_BYTES,
        "recording_write_s": write_s,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
