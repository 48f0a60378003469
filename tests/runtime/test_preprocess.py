"""Preprocessing: field-of-view crop, contrast convention, refusal, buffer reuse."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.preprocess import PreprocessError, Preprocessor, crop_box
from runtime.spec import ModelSpec


def test_crop_box_follows_pinhole_geometry() -> None:
    # 640 px over 90°: f = 320 px; a 45°-wide field spans 2·320·tan(22.5°) ≈ 265 px.
    b = crop_box(640, 480, 90.0, 45.0, 30.0)
    assert b.w == round(640 * math.tan(math.radians(22.5)))
    assert b.h == round(640 * math.tan(math.radians(15.0)))
    assert b.x0 == (640 - b.w) // 2 and b.y0 == (480 - b.h) // 2


def test_field_wider_than_camera_is_refused_with_reason() -> None:
    with pytest.raises(PreprocessError, match="wider than the camera"):
        crop_box(320, 240, 20.0, 30.0, 10.0)


def test_contrast_convention_and_crop(toy_spec: ModelSpec) -> None:
    # Model field: 24 px × 0.5° = 12°. Camera 400×300 covering 40°: centre patch is the field.
    pre = Preprocessor(toy_spec, camera_fov_deg=40.0)
    img = np.full((300, 400, 3), 0, np.uint8)  # black surround
    box = crop_box(400, 300, 40.0, 12.0, 12.0)
    img[box.y0 : box.y0 + box.h, box.x0 : box.x0 + box.w] = 200  # uniform grey 200 in the field
    out = pre(img)
    assert out.shape == (24, 24) and out.dtype == np.float32
    np.testing.assert_allclose(out, (200 - 127.5) / 127.5, atol=1e-6)  # surround cropped away


def test_bgr_is_converted_with_opencv_luma(toy_spec: ModelSpec) -> None:
    pre = Preprocessor(toy_spec, camera_fov_deg=12.0)
    img = np.zeros((24, 24, 3), np.uint8)
    img[..., 2] = 255  # pure red in BGR
    luma = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[0, 0]
    np.testing.assert_allclose(pre(img), (luma - 127.5) / 127.5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    size=st.sampled_from([(120, 160), (240, 320), (480, 640), (97, 131)]),
    fov=st.floats(13.0, 120.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_colour_frames_give_exactly_what_converting_the_whole_frame_gives(
    toy_spec: ModelSpec, size: tuple[int, int], fov: float, seed: int
) -> None:
    """The crop is converted to grey instead of the whole frame: same bytes as the
    whole-frame conversion, then the crop, then the same resize and contrast table."""
    pre = Preprocessor(toy_spec, camera_fov_deg=fov)
    h, w = size
    frame = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    try:
        out = pre(frame).copy()
    except PreprocessError:  # the model's field is wider than this camera's: not this test
        return
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    b = crop_box(w, h, fov, *toy_spec.field_deg)
    resized = cv2.resize(
        gray[b.y0 : b.y0 + b.h, b.x0 : b.x0 + b.w],
        (toy_spec.width, toy_spec.height),
        interpolation=cv2.INTER_AREA,
    )
    expected = pre.contrast_table[resized]
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))
    single = pre(frame[:, :, :1]).copy()  # one channel: its values are the luma
    resized1 = cv2.resize(
        np.ascontiguousarray(frame[b.y0 : b.y0 + b.h, b.x0 : b.x0 + b.w, 0]),
        (toy_spec.width, toy_spec.height),
        interpolation=cv2.INTER_AREA,
    )
    assert np.array_equal(single, pre.contrast_table[resized1])


def test_output_is_clipped_and_buffers_are_reused(toy_spec: ModelSpec) -> None:
    pre = Preprocessor(toy_spec, camera_fov_deg=30.0)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 120, 160), dtype=np.uint8)
    first = pre(frames[0])
    for f in frames[1:]:
        assert pre(f) is first  # same preallocated buffer every frame
    assert pre.reconfigurations == 1
    assert first.min() >= -1.0 and first.max() <= 1.0


def test_bad_frame_type_is_refused(toy_spec: ModelSpec) -> None:
    pre = Preprocessor(toy_spec, camera_fov_deg=30.0)
    with pytest.raises(PreprocessError, match="uint8"):
        pre(np.zeros((10, 10), np.float32))  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    offset=st.floats(-50.0, 300.0, allow_nan=False),
    scale=st.floats(0.5, 400.0, allow_nan=False),
    clip=st.tuples(st.floats(-3.0, 0.0), st.floats(0.0, 3.0)),
    seed=st.integers(0, 2**32 - 1),
)
def test_contrast_table_is_bit_identical_to_the_elementwise_formula(
    toy_spec: ModelSpec, offset: float, scale: float, clip: tuple[float, float], seed: int
) -> None:
    # The live path maps the resized uint8 image through a 256-entry table (one cv2.LUT);
    # it must give exactly what (L - offset) / scale, clipped, gives element by element.
    spec = dataclasses.replace(toy_spec, contrast_offset=offset, contrast_scale=scale, clip=clip)
    pre = Preprocessor(spec, camera_fov_deg=30.0)
    frame = np.random.default_rng(seed).integers(0, 256, (90, 120), dtype=np.uint8)
    out = pre(frame).copy()
    resized = pre._resized  # the uint8 image the table was applied to
    expected = np.empty(resized.shape, np.float32)
    np.subtract(resized, np.float32(offset), out=expected, dtype=np.float32)
    np.multiply(expected, np.float32(1.0 / scale), out=expected)
    np.clip(expected, clip[0], clip[1], out=expected)
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))


def test_wrong_output_buffer_is_refused(toy_spec: ModelSpec) -> None:
    pre = Preprocessor(toy_spec, camera_fov_deg=30.0)
    frame = np.zeros((90, 120), np.uint8)
    with pytest.raises(PreprocessError, match="output buffer"):
        pre(frame, out=np.zeros((24, 24), np.float64))
