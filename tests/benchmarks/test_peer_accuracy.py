"""`benchmarks/accuracy/`: the openretina peer's config in ms, the independent LN-LN retina,
and (only where openretina is installed, `scripts/install-peer`) the peer adapter.

Why tested: the README's side-by-side table rests on the peer seeing the same durations as in
its original 30 Hz setting, on the LN-LN recording holding out its repeat scene, and on the
adapter being scored by npe's own evaluation.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

ACCURACY = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy"
sys.path.insert(0, str(ACCURACY))

from hoefling import HOEFLING_FRAME_RATE_HZ, HoeflingDefaults  # noqa: E402
from lnln_retina import LNLNConfig, simulate_lnln  # noqa: E402

from encoder.evaluate import evaluate  # noqa: E402

SMALL = LNLNConfig(train_s=24.0, val_s=6.0, test_s=6.0, repeat_s=5.0, n_repeats=4, scene_px=96)


def test_hoefling_temporal_kernels_keep_their_durations_in_ms() -> None:
    hp = HoeflingDefaults()
    assert hp.temporal_kernel_ms == pytest.approx((700.0, 1100.0 / 3))
    # at the original 30 Hz the conversion gives the published frame counts back
    assert hp.temporal_kernel_frames(HOEFLING_FRAME_RATE_HZ) == (21, 11)
    assert hp.temporal_kernel_frames(100.0) == (71, 37)  # 70 → 71: odd, centre tap
    assert hp.temporal_kernel_frames(40.0) == (29, 15)  # 28 → 29, 14.7 → 15
    assert hp.window_frames(40.0) == 29 + 15 - 1
    for fr in (30.0, 40.0, 100.0, 120.0):
        for k, ms in zip(hp.temporal_kernel_frames(fr), hp.temporal_kernel_ms, strict=True):
            assert k % 2 == 1
            assert abs(k * 1000.0 / fr - ms) <= 1.5 * 1000.0 / fr  # within 1.5 frames


@pytest.fixture(scope="module")
def small_lnln():  # type: ignore[no-untyped-def]
    return simulate_lnln(SMALL)


def test_lnln_recording_has_12_cells_at_40hz_and_a_held_out_repeat_scene(small_lnln) -> None:  # type: ignore[no-untyped-def]
    rec = small_lnln
    assert rec.n_cells == 12 and rec.frame_rate_hz == 40.0
    assert sorted(set(rec.cells.types)) == ["OFF sustained", "ON transient"]
    assert rec.repeats is not None and rec.repeats.responses.shape[0] == SMALL.n_repeats
    # the repeat clip is cut from a scene the main movie never shows: no repeat frame
    # matches any main frame
    main = rec.stimulus.reshape(rec.n_frames, -1).astype(np.int16)
    rep = rec.repeats.stimulus.reshape(rec.repeats.stimulus.shape[0], -1).astype(np.int16)
    nearest = min(np.abs(main - r).mean(1).min() for r in rep[::10])
    assert nearest > 5.0
    # rates are realistic: a few to tens of Hz on average, peaks near 100-200 Hz
    mean_hz = rec.truth_rates_hz.mean(0)
    assert np.all((mean_hz > 1.0) & (mean_hz < 60.0))
    assert np.all(rec.truth_rates_hz.max(0) > 60.0)


def test_lnln_same_seed_same_file_other_seed_other_retina() -> None:
    tiny = replace(SMALL, train_s=4.0, val_s=1.0, test_s=1.0, repeat_s=1.0, n_repeats=2)
    a, b = simulate_lnln(tiny), simulate_lnln(tiny)
    assert np.array_equal(a.responses, b.responses)
    c = simulate_lnln(replace(tiny, seed=1))
    assert not np.array_equal(a.stimulus, c.stimulus)


def test_openretina_adapter_is_causal_and_scored_by_npe_evaluate(small_lnln) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("openretina")
    from peer_openretina import OpenRetinaAdapter, PeerTrainConfig, as_checkpoint, train_openretina

    rec = small_lnln
    hp = HoeflingDefaults()
    result = train_openretina(
        rec, hp, PeerTrainConfig(max_epochs=1, epoch_ms=4000.0), log=lambda _: None
    )
    model = result.model.eval()
    assert isinstance(model, OpenRetinaAdapter)
    t = model.window_frames
    assert t == hp.window_frames(40.0)
    x = torch.randn(1, t + 9, *rec.frame_shape)
    with torch.no_grad():
        out = model.forward_chunk(x)
        assert out.shape == (1, 10, rec.n_cells)
        changed = x.clone()
        changed[:, -1] += 1.0  # only the newest frame changes: only the last output may
        out2 = model.forward_chunk(changed)
    assert torch.allclose(out[:, :-1], out2[:, :-1])
    assert not torch.allclose(out[:, -1], out2[:, -1])
    ev, _ = evaluate(as_checkpoint(result.model, rec), rec)
    assert ev.model == "openretina" and ev.n_cells == 12
    assert ev.mean_pcc is not None and np.isfinite(ev.mean_pcc)
    assert ev.ceiling_pcc is not None and ev.ceiling_pcc > 0.5


def test_a_variant_row_counts_for_npes_best_but_not_for_the_defaults_targets() -> None:
    """`peer.py --variant`: a streaming with another config is its own row; "npe's best"
    compares openretina with the best npe row, the default-model targets stay the defaults'."""
    from peer import check_targets, parse_variant

    label, base, cfg = parse_variant('streaming-w500:streaming:{"window_ms": 500}')
    assert (label, base, cfg) == ("streaming-w500", "streaming", {"window_ms": 500})
    with pytest.raises(SystemExit, match="MODEL must be one of"):
        parse_variant("x:openretina:{}")

    def row(model: str, pcc: float, fev: float, cpu: float, **extra: object) -> dict:
        return {
            "row": "lnln-40hz", "model": model, "mean_pcc": pcc, "mean_fev": fev,
            "fraction_of_ceiling": pcc / 0.98, "train_cpu_s": cpu, **extra,
        }  # fmt: skip

    rows = [
        row("streaming", 0.949, 0.928, 136.0),
        row("openretina", 0.958, 0.940, 840.0),
        row("streaming-w500", 0.960, 0.945, 200.0, base_model="streaming"),
    ]
    got = {t["target"]: t for t in check_targets(rows)}
    best = "lnln-40hz: npe's best (streaming-w500) mean_pcc ≥ openretina's"
    assert got[best]["met"] is True and got[best]["value"] == pytest.approx(0.002)
    assert got["lnln-40hz: streaming FEV ≥ 0.8"]["value"] == 0.928  # the default's row
    without = {t["target"]: t for t in check_targets(rows[:2])}
    assert without["lnln-40hz: npe's best (streaming) mean_pcc ≥ openretina's"]["met"] is False


