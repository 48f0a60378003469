"""Phosphene preview: positions match the retinotopic map (and the calibration), size follows
the current, temporal dynamics, and agreement with pulse2percept when it is installed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import maximum_filter

from hardware.calibration_file import ElectrodeCalibration, PatientCalibration
from hardware.phosphene_preview import TAU_MS, PhospheneRenderer, phosphene_diameter_deg
from hardware.retinotopy import DEFAULT_MAP, WedgeDipoleMap


def peaks(img, xs, ys, size=5, rel=0.3):
    """(x, y) degrees of the local maxima of img [H, W] (rows: ys, cols: xs)."""
    m = (img == maximum_filter(img, size=size)) & (img > img.max() * rel)
    r, c = np.nonzero(m)
    return np.stack([xs[c], ys[r]], axis=1)


def match(points, targets):
    """Distance from each target to its nearest point."""
    d = np.hypot(*(targets[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    return d.min(axis=1)


def single(utah, make_frame, i, amp=60.0):
    a = np.zeros(utah.n)
    a[i] = amp
    return make_frame(utah, amp=a)


def test_wedge_dipole_round_trip_and_magnification():
    m = WedgeDipoleMap()
    rng = np.random.default_rng(0)
    xy = rng.uniform(-40, 40, (200, 2))
    mm, hemi = m.to_cortex(xy)
    np.testing.assert_allclose(m.to_visual(mm, hemi), xy, atol=1e-9)
    assert np.all(mm[:, 0] >= 0)
    # Magnification: the numerical derivative along the horizontal meridian.
    r = np.array([1.0, 5.0, 20.0])
    eps = 1e-5
    num = (
        m.to_cortex(np.c_[r + eps, 0 * r])[0][:, 0] - m.to_cortex(np.c_[r, 0 * r])[0][:, 0]
    ) / eps
    np.testing.assert_allclose(m.magnification(r), num, rtol=1e-4)
    with pytest.raises(ValueError, match="wedge-dipole"):
        WedgeDipoleMap(a=200.0)


def test_preview_positions_match_the_map(utah, make_frame):
    r = PhospheneRenderer(utah, None, size_px=256, tau_ms=0)
    expected = utah.phosphene_positions_deg(DEFAULT_MAP)
    px_deg = (r.field_deg[1] - r.field_deg[0]) / r.size_px
    for i in (0, 11, 47, 95):
        img = r.render(single(utah, make_frame, i))
        row, col = np.unravel_index(np.argmax(img), img.shape)
        assert abs(r.xs_deg[col] - expected[i, 0]) <= px_deg
        assert abs(r.ys_deg[row] - expected[i, 1]) <= px_deg
        np.testing.assert_allclose(r.pixel_of(expected[i : i + 1])[0], [row, col], atol=0.5 + 1e-9)
    # The grid of 96 phosphenes keeps the array's topology: neighbours on cortex are
    # neighbours in the visual field (400 µm ≈ 0.1° at ~3.6° eccentricity).
    d = np.hypot(*(expected[:, None] - expected[None]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    spacing = d.min(axis=1)
    mag = DEFAULT_MAP.magnification(np.hypot(*utah.placement_deg))
    np.testing.assert_allclose(spacing, 0.4 / mag, rtol=0.25)


def test_calibrated_positions_override_the_map(utah, make_frame):
    cal = PatientCalibration(
        version=1,
        patient_id="p1",
        arrays=("utah96",),
        electrodes=(
            ElectrodeCalibration(
                electrode_id=utah.electrode_ids[5],
                threshold_ua=20,
                max_comfortable_ua=80,
                phosphene_deg=(4.0, 3.0),
            ),
            ElectrodeCalibration(
                electrode_id=utah.electrode_ids[6],
                threshold_ua=20,
                max_comfortable_ua=80,
                phosphene_deg=(-6.0, -1.0),
            ),
        ),
    )
    r = PhospheneRenderer(utah, cal, size_px=200, tau_ms=0, field_deg=(-10, 10, -10, 10))
    img = r.render(single(utah, make_frame, 5))
    row, col = np.unravel_index(np.argmax(img), img.shape)
    assert abs(r.xs_deg[col] - 4.0) <= 0.1 and abs(r.ys_deg[row] - 3.0) <= 0.1
    # Below the calibrated threshold: no phosphene at all.
    assert r.render(single(utah, make_frame, 5, amp=15.0)).max() == 0.0


def test_size_grows_with_current_and_brightness_with_curve(utah, make_frame):
    ecc = np.array([3.6, 3.6])
    d = phosphene_diameter_deg(np.array([25.0, 100.0]), ecc)
    assert d[1] == pytest.approx(2 * d[0])  # D ∝ √I
    assert d[0] == pytest.approx(2 * np.sqrt(25 / 675) / DEFAULT_MAP.magnification(3.6))
    r = PhospheneRenderer(utah, None, size_px=256, tau_ms=0)
    weak = r.render(single(utah, make_frame, 40, amp=30.0))
    strong = r.render(single(utah, make_frame, 40, amp=90.0))
    assert strong.max() > weak.max() > 0
    assert (strong > 0.05 * strong.max()).sum() > (weak > 0.05 * strong.max()).sum()


def test_temporal_dynamics(utah, make_frame):
    r = PhospheneRenderer(utah, None, size_px=64, frame_ms=10.0)
    frame = single(utah, make_frame, 40, amp=90.0)
    target = r.targets(frame)[0][40]
    levels = []
    for _ in range(200):
        r.render(frame)
        levels.append(float(r.state[40]))
    alpha = 1 - np.exp(-10.0 / TAU_MS)
    assert levels[0] == pytest.approx(alpha * target)
    n_tau = round(TAU_MS / 10.0)
    assert levels[n_tau - 1] == pytest.approx(target * (1 - np.exp(-n_tau * 10.0 / TAU_MS)))
    assert levels[-1] == pytest.approx(target, rel=1e-6)
    off = single(utah, make_frame, 40, amp=0.0)
    r.render(off)
    assert r.state[40] == pytest.approx(target * (1 - alpha))
    assert r.render(off).max() > 0  # fades, does not vanish at once


def test_agrees_with_pulse2percept_positions(utah, make_frame):
    pytest.importorskip("pulse2percept")
    from pulse2percept.implants import DiskElectrode, Implant
    from pulse2percept.implants import ElectrodeArray as P2PArray
    from pulse2percept.models.cortex import ScoreboardModel
    from pulse2percept.topography.cortex import Polimeni2006Map

    m = DEFAULT_MAP
    ph = utah.phosphene_positions_deg(m)
    vf = Polimeni2006Map(k=m.k, a=m.a, b=m.b, alpha1=m.alpha)
    cx, cy = vf.dva_to_v1(ph[:, 0].copy(), ph[:, 1].copy())
    # Same map: pulse2percept puts our electrodes back 400 µm apart on its cortex.
    c = np.stack([cx, cy], axis=1).astype(np.float64)
    d = np.hypot(*(c[:, None] - c[None]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(d.min(axis=1), 400.0, atol=0.5)

    implant = Implant(
        P2PArray(
            {
                e: DiskElectrode(x, y, 0, 50)
                for e, x, y in zip(utah.electrode_ids, cx, cy, strict=True)
            }
        )
    )
    lo = ph.min(axis=0) - 0.3
    side = float((ph.max(axis=0) + 0.3 - lo).max())
    hi = lo + side
    step = 0.01
    model = ScoreboardModel(
        implant,
        rho=200,
        xrange=(lo[0], hi[0]),
        yrange=(lo[1], hi[1]),
        step=step,
        visual_field_map=vf,
        verbose=False,
    ).build()
    ours = PhospheneRenderer(
        utah,
        None,
        size_px=round(side / step),
        field_deg=(lo[0], hi[0], lo[1], hi[1]),
        tau_ms=0,
    )
    rows = np.round((utah.positions_mm[:, 1] + 1.8) / 0.4).astype(int)
    cols = np.round((utah.positions_mm[:, 0] + 1.8) / 0.4).astype(int)
    worst = 0.0
    for parity in ((0, 0), (0, 1), (1, 0), (1, 1)):  # every other electrode: separate blobs
        on = (rows % 2 == parity[0]) & (cols % 2 == parity[1])
        stim = {e: float(v) for e, v in zip(utah.electrode_ids, on, strict=True)}
        percept = model.predict_percept(stim)
        # pulse2percept's image rows run from the top (largest y) down, like ours.
        p2p_peaks = peaks(percept.data[:, :, 0], percept.xdva, percept.ydva[::-1])
        mine = ours.render(make_frame(utah, amp=np.where(on, 60.0, 0.0)))
        our_peaks = peaks(mine, ours.xs_deg, ours.ys_deg)
        assert len(p2p_peaks) == len(our_peaks) == on.sum(), (len(p2p_peaks), len(our_peaks))
        worst = max(worst, match(p2p_peaks, ph[on]).max(), match(our_peaks, p2p_peaks).max())
    # Positions agree to within the sampling grid (neighbouring blobs 0.2° apart shift a
    # sampled maximum by up to a pixel or so).
    assert worst <= 2.0 * step
