"""Accuracy outside npe's own settings, with openretina side by side (issue 15).

Rows (one recording each; all repeat clips are cut from scenes never shown in training):
* `novel-100hz`: the default synthetic natural-movie recording (`npe simulate` defaults,
  seed 0, 100 Hz), whose repeat clip shows held-out scenes;
* `40hz`: the same at `--frame-rate 40`;
* `lnln-40hz`: a recording written by `lnln_retina.py`, an independently written LN-LN
  subunit retina (1/f scenes with drift and saccades, 40 Hz, 12 cells), not encoder.synthetic.

Models per row: npe's `streaming` and `cnn-lstm` (`encoder.train.train`, the `npe train`
defaults except the epoch cap; `cnn-lstm` with the accuracy benchmark's Adam 3e-3 and plateau
decay 0.3) and openretina's Höfling 2024 core + readout (`peer_openretina.py`). Every model
is scored by `encoder.evaluate.evaluate` (50 ms smoothing). Training is capped by epochs, not
by wall clock, so the result does not depend on the machine's load; the training time is
reported as process CPU time (`time.process_time`, both threads) and wall time. 2 torch
threads for every model.

Targets are checked and printed (met / NOT met); JSON is written after every model.

    python benchmarks/accuracy/peer.py --out benchmarks/accuracy/results
    python benchmarks/accuracy/peer.py --rows 40hz --models streaming,openretina
    python benchmarks/accuracy/peer.py --append --rows lnln-40hz --models "" \
        --variant 'streaming-large:streaming:{"spatial1": 16, "channels1": 16}'

A variant row is an npe model with another config (`--variant`); it counts for "npe's best"
but not for the targets of the model's defaults.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from encoder.checkpoint import load_checkpoint
from encoder.evaluate import EvaluationResult, evaluate
from encoder.recording import Recording, read_recording, write_recording
from encoder.synthetic import SimulationConfig, simulate
from encoder.train import TRAIN_CONFIG_FILE, EpochMetrics, TrainConfig, TrainEvent, train

ROWS = ("novel-100hz", "40hz", "lnln-40hz")

#: The rows recorded from npe's synthetic retina: the simulation behind each (the LN-LN row
#: has its own retina, `lnln_retina`).
SYNTHETIC_ROWS: dict[str, SimulationConfig] = {
    "novel-100hz": SimulationConfig(stimulus="natural", seed=0),
    "40hz": SimulationConfig(stimulus="natural", seed=0, frame_rate_hz=40.0),
}
MODELS = ("streaming", "cnn-lstm", "openretina")
NPE_MODELS = ("streaming", "cnn-lstm")


def recording_for(row: str, data_dir: Path) -> Path:
    """Write (once) and return the recording of `row`."""
    path = data_dir / f"{row}.h5"
    if path.exists():
        return path
    t = time.monotonic()
    if row in SYNTHETIC_ROWS:
        rec = simulate(SYNTHETIC_ROWS[row]).recording
    elif row == "lnln-40hz":
        from lnln_retina import LNLNConfig, simulate_lnln

        rec = simulate_lnln(LNLNConfig())
    else:
        raise SystemExit(f"error: unknown row {row!r}; choose from {', '.join(ROWS)}")
    write_recording(rec, path)
    print(
        f"wrote {path}: {rec.n_frames} frames at {rec.frame_rate_hz:g} Hz, {rec.n_cells} cells "
        f"in {time.monotonic() - t:.0f} s"
    )
    return path


def summarise(ev: EvaluationResult) -> dict[str, Any]:
    gains = [g for g in ev.per_cell_gain if g is not None]
    errs = [e for e in ev.per_cell_mean_rate_error if e is not None]
    return {
        "mean_pcc": ev.mean_pcc,
        "ceiling_pcc": ev.ceiling_pcc,
        "fraction_of_ceiling": ev.fraction_of_ceiling,
        "mean_fev": ev.mean_fev,
        "mean_feve": ev.mean_feve,
        "median_gain": ev.median_gain,
        "gain_min": min(gains) if gains else None,
        "gain_max": max(gains) if gains else None,
        "median_abs_mean_rate_error": ev.median_abs_mean_rate_error,
        "max_abs_mean_rate_error": max(abs(e) for e in errs) if errs else None,
        "split_half_ceiling": ev.split_half_ceiling,
        "oracle_ceiling": ev.oracle_ceiling,
        "per_cell_pcc": ev.per_cell_pcc,
        "per_cell_fev": ev.per_cell_fev,
        "per_cell_gain": ev.per_cell_gain,
        "per_cell_mean_rate_error": ev.per_cell_mean_rate_error,
    }


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """`LABEL:MODEL:JSON` → (label, npe model, model config), e.g.
    `streaming-w500:streaming:{"window_ms": 500}`."""
    label, model, config = text.split(":", 2)
    if model not in NPE_MODELS or label in MODELS:
        raise SystemExit(f"error: --variant {text!r}: MODEL must be one of {NPE_MODELS}")
    return label, model, json.loads(config)


def run_npe(
    model: str,
    data: Path,
    rec: Recording,
    run_dir: Path,
    args: argparse.Namespace,
    model_config: dict[str, Any] | None = None,
    lr: float | None = None,
    lr_decay: float | None = None,
    weight_decay: float = 0.0,
    ema_decay: float | None = None,
) -> dict[str, Any]:
    """Train `model` (its defaults, or `model_config`) with this benchmark's settings (`lr`,
    `lr_decay`: None = the benchmark's per model; `weight_decay`: AdamW's; `ema_decay`: None =
    the model's own default) and score it."""
    cnn_lstm = model == "cnn-lstm"
    cfg = TrainConfig(
        model=model,
        model_config=dict(model_config or {}),
        lr=lr if lr is not None else (3e-3 if cnn_lstm else 1e-3),
        lr_decay=lr_decay if lr_decay is not None else (0.3 if cnn_lstm else 1.0),
        weight_decay=weight_decay,
        ema_decay=ema_decay,
        max_epochs=args.cnn_lstm_epochs if cnn_lstm else args.streaming_epochs,
        epoch_ms=args.epoch_ms,
        patience=args.patience,
        threads=args.threads,
        seed=args.seed,
    )

    def progress(event: TrainEvent) -> None:
        # The trainer reports typed events (encoder.training.events); only epochs are printed.
        if isinstance(event, EpochMetrics):
            print(
                f"  {model} epoch {event.epoch}: val loss {event.val_loss:.4f}, "
                f"val PCC {event.val_pcc:.3f}, {event.epoch_ms / 1000:.0f} s",
                flush=True,
            )

    cpu0, wall0 = time.process_time(), time.monotonic()
    result = train(data, run_dir, cfg, progress=progress, recording=rec)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    ev, _ = evaluate(load_checkpoint(run_dir), rec, data_name=str(data))
    return {
        **summarise(ev),
        "parameters": result.n_parameters,
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "epochs": len(result.epochs),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "final_train_loss": result.epochs[-1].train_loss if result.epochs else None,
        "final_val_loss": result.epochs[-1].val_loss if result.epochs else None,
        "settings": {
            "lr": cfg.lr,
            "lr_decay": cfg.lr_decay,
            "weight_decay": cfg.weight_decay,
            # as the run resolved it (None in the config = the model's own default)
            "ema_decay": json.loads((run_dir / TRAIN_CONFIG_FILE).read_text())["ema_decay"],
            "max_epochs": cfg.max_epochs,
            "patience": cfg.patience,
            "model_config": dict(cfg.model_config),
        },
    }


