"""Calibration benchmark on simulated patients (`python benchmarks/calibration/run.py`).

Every trial goes through the real path (TrialStimulator → SafetyEnforcer → UDP link →
in-process SimulatedStimulator) and is logged to a session file, exactly as in a clinic
session with `--simulated-patient`. Measured against each patient's known truth:

  * thresholds, QUEST+ vs transformed up-down staircase: trials per electrode, absolute
    error, 95 % CI coverage and width;
  * brightness curves (magnitude estimation, 5 levels × 3): RMS error of the fitted curve
    against the true one between threshold and maximum;
  * phosphene positions: each electrode's own mean report vs the fitted retinotopic model,
    and the model's error on electrodes that were never tested;
  * threshold prediction: 100 × 10-fold CV of ridge / kNN / MLP on all measured electrodes,
    then testing only half the array and predicting the rest, against testing every electrode.

Prints rich tables and writes JSON (default benchmarks/calibration/results.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from calibration.brightness import brightness_curve
from calibration.patient import SimulatedPatient, simulated_patient_for_array
from calibration.prediction import (
    MODEL_NAMES,
    ElectrodeFeatures,
    cross_validate,
    predict_thresholds,
)
from calibration.runner import INPROCESS_LINK, calibrate, start_session
from hardware.arrays import ElectrodeArray, load_array
from hardware.calibration_file import load_calibration


def _session(
    tmp: Path,
    name: str,
    cal: Path,
    array: ElectrodeArray,
    ids: tuple[str, ...],
    seed: int,
    **kw: Any,
) -> tuple[Any, float]:
    path = tmp / f"{name}.jsonl"
    start_session(
        path,
        patient_id=f"sim{seed}",
        array=array.name,
        electrodes=ids,
        calibration_path=str(cal),
        link=INPROCESS_LINK,
        simulated_patient=seed,
        **kw,
    )
    t0 = time.perf_counter()
    out = calibrate(path)
    return out, time.perf_counter() - t0


def threshold_metrics(out: Any, patient: SimulatedPatient) -> dict[str, Any]:
    t = patient.truth
    rows = []
    for e, r in out.result.thresholds.items():
        true = float(t.threshold_ua[t.index(e)])
        f = r.fit
        rows.append(
            (
                f.n_trials,
                f.threshold_ua - true,
                f.threshold_ci_ua[0] <= true <= f.threshold_ci_ua[1],
                f.ci_width_ua,
                f.found,
            )
        )
    a = np.array(rows, dtype=np.float64)
    return {
        "electrodes": len(rows),
        "trials_mean": float(a[:, 0].mean()),
        "trials_median": float(np.median(a[:, 0])),
        "abs_error_mean_ua": float(np.abs(a[:, 1]).mean()),
        "rmse_ua": float(np.sqrt(np.mean(a[:, 1] ** 2))),
        "bias_ua": float(a[:, 1].mean()),
        "ci_coverage": float(a[:, 2].mean()),
        "ci_width_mean_ua": float(a[:, 3].mean()),
        "found_fraction": float(a[:, 4].mean()),
        "stimulator": out.stimulator_stats,
    }


def render(results: dict[str, Any], console: Console, cv_repeats: int) -> None:
    """Rich tables of a results dict (also used by --render-only on a saved JSON)."""
    pp = results["per_patient"]

    def mean(path: list[str]) -> float:
        vals = []
        for r in pp:
            v: Any = r
            for k in path:
                v = v[k]
            vals.append(float(v))
        return float(np.mean(vals))

    tab = Table(
        title=f"thresholds: {results['patients']} simulated patients × {results['electrodes_per_patient']} electrodes ({results['array']})"
    )
    for col in (
        "method",
        "trials/electrode",
        "|error| µA",
        "RMSE µA",
        "95% CI coverage",
        "CI width µA",
        "s/electrode",
    ):
        tab.add_column(col)
    for method in ("quest", "staircase"):
        tab.add_row(
            "QUEST+" if method == "quest" else "staircase 2-down-1-up",
            f"{mean([method, 'trials_mean']):.1f}",
            f"{mean([method, 'abs_error_mean_ua']):.2f}",
            f"{mean([method, 'rmse_ua']):.2f}",
            f"{mean([method, 'ci_coverage']):.1%}",
            f"{mean([method, 'ci_width_mean_ua']):.1f}",
            f"{mean([method, 'seconds']) / results['electrodes_per_patient']:.2f}",
        )
    console.print(tab)
    tab = Table(title="brightness curves and phosphene map")
    tab.add_column("measure")
    tab.add_column("value")
    tab.add_row(
        "brightness trials / electrode", f"{mean(['brightness', 'trials_per_electrode']):.0f}"
    )
    tab.add_row(
        "brightness curve RMS error (0..~1 scale)", f"{mean(['brightness', 'curve_rmse_mean']):.3f}"
    )
    tab.add_row(
        "position error: own mean report (2 reports)",
        f"{mean(['map', 'raw_report_error_mean_deg']):.2f}°",
    )
    tab.add_row(
        "position error: model, tested electrodes",
        f"{mean(['map', 'model_error_tested_mean_deg']):.2f}°",
    )
    tab.add_row(
        "position error: model, untested electrodes",
        f"{mean(['map', 'model_error_untested_mean_deg']):.2f}°",
    )
    tab.add_row("outliers flagged / patient", f"{mean(['map', 'outliers_flagged']):.1f}")
    console.print(tab)
    tab = Table(title=f"threshold prediction ({cv_repeats} × 10-fold CV, RMSE µA mean ± sd)")
    for col in ("model", "CV RMSE", "CV MAE"):
        tab.add_column(col)
    for m_ in MODEL_NAMES:
        tab.add_row(
            m_,
            f"{mean(['prediction', 'cv', m_, 'rmse_mean_ua']):.2f} ± {mean(['prediction', 'cv', m_, 'rmse_sd_ua']):.2f}",
            f"{mean(['prediction', 'cv', m_, 'mae_mean_ua']):.2f}",
        )
    tab.add_row("half tested → predicted", f"{mean(['prediction', 'predicted_rmse_ua']):.2f}", "")
    tab.add_row(
        "testing every electrode",
        f"{mean(['prediction', 'measured_rmse_same_electrodes_ua']):.2f}",
        "",
    )
    tab.add_row("spread of true thresholds (sd)", f"{mean(['prediction', 'truth_sd_ua']):.2f}", "")
    console.print(tab)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=2)
    ap.add_argument("--electrodes", type=int, default=96)
    ap.add_argument("--array", default="utah96")
    ap.add_argument("--cv-repeats", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    ap.add_argument("--render-only", action="store_true", help="Print the tables of --out.")
    args = ap.parse_args()
    console = Console(width=130)
    if args.render_only:
        saved = json.loads(args.out.read_text())
        render(saved, console, saved.get("cv_repeats", args.cv_repeats))
        return
    array = load_array(args.array)
    ids = array.electrode_ids[: args.electrodes]
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "array": array.name,
        "patients": args.patients,
        "electrodes_per_patient": len(ids),
        "cv_repeats": args.cv_repeats,
        "per_patient": [],
    }
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for p in range(args.patients):
            seed = 100 + p
            patient = simulated_patient_for_array(array, seed)
            t = patient.truth
            rec: dict[str, Any] = {"seed": seed}
            cal = tmp / f"cal{seed}.json"
            for method in ("quest", "staircase"):
                console.print(f"patient {seed}: thresholds with {method} on {len(ids)} electrodes")
                out, secs = _session(
                    tmp, f"thr-{method}-{seed}", cal if method == "quest" else tmp / f"s{seed}.json",
                    array, ids, seed, procedure="threshold", method=method, budget=60,
                )  # fmt: skip
                rec[method] = threshold_metrics(out, patient) | {"seconds": secs}
            console.print(f"patient {seed}: brightness")
            out, _ = _session(tmp, f"bri-{seed}", cal, array, ids, seed, procedure="brightness")
            errs, scale_err = [], []
            for e, b in out.result.brightness.items():
                i = t.index(e)
                grid = np.linspace(t.threshold_ua[i], b.max_current_ua, 50)
                true = brightness_curve(
                    grid, t.threshold_ua[i], t.brightness_scale_ua[i], t.brightness_max[i]
                )
                fit = brightness_curve(grid, b.threshold_ua, b.fit.scale_ua, b.fit.max_brightness)
                errs.append(float(np.sqrt(np.mean((fit - true) ** 2))))
                scale_err.append(abs(b.fit.scale_ua - t.brightness_scale_ua[i]))
            rec["brightness"] = {
                "electrodes": len(errs),
                "trials_per_electrode": out.n_trials / max(len(errs), 1),
                "curve_rmse_mean": float(np.mean(errs)),
                "curve_rmse_median": float(np.median(errs)),
                "scale_abs_error_mean_ua": float(np.mean(scale_err)),
            }
            console.print(f"patient {seed}: phosphene map (half the electrodes tested)")
            half = ids[::2]
            out, _ = _session(
                tmp, f"map-{seed}", cal, array, half, seed, procedure="map", reports=2
            )
            m = out.result.map_fit
            err_model = np.hypot(*(m.predicted_deg - t.phosphene_deg).T)
            tested = m.n_reports > 0
            err_raw = np.hypot(*(m.report_mean_deg[tested] - t.phosphene_deg[tested]).T)
            rec["map"] = {
                "tested": int(tested.sum()),
                "report_sd_deg": t.report_sd_deg,
                "raw_report_error_mean_deg": float(err_raw.mean()),
                "model_error_tested_mean_deg": float(err_model[tested].mean()),
                "model_error_untested_mean_deg": float(err_model[~tested].mean()),
                "model_error_max_deg": float(err_model.max()),
                "outliers_flagged": int(m.outlier.sum()),
                "ci_coverage": float(np.mean(err_model <= m.ci_deg)),
            }
            console.print(f"patient {seed}: threshold prediction ({args.cv_repeats} × 10-fold CV)")
            c = load_calibration(cal).by_id()
            feats = ElectrodeFeatures(
                array.electrode_ids, array.positions_mm, t.depth_mm, t.impedance_kohm
            )
            measured = {e: c[e].threshold_ua for e in ids if c[e].enabled}
            idx = np.array([array.electrode_ids.index(e) for e in measured])
            thr = np.array(list(measured.values()))
            cv = {
                m_: cross_validate(feats, idx, thr, m_, n_repeats=args.cv_repeats).__dict__
                for m_ in MODEL_NAMES
            }
            half_meas = {e: v for k, (e, v) in enumerate(measured.items()) if k % 2 == 0}
            pred = predict_thresholds(feats, half_meas, n_repeats=min(args.cv_repeats, 20))
            pidx = [t.index(e) for e in pred.predicted_ids]
            pe = pred.predicted_ua - t.threshold_ua[pidx]
            me = np.array(
                [
                    measured[e] - t.threshold_ua[t.index(e)]
                    for e in pred.predicted_ids
                    if e in measured
                ]
            )
            thr_trials = rec["quest"]["trials_mean"]
            rec["prediction"] = {
                "cv": cv,
                "half_tested_chosen": pred.chosen,
                "predicted_rmse_ua": float(np.sqrt(np.mean(pe**2))),
                "measured_rmse_same_electrodes_ua": float(np.sqrt(np.mean(me**2))),
                "truth_sd_ua": float(np.std(t.threshold_ua[pidx])),
                "trials_saved": float(thr_trials * len(pred.predicted_ids)),
            }
            results["per_patient"].append(rec)

    render(results, console, args.cv_repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    console.print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
