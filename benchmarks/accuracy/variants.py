"""Hyperparameter variants of one npe model on one row of the peer benchmark (issue 15).

Why: `peer.py` trains each model with its defaults; when a model falls short of a target
(`cnn-lstm` at 40 Hz), this says which changes move it and by how much, with the same data,
seed, stopping rule and evaluation (`peer.run_npe`).

    python benchmarks/accuracy/variants.py --row 40hz \
        --variants '{"lstm50": {"lstm_ms": 50}, "adam1e-3": {"lr": 0.001}}'

Each variant is a model config (its keys go to `TrainConfig.model_config`) plus optional
"model" (default cnn-lstm), "lr", "lr_decay", "weight_decay" and "ema_decay". One JSON line per
variant is appended to --out (default benchmarks/accuracy/results/variants.jsonl).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from peer import recording_for, run_npe
from peer import settings as peer_settings

from encoder.recording import read_recording


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--row", required=True)
    p.add_argument("--variants", required=True, help="JSON object: name → config")
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--max-epochs", type=int, default=250)
    p.add_argument("--seed", type=int, default=0, help="training seed (as peer.py --seed)")
    p.add_argument("--results", type=Path, default=Path("benchmarks/accuracy/results"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(2)
    # run_npe's settings: peer.py's own, with one epoch cap for both models
    settings = peer_settings(
        cnn_lstm_epochs=args.max_epochs,
        streaming_epochs=args.max_epochs,
        patience=args.patience,
        seed=args.seed,
    )
    out = args.out or args.results / "variants.jsonl"
    data = recording_for(args.row, args.results / "data")
    rec = read_recording(data)
    for name, spec in json.loads(args.variants).items():
        config = dict(spec)
        model = config.pop("model", "cnn-lstm")
        lr, lr_decay = config.pop("lr", None), config.pop("lr_decay", None)
        weight_decay = float(config.pop("weight_decay", 0.0))
        ema_decay = config.pop("ema_decay", None)
        run_dir = args.results / "runs" / f"{args.row}-{name}-seed{args.seed}"
        torch.manual_seed(args.seed)
        res = run_npe(
            model, data, rec, run_dir, settings, config, lr, lr_decay, weight_decay, ema_decay
        )
        keep = {k: v for k, v in res.items() if not k.startswith("per_cell_")}
        row = {"row": args.row, "variant": name, "model": model, "seed": args.seed, **keep}
        print(
            f"{name}: PCC/ceiling {row['fraction_of_ceiling']:.3f}, FEV {row['mean_fev']:.3f}, "
            f"{row['epochs']} epochs",
            flush=True,
        )
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