def run_peer(data: Path, rec: Recording, args: argparse.Namespace) -> dict[str, Any]:
    from hoefling import HoeflingDefaults
    from peer_openretina import PeerTrainConfig, as_checkpoint, train_openretina

    hp = HoeflingDefaults()
    cfg = PeerTrainConfig(
        max_epochs=args.openretina_epochs,
        epoch_ms=args.epoch_ms,
        patience=args.patience,
        threads=args.threads,
        seed=args.seed,
    )
    cpu0, wall0 = time.process_time(), time.monotonic()
    result = train_openretina(rec, hp, cfg, log=lambda s: print(s, flush=True))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    ev, _ = evaluate(as_checkpoint(result.model, rec), rec, data_name=str(data))
    return {
        **summarise(ev),
        "parameters": result.model.n_parameters(),
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "settings": {
            "lr": hp.learning_rate,
            "temporal_kernel_ms": list(hp.temporal_kernel_ms),
            "temporal_kernel_frames": list(result.model.temporal_kernels),
            "window_frames": result.model.window_frames,
            "max_epochs": cfg.max_epochs,
            "patience": cfg.patience,
        },
    }


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets per row: value and met true/false (null where not run)."""
    by = {(r["row"], r["model"]): r for r in rows}
    out: list[dict[str, Any]] = []

    def add(target: str, value: float | None, met: bool | None) -> None:
        out.append({"target": target, "value": value, "met": met})

    for row in ROWS:
        s = by.get((row, "streaming"))
        if s is not None:
            add(f"{row}: streaming FEV ≥ 0.8", s["mean_fev"], bool((s["mean_fev"] or -9) >= 0.8))
            frac = s["fraction_of_ceiling"]
            add(f"{row}: streaming PCC ≥ 0.9 of the ceiling", frac, bool((frac or 0) >= 0.9))
        c = by.get((row, "cnn-lstm"))
        if c is not None and row != "lnln-40hz":
            frac = c["fraction_of_ceiling"]
            add(f"{row}: cnn-lstm PCC ≥ 0.9 of the ceiling", frac, bool((frac or 0) >= 0.9))
        peer = by.get((row, "openretina"))
        # npe's models with their defaults, and any variant rows (--variant) of this row
        npe = [
            r for (rw, m), r in by.items() if rw == row and (m in NPE_MODELS or "base_model" in r)
        ]
        if peer is not None and npe:
            best = max(npe, key=lambda r: r["mean_pcc"] or -9)
            for metric in ("mean_pcc", "mean_fev"):
                a, b = best[metric], peer[metric]
                add(
                    f"{row}: npe's best ({best['model']}) {metric} ≥ openretina's",
                    None if a is None or b is None else a - b,
                    None if a is None or b is None else bool(a >= b),
                )
            add(
                f"{row}: npe's best ({best['model']}) trains in less CPU time than openretina",
                best["train_cpu_s"] / peer["train_cpu_s"],
                bool(best["train_cpu_s"] < peer["train_cpu_s"]),
            )
    return out


def _f(v: Any, d: int = 3) -> str:
    return "—" if v is None else f"{v:.{d}f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'row':<12} {'model':<11} {'PCC':>6} {'ceil':>6} {'frac':>5} {'FEV':>6} "
        f"{'gain range':>13} {'|mre| med':>9} {'CPU s':>7} {'wall s':>7} {'ep':>3}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['row']:<12} {r['model']:<11} {_f(r['mean_pcc']):>6} {_f(r['ceiling_pcc']):>6} "
            f"{_f(r['fraction_of_ceiling'], 2):>5} {_f(r['mean_fev']):>6} "
            f"{_f(r['gain_min'], 2):>6}–{_f(r['gain_max'], 2):<6} "
            f"{_f(r['median_abs_mean_rate_error'], 2):>9} {r['train_cpu_s']:>7.0f} "
            f"{r['train_wall_s']:>7.0f} {r['epochs']:>3}"
        )


def parser() -> argparse.ArgumentParser:
    """This benchmark's options; `settings` gives their defaults to other scripts."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/accuracy/results"))
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--streaming-epochs", type=int, default=20)
    p.add_argument("--cnn-lstm-epochs", type=int, default=30)
    p.add_argument("--openretina-epochs", type=int, default=15)
    p.add_argument("--epoch-ms", type=float, default=81920.0)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--append", action="store_true", help="keep the other rows of peer.json")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="training seed of every model (initialisation and chunk order). The table in "
        "peer.json is seed 0; another seed appends one JSON line per run to seeds.jsonl "
        "instead, for the spread between seeds",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="also train an npe model with another config, as its own row: "
        "LABEL:MODEL:JSON (e.g. 'streaming-w500:streaming:{\"window_ms\": 500}')",
    )
    return p


