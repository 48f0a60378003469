"""Preprocessing: field-of-view crop, contrast convention, refusal, buffer reuse."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

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
