"""Hyperparameter variants of one npe model on one row of the peer benchmark (issue 15).

Why: `peer.py` trains each model with its defaults; when a model falls short of a target
(`cnn-lstm` at 40 Hz), this says which changes move it and by how much, with the same data,
seed, stopping rule and evaluation as `peer.py`.

    python benchmarks/accuracy/variants.py --row 40hz \
        --variants '{"lstm50": {"lstm_ms": 50}, "adam1e-3": {"lr": 0.001}}'

Each variant is a model config (its keys go to `TrainConfig.model_config`) plus optional
"model" (default cnn-lstm), "lr", "lr_decay" and "epochs". One JSON line per variant is
appended to --out (default benchmarks/accuracy/results/variants.jsonl).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from peer import recording_for, summarise

from encoder.checkpoint import load_checkpoint
from encoder.evaluate import evaluate
from encoder.recording import read_recording
from encoder.train import EpochMetrics, TrainConfig, TrainEvent, train


def run_variant(
    row: str, name: str, spec: dict[str, Any], data: Path, runs: Path, patience: int
) -> dict[str, Any]:
    """Train and score one variant; its summary as a JSON-ready dict."""
    kw = dict(spec)
    model = kw.pop("model", "cnn-lstm")
    cnn_lstm = model == "cnn-lstm"
    # peer.py's settings unless the variant changes them
    lr = kw.pop("lr", 3e-3 if cnn_lstm else 1e-3)
    lr_decay = kw.pop("lr_decay", 0.3 if cnn_lstm else 1.0)
    epochs = kw.pop("epochs", 250)
    cfg = TrainConfig(
        model=model,
        model_config=kw,
        lr=lr,
        lr_decay=lr_decay,
        max_epochs=epochs,
        epoch_ms=81920.0,
        patience=patience,
        threads=2,
        seed=0,
    )
    rec = read_recording(data)

    def progress(event: TrainEvent) -> None:
        if isinstance(event, EpochMetrics):
            print(
                f"  {name} epoch {event.epoch}: train {event.train_loss:.4f} "
                f"val {event.val_loss:.4f} PCC {event.val_pcc:.3f}",
                flush=True,
            )

    run_dir = runs / f"{row}-{name}"
    cpu0, wall0 = time.process_time(), time.monotonic()
    result = train(data, run_dir, cfg, progress=progress, recording=rec)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    ev, _ = evaluate(load_checkpoint(run_dir), rec, data_name=str(data))
    s = summarise(ev)
    last = result.epochs[-1] if result.epochs else None
    return {
        "row": row,
        "variant": name,
        "model": model,
        "model_config": dict(cfg.model_config),
        "lr": cfg.lr,
        "lr_decay": cfg.lr_decay,
        "fraction_of_ceiling": s["fraction_of_ceiling"],
        "mean_fev": s["mean_fev"],
        "mean_pcc": s["mean_pcc"],
        "final_train_loss": last.train_loss if last else None,
        "final_val_loss": last.val_loss if last else None,
        "parameters": result.n_parameters,
        "epochs": len(result.epochs),
        "stopped": result.stopped,
        "train_cpu_s": cpu,
        "train_wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--row", required=True)
    p.add_argument("--variants", required=True, help="JSON object: name → config")
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--results", type=Path, default=Path("benchmarks/accuracy/results"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(2)
    out = args.out or args.results / "variants.jsonl"
    data = recording_for(args.row, args.results / "data")
    for name, spec in json.loads(args.variants).items():
        r = run_variant(args.row, name, spec, data, args.results / "runs", args.patience)
        print(
            f"{name}: PCC/ceiling {r['fraction_of_ceiling']:.3f}, FEV {r['mean_fev']:.3f}, "
            f"{r['epochs']} epochs",
            flush=True,
        )
        with out.open("a") as f:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