def settings(**overrides: Any) -> argparse.Namespace:
    """The settings `run_npe` and `run_peer` read: this benchmark's defaults, then
    `overrides` (an unknown name is an error). Why: a script that built its own Namespace
    (variants.py) broke when a setting was added here."""
    ns = parser().parse_args([])
    for name, value in overrides.items():
        if not hasattr(ns, name):
            raise TypeError(f"peer.py has no setting {name!r}")
        setattr(ns, name, value)
    return ns


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(args.threads)
    data_dir = args.out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "peer.json"
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "torch_threads": args.threads,
        },
        "settings": {k: str(v) for k, v in vars(args).items()},
        "smoothing_ms": 50.0,
        "rows": [],
        "targets": [],
    }
    if args.append and json_path.exists():
        report["rows"] = json.loads(json_path.read_text()).get("rows", [])
    for row in [r for r in args.rows.split(",") if r]:
        data = recording_for(row, data_dir)
        rec = read_recording(data)
        variants = {label: (base, cfg) for label, base, cfg in map(parse_variant, args.variant)}
        for model in [m for m in args.models.split(",") if m] + list(variants):
            print(f"== {row} / {model}", flush=True)
            torch.manual_seed(args.seed)
            suffix = f"_seed{args.seed}" if args.seed else ""
            run_dir = args.out / "runs" / f"peer_{row}_{model}{suffix}"
            extra: dict[str, Any] = {}
            if model == "openretina":
                res = run_peer(data, rec, args)
            elif model in variants:
                base, config = variants[model]
                res = run_npe(base, data, rec, run_dir, args, config)
                extra = {"base_model": base}
            else:
                res = run_npe(model, data, rec, run_dir, args)
            res = {"row": row, "model": model, **extra, "frame_rate_hz": rec.frame_rate_hz, **res}
            if args.seed:
                line = {k: v for k, v in res.items() if not k.startswith("per_cell_")}
                with (args.out / "seeds.jsonl").open("a") as fh:
                    fh.write(json.dumps({"seed": args.seed, **line}) + "\n")
                print(f"  seed {args.seed}: PCC {_f(res['mean_pcc'])}, FEV {_f(res['mean_fev'])}")
                continue
            report["rows"] = [
                r for r in report["rows"] if (r["row"], r["model"]) != (row, model)
            ] + [res]
            report["targets"] = check_targets(report["rows"])
            json_path.write_text(json.dumps(report, indent=2) + "\n")
            print(
                f"  PCC {_f(res['mean_pcc'])} ({_f(res['fraction_of_ceiling'], 2)} of ceiling), "
                f"FEV {_f(res['mean_fev'])}, gain {_f(res['gain_min'], 2)}–{_f(res['gain_max'], 2)}, "
                f"CPU {res['train_cpu_s']:.0f} s, wall {res['train_wall_s']:.0f} s",
                flush=True,
            )
    print_table(report["rows"])
    for t in report["targets"]:
        mark = {True: "met", False: "NOT met", None: "not run"}[t["met"]]
        print(f"{mark}: {t['target']} (measured {_f(t['value'])})")
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
