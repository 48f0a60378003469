"""The synthetic retina: polarity, subunit nonlinearity, rate range, determinism, truth access."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from encoder.recording import read_recording, write_recording
from encoder.synthetic import (
    CELL_TYPES,
    STIMULUS_KINDS,
    SimulationConfig,
    SimulationConfigError,
    build_retina,
    generate_stimulus,
    retina_from_recording,
    simulate,
)
from encoder.synthetic.simulate import truth_ceiling_pcc

SMALL = SimulationConfig(
    stimulus="pink",
    duration_scale=0.003,
    height=24,
    width=24,
    seed=11,
    n_repeats=2,
    repeat_seconds=1.0,
)


@pytest.fixture(scope="module")
def adapted_retina():  # type: ignore[no-untyped-def]
    retina = build_retina(SMALL)
    rng = np.random.default_rng(0)
    ensemble = generate_stimulus("pink", 1500, 24, 24, 100.0, rng)
    return retina.adapted(retina.drive(ensemble))


def test_every_required_type_tiles_the_field() -> None:
    retina = build_retina(SimulationConfig())
    types = [c.type for c in retina.cells]
    for required in (
        "ON transient",
        "OFF transient",
        "ON sustained",
        "OFF sustained",
        "OFF large fast",
    ):
        assert types.count(required) >= 1
    assert 20 <= retina.n_cells <= 40  # the default recording's population size
    # Each type's centres spread over the field (a mosaic, not a cluster).
    for t in {"ON transient", "OFF transient", "ON sustained", "OFF sustained"}:
        pos = np.array([c.center_px for c in retina.cells if c.type == t])
        assert np.ptp(pos[:, 0]) > 12 and np.ptp(pos[:, 1]) > 12
        d = np.hypot(*(pos[:, None] - pos[None]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        assert d.min() > 4.0  # no two cells of one type on top of each other


def _step_movie(contrast: float) -> np.ndarray:
    """grey 40 frames, then a full-field step to `contrast` for 40 frames (uint8)."""
    movie = np.full((80, 24, 24), 127.5)
    movie[40:] = 127.5 * (1 + contrast)
    return np.clip(np.rint(movie), 0, 255).astype(np.uint8)


def test_on_cells_respond_to_increments_off_cells_to_decrements(adapted_retina) -> None:  # type: ignore[no-untyped-def]
    up = adapted_retina.respond(_step_movie(+0.6))
    down = adapted_retina.respond(_step_movie(-0.6))
    grey = up[30:40]
    on_up, on_down = up[40:55].max(axis=0), down[40:55].max(axis=0)
    for c, cell in enumerate(adapted_retina.cells):
        rest = grey[:, c].mean()
        if cell.polarity > 0:
            assert on_up[c] > rest + 10.0, (cell.id, cell.type, rest, on_up[c])
            assert on_up[c] > on_down[c] + 10.0
            assert down[40:45, c].mean() <= rest + 1e-3  # a decrement silences ON cells
        else:
            assert on_down[c] > rest + 10.0, (cell.id, cell.type, rest, on_down[c])
            assert on_down[c] > on_up[c] + 10.0
            assert up[40:45, c].mean() <= rest + 1e-3


def test_transient_cells_adapt_faster_than_sustained(adapted_retina) -> None:  # type: ignore[no-untyped-def]
    up, down = adapted_retina.respond(_step_movie(+0.6)), adapted_retina.respond(_step_movie(-0.6))
    ratios: dict[str, list[float]] = {}
    for c, cell in enumerate(adapted_retina.cells):
        r = up[:, c] if cell.polarity > 0 else down[:, c]
        rest = r[30:40].mean()
        ratios.setdefault(cell.type, []).append((r[70:80].mean() - rest) / (r[40:55].max() - rest))
    assert max(ratios["ON transient"]) < min(ratios["ON sustained"])
    assert max(ratios["OFF transient"]) < min(ratios["OFF sustained"])


def test_subunits_make_cells_nonlinear(adapted_retina) -> None:  # type: ignore[no-untyped-def]
    """A fine grating and its inverse both excite a cell: a linear centre would cancel.

    Frequency doubling to contrast reversal is the classic signature of rectified subunits
    (an LN model predicts opposite responses to a pattern and its negative).
    """
    retina = adapted_retina
    # Stripes two pixels wide, aligned with the subunit lattice (spacing 2 px): neighbouring
    # subunits see opposite contrast, so the cell's linear (spatially summed) input is ~0.
    spacing = float(np.diff(np.unique(retina.subunit_centers_px[:, 1]))[0])
    assert spacing == 2.0
    cc = np.mgrid[0:24, 0:24][1]
    stripes = np.where((cc // 2) % 2 == 0, 1.0, -1.0)
    for c, cell in enumerate(retina.cells):
        if cell.type != "ON sustained":
            continue
        responses = []
        for sign in (+1, -1):
            movie = np.zeros((60, 24, 24), np.float32)
            movie[30:] = (0.9 * sign * stripes).astype(np.float32)
            responses.append(retina.drive(movie)[30:45, c].max() - retina.drive(movie)[25, c])
        assert min(responses) > 0.2 * max(responses) > 0, (cell.id, responses)


def test_rates_stay_within_the_configured_range() -> None:
    for kind, lo, hi in (("whitenoise", 2.0, 90.0), ("natural", 0.5, 250.0)):
        cfg = replace(SMALL, stimulus=kind, min_rate_hz=lo, max_rate_hz=hi, baseline_rate_hz=6.0)
        rec = simulate(cfg).recording
        assert rec.truth_rates_hz is not None and rec.repeats is not None
        for rates in (rec.truth_rates_hz, rec.repeats.truth_rates_hz):
            assert rates is not None
            assert rates.min() >= lo and rates.max() <= hi
        # Realistic operating point: low baseline, strong peaks well above it.
        assert np.median(rec.truth_rates_hz) < 20.0
        assert np.percentile(rec.truth_rates_hz, 99.9) > 0.5 * hi


def test_same_seed_same_file_and_other_seed_differs(tmp_path: Path) -> None:
    a = write_recording(simulate(SMALL).recording, tmp_path / "a.h5")
    b = write_recording(simulate(SMALL).recording, tmp_path / "b.h5")
    c = write_recording(simulate(replace(SMALL, seed=12)).recording, tmp_path / "c.h5")
    ra, rb, rc = read_recording(a), read_recording(b), read_recording(c)
    for name in ("stimulus", "responses", "truth_rates_hz"):
        np.testing.assert_array_equal(getattr(ra, name), getattr(rb, name))
    assert ra.repeats is not None and rb.repeats is not None
    np.testing.assert_array_equal(ra.repeats.responses, rb.repeats.responses)
    assert ra.cells.ids == rb.cells.ids and ra.cells.types == rb.cells.types
    np.testing.assert_array_equal(ra.cells.center_deg, rb.cells.center_deg)
    assert not np.array_equal(ra.stimulus, rc.stimulus)
    assert not np.array_equal(ra.cells.center_deg, rc.cells.center_deg)


def test_retina_does_not_depend_on_the_stimulus() -> None:
    a = build_retina(replace(SMALL, stimulus="bars"))
    b = build_retina(replace(SMALL, stimulus="gratings"))
    assert [c.center_px for c in a.cells] == [c.center_px for c in b.cells]


def test_splits_repeats_and_truth_follow_the_config() -> None:
    sim = simulate(SMALL)
    rec = sim.recording
    frames = SMALL.split_frames()
    assert frames["train"] / frames["val"] == pytest.approx(50 / 7, rel=0.01)
    for name in ("train", "val", "test"):
        assert rec.split_frames(name) == frames[name]
    assert rec.n_frames == sum(frames.values())
    assert rec.repeats is not None and rec.repeats.responses.shape == (2, 100, rec.n_cells)
    assert rec.cells.types == tuple(c.type for c in sim.retina.cells)
    # The truth is the retina itself: rebuilding it from the file reproduces the truth rates.
    rebuilt = retina_from_recording(rec)
    assert rec.repeats.truth_rates_hz is not None
    np.testing.assert_allclose(
        rebuilt.respond(rec.repeats.stimulus), rec.repeats.truth_rates_hz, rtol=1e-4, atol=1e-3
    )
    maps, weights = rebuilt.subunit_filters(0)
    assert maps.shape == (len(weights), 24, 24) and weights.sum() == pytest.approx(1.0, abs=1e-5)
    # Subunits sit inside the cell's centre.
    cy, cx = rebuilt.cells[0].center_px
    peaks = np.array([np.unravel_index(m.argmax(), m.shape) for m in maps])
    assert (
        np.hypot(peaks[:, 0] - cy, peaks[:, 1] - cx).max()
        <= 2.5 * rebuilt.cells[0].center_sigma_px + 1.5
    )


def test_ceiling_of_trial_average_is_high_on_the_default_rates() -> None:
    cfg = replace(SMALL, stimulus="natural", n_repeats=10, repeat_seconds=4.0)
    rec = simulate(cfg).recording
    assert np.nanmean(truth_ceiling_pcc(rec, 25)) > 0.8


@pytest.mark.parametrize("kind", STIMULUS_KINDS)
def test_every_stimulus_kind(kind: str) -> None:
    rng = np.random.default_rng(5)
    movie = generate_stimulus(kind, 300, 20, 24, 100.0, rng)
    assert movie.shape == (300, 20, 24) and movie.dtype == np.uint8
    assert movie.std() > 10  # not blank
    again = generate_stimulus(kind, 300, 20, 24, 100.0, np.random.default_rng(5))
    np.testing.assert_array_equal(movie, again)


def test_stimulus_statistics() -> None:
    rng = np.random.default_rng(0)
    wn = generate_stimulus("whitenoise", 200, 16, 16, 100.0, rng)
    assert set(np.unique(wn).tolist()) == {0, 255}
    assert abs(np.corrcoef(wn[:-1].ravel(), wn[1:].ravel())[0, 1]) < 0.05
    pink = generate_stimulus("pink", 2000, 32, 32, 120.0, rng).astype(np.float64)
    power = np.abs(np.fft.fft2(pink - pink.mean(), axes=(1, 2))) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32), indexing="ij"))
    low, high = power[:, (f > 0.04) & (f < 0.08)].mean(), power[:, (f > 0.3) & (f < 0.45)].mean()
    assert low > 10 * high  # 1/f: far more power at low spatial frequencies
    lag1 = np.corrcoef(pink[:-1, 16, 16], pink[1:, 16, 16])[0, 1]
    assert lag1 > 0.5  # temporally correlated, unlike white noise
    nat = generate_stimulus("natural", 600, 32, 32, 100.0, rng).astype(np.float64)
    steps = np.abs(np.diff(nat, axis=0)).mean(axis=(1, 2))
    # Fixational drift: mostly small frame-to-frame changes, punctuated by saccade jumps.
    assert np.median(steps) < 0.25 * steps.max()
    assert (steps > 5 * np.median(steps)).sum() >= 3


def test_bad_configs_are_refused() -> None:
    with pytest.raises(SimulationConfigError, match="stimulus"):
        SimulationConfig(stimulus="movie")
    with pytest.raises(SimulationConfigError, match="baseline_rate_hz"):
        SimulationConfig(min_rate_hz=50.0, baseline_rate_hz=10.0)
    with pytest.raises(SimulationConfigError, match="duration_scale"):
        SimulationConfig(duration_scale=-1.0)
    assert len(CELL_TYPES) == 5


def test_repeat_clip_shows_only_scenes_held_out_of_training() -> None:
    """The repeated clip's natural images never appear in the train/val/test movie, so the
    repeat figures measure generalisation to novel scenes."""
    from encoder.synthetic.stimuli import HELD_OUT_SCENES, TRAINING_SCENES, plan_fixations

    assert HELD_OUT_SCENES and TRAINING_SCENES
    assert not set(HELD_OUT_SCENES) & set(TRAINING_SCENES)
    for pool in (HELD_OUT_SCENES, TRAINING_SCENES):
        fixations = plan_fixations(20000, np.random.default_rng(0), 100.0, scenes=pool)
        assert {image for _, _, image in fixations} == set(pool)  # all used, nothing else
    with pytest.raises(ValueError, match="scenes"):
        plan_fixations(10, np.random.default_rng(0), 100.0, scenes=(99,))
    # the simulator draws its repeat clip from the held-out pool, its main movie from the rest
    from encoder.synthetic.simulate import _REPEAT_STIM, _rng

    cfg = replace(SMALL, stimulus="natural")
    sim = simulate(cfg)
    assert sim.recording.repeats is not None
    again = generate_stimulus(
        "natural",
        cfg.repeat_frames,
        cfg.height,
        cfg.width,
        cfg.frame_rate_hz,
        _rng(cfg, _REPEAT_STIM),
        scenes=HELD_OUT_SCENES,
    )
    np.testing.assert_array_equal(sim.recording.repeats.stimulus, again)
    unrestricted = generate_stimulus(
        "natural",
        cfg.repeat_frames,
        cfg.height,
        cfg.width,
        cfg.frame_rate_hz,
        _rng(cfg, _REPEAT_STIM),
    )
    assert not np.array_equal(unrestricted, again)
