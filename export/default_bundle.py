"""Regenerate the shipped default checkpoint and bundle (behind `scripts/make_default_bundle`).

Steps, all seeded so that a rerun gives the same files on the same machine: simulate the
default synthetic recording (`SimulationConfig()`: natural movies, 100 Hz, 32x32 px), train the
`streaming` model on it with a modest, fixed budget (`encoder.train.train`, fixed epoch count and
frames per epoch — no wall-clock limit, which would make the result depend on machine speed),
keep the checkpoint in `export/default_checkpoint/` together with a small parity excerpt of the
test split (`parity_data.npz`: windows + a consecutive clip), and export it to
`runtime/default_bundle/` verified against that excerpt. The full recording is not shipped
(~50 MB); the excerpt lets a test re-export the shipped checkpoint and compare parity figures.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = REPO / "export" / "default_checkpoint"
PARITY_DATA = "parity_data.npz"
PROVENANCE = "provenance.json"
SHIPPED_CHECKPOINT_FILES = ("model.safetensors", "checkpoint.json", "metrics.json")

#: Training budget: small enough for ≲ 10 minutes on 2 cores including simulation and export.
TRAIN_OPTIONS: dict[str, Any] = {
    "model": "streaming",
    "max_epochs": 6,
    "epoch_ms": 128000.0,  # 12800 frames at the simulated 100 Hz
    "patience": 3,
    "seed": 0,
    "threads": 2,
}
PARITY_WINDOWS = 16
PARITY_CLIP_FRAMES = 240


def parity_excerpt(recording_path: Path, window_frames: int, out: Path) -> Path:
    """Write `out` (.npz): 16 test-split windows, a 240-frame test clip, frame rate, source."""
    from encoder.recording import read_recording
    from export.data import load_stimulus

    rec = read_recording(recording_path)
    data = load_stimulus(
        recording_path,
        window_frames,
        rec.frame_shape,
        rec.frame_rate_hz,
        split="test",
        n_windows=PARITY_WINDOWS,
        clip_frames=PARITY_CLIP_FRAMES,
    )
    assert data.clip is not None
    np.savez_compressed(
        out,
        windows=data.windows.astype(np.float32),
        clip=data.clip.astype(np.float32),
        frame_rate_hz=np.float64(rec.frame_rate_hz),
        source=np.str_(f"default synthetic recording, test split ({rec.source})"[:200]),
    )
    return out


def make_default_bundle(
    checkpoint_dir: Path = CHECKPOINT_DIR,
    bundle_dir: Path | None = None,
    workdir: Path | None = None,
    say: Any = print,
) -> dict[str, Any]:
    """Simulate, train, export; returns the provenance record also written as JSON."""
    from encoder.recording import write_recording
    from encoder.synthetic.config import SimulationConfig
    from encoder.synthetic.simulate import simulate_recording
    from encoder.train import EpochMetrics, TrainConfig, TrainEvent, train
    from export.exporter import ExportOptions, export_bundle
    from export.source import load_source
    from runtime.bundle import default_bundle_path

    bundle_dir = bundle_dir or default_bundle_path()
    tmp = Path(tempfile.mkdtemp(prefix="npe-default-", dir=workdir))
    t0 = time.monotonic()
    try:
        sim = SimulationConfig()
        say(f"simulating the default recording ({sim})")
        rec_path = write_recording(simulate_recording(sim), tmp / "default_recording.h5")
        t_sim = time.monotonic() - t0
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        options = {k: v for k, v in TRAIN_OPTIONS.items() if k in known}
        say(f"training streaming model ({options})")

        def progress(event: TrainEvent) -> None:
            if isinstance(event, EpochMetrics):
                say(f"epoch {event.model_dump(exclude={'sessions'})}")

        result = train(rec_path, tmp / "run", TrainConfig(**options), progress=progress)
        t_train = time.monotonic() - t0 - t_sim
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for old in checkpoint_dir.iterdir():
            old.unlink()
        for name in SHIPPED_CHECKPOINT_FILES:
            if (tmp / "run" / name).is_file():
                shutil.copy2(tmp / "run" / name, checkpoint_dir / name)
        source = load_source(checkpoint_dir)
        parity_excerpt(rec_path, source.window_frames, checkpoint_dir / PARITY_DATA)
        say(f"exporting to {bundle_dir}")
        manifest = export_bundle(
            source,
            bundle_dir,
            ExportOptions(data=checkpoint_dir / PARITY_DATA, overwrite=True),
            progress=say,
        )
        record = {
            "simulation": dataclasses.asdict(sim),
            "train_options": options,
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "epochs": [dataclasses.asdict(e) for e in result.epochs],
            "stopped": result.stopped,
            "n_parameters": result.n_parameters,
            "seconds": {
                "simulate": round(t_sim, 1),
                "train": round(t_train, 1),
                "total": round(time.monotonic() - t0, 1),
            },
            "bundle_files": manifest.files,
            "parity": manifest.parity.model_dump(mode="json"),
        }
        (checkpoint_dir / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
        return record
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    from rich.console import Console

    console = Console()
    with console.status("making the default bundle") as status:

        def say(msg: str) -> None:
            status.update(str(msg))
            console.log(msg)

        record = make_default_bundle(say=say)
    console.print(
        f"[green]default bundle written[/green] in {record['seconds']['total']} s; "
        f"provenance in {CHECKPOINT_DIR / PROVENANCE}"
    )


if __name__ == "__main__":
    main()