def test_the_benchmark_runs_npe_with_its_shared_settings(tmp_path: Path, small_lnln) -> None:  # type: ignore[no-untyped-def]
    """variants.py and peer.py train through `run_npe` with `peer.settings` (one definition of
    the settings: a Namespace built by hand in variants.py once lacked the seed and failed);
    one epoch of `streaming` on the small LN-LN recording is trained and scored."""
    from peer import run_npe, settings

    from encoder.recording import write_recording

    data = write_recording(small_lnln, tmp_path / "lnln.h5")
    args = settings(streaming_epochs=1, patience=1, epoch_ms=2000.0, seed=3)
    res = run_npe("streaming", data, small_lnln, tmp_path / "run", args)
    assert res["epochs"] == 1 and np.isfinite(res["mean_pcc"]) and res["parameters"] > 0
    with pytest.raises(TypeError, match="no setting 'no_such'"):
        settings(no_such=1)


def test_the_seen_scene_clip_replaces_only_the_repeats_and_comes_from_the_same_retina() -> None:
    """generalisation.py scores a model on a second repeat clip over the training scenes: the
    recording is otherwise unchanged, the clip is new, its truth is the same retina's response
    to it, and a recording the configuration did not make is refused."""
    from dataclasses import replace as dc_replace

    from generalisation import seen_scene_recording

    from encoder.synthetic import SimulationConfig, simulate

    cfg = SimulationConfig(
        stimulus="natural", seed=0, frame_rate_hz=40.0, duration_scale=0.01, repeat_seconds=2.0
    )
    sim = simulate(cfg)
    rec = sim.recording
    seen = seen_scene_recording(cfg, rec)
    assert rec.repeats is not None and seen.repeats is not None
    np.testing.assert_array_equal(seen.responses, rec.responses)
    np.testing.assert_array_equal(seen.stimulus, rec.stimulus)
    assert seen.repeats.responses.shape == rec.repeats.responses.shape
    assert not np.array_equal(seen.repeats.stimulus, rec.repeats.stimulus)
    assert seen.repeats.truth_rates_hz is not None
    np.testing.assert_allclose(
        seen.repeats.truth_rates_hz, sim.retina.respond(seen.repeats.stimulus), rtol=1e-6
    )
    other = dc_replace(rec, responses=rec.responses + np.uint16(1))
    with pytest.raises(SystemExit, match="does not give its recording back"):
        seen_scene_recording(cfg, other)
