"""Reference trainings whose per-epoch metrics pin the trainer's behaviour across refactors.

Why: `encoder.training` replaced the 240-line `train()` of `encoder/train.py`; the refactor
must not change a single weight for the same seed. `tests/encoder/data/train_reference.json`
holds the digests (and epoch metrics) these cases produced with the *unmodified* trainer of
main at commit 2b3198d (2026-12-02), generated once by

    .venv/bin/python tests/support/train_reference.py --write

on that tree, before any trainer change. `tests/encoder/test_trainer_reference.py` re-runs
the cases with the current code and compares every epoch's metrics within 1e-5 relative (the
digests are bit-exact only on the CPU that wrote them; see that test's docstring). Regenerate only on a deliberate behaviour
change, and say so in the commit message.

Importable as `support.train_reference` (pytest's `pythonpath = ["tests"]`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "encoder" / "data" / "train_reference.json"
_DATA_HELPER = Path(__file__).resolve().parents[1] / "encoder" / "test_models_data.py"


def _helper() -> Any:
    spec = importlib.util.spec_from_file_location("npe_train_reference_data", _DATA_HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases() -> dict[str, dict[str, Any]]:
    """name → TrainConfig keyword arguments (2 epochs each, one torch thread)."""
    h = _helper()
    return {
        "streaming": {
            "model": "streaming",
            # the model as the reference was made (before the per-cell affine became default)
            "model_config": {**h.TINY_STREAMING, "cell_affine": False},
            "lr": 1e-2,
            "ema_decay": 0.0,  # and before the weight average became streaming's default
            "batch_size": 4,
            "chunk_ms": 800.0,
            "max_epochs": 2,
            "patience": 10,
            "threads": 1,
            "seed": 5,
        },
        "single-cnn-subset-decay": {
            "model": "single-cnn",
            "model_config": h.TINY_SINGLE,
            "lr": 3e-3,
            "lr_decay": 0.5,
            "lr_decay_patience": 0,
            "batch_size": 3,
            "chunk_ms": 600.0,
            "epoch_ms": 20000.0,
            "max_epochs": 2,
            "patience": 10,
            "threads": 1,
            "seed": 2,
            "cells": (1,),
        },
    }


def write_data(directory: Path) -> Path:
    """The tiny recording every case trains on (hidden LN generator, 1500 frames, seed 0)."""
    path: Path = _helper().write_tiny(directory / "reference.h5", n_frames=1500)
    return path


def legacy_digest(model: Any) -> str:
    """`weights_digest` under the version-1 parameter names (before models became core +
    readout, `encoder.checkpoint.LEGACY_KEYS`), so the reference made by the old code still
    pins the weights: the tensors are the same, only their names moved."""
    import hashlib

    from encoder.checkpoint import LEGACY_KEYS

    rules = LEGACY_KEYS.get(model.name, ())
    renamed = {}
    for key, tensor in model.state_dict().items():
        old_key = key
        for old, new in rules:
            if key == new.rstrip(".") or key.startswith(new):
                old_key = old + key[len(new) :]
                break
        renamed[old_key] = tensor
    digest = hashlib.sha256()
    for key, tensor in sorted(renamed.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_case(name: str, data: Path, run_dir: Path) -> dict[str, Any]:
    """Train case `name`; its digest (under the old parameter names) and per-epoch losses."""
    from encoder.train import TrainConfig, train
    from encoder.training.callbacks import Callback

    class KeepModel(Callback):
        def on_stop(self, trainer: Any, event: Any) -> None:
            self.model = trainer.model

    keep = KeepModel()
    result = train(data, run_dir, TrainConfig(**cases()[name]), callbacks=[keep])
    return {
        "weights_sha256": legacy_digest(keep.model),
        "best_epoch": result.best_epoch,
        "epochs": [
            {"train_loss": e.train_loss, "val_loss": e.val_loss, "val_pcc": e.val_pcc, "lr": e.lr}
            for e in result.epochs
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {REFERENCE_FILE}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp))
        out = {name: run_case(name, data, Path(tmp) / name) for name in cases()}
    text = json.dumps(out, indent=2) + "\n"
    if args.write:
        REFERENCE_FILE.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
