"""Intensity scaling and channel handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_clipseg.constants import IMAGENET_MEAN, IMAGENET_STD
from napari_clipseg.segmentation.transforms import normalize_intensity, to_model_input, to_rgb_float


def test_uint8_divides_by_255_and_bool_maps_to_01():
    np.testing.assert_array_equal(normalize_intensity(np.array([0, 51, 255], np.uint8)), np.float32([0, 0.2, 1]))
    np.testing.assert_array_equal(normalize_intensity(np.array([True, False])), [1, 0])


def test_float_in_unit_range_is_kept():
    x = np.array([0.0, 0.25, 1.0], np.float32)
    np.testing.assert_array_equal(normalize_intensity(x), x)


def test_uint16_is_stretched_between_percentiles():
    x = np.arange(1001, dtype=np.uint16) * 60
    out = normalize_intensity(x, (1, 99))
    lo, hi = np.percentile(x.astype(np.float32), (1, 99))
    np.testing.assert_allclose(out, np.clip((x - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert out.min() == 0 and out.max() == 1


def test_constant_nan_and_inf():
    assert not normalize_intensity(np.full((4, 4), 7, np.uint16)).any()
    x = np.array([np.nan, 1.0, 5.0, np.inf, -np.inf, 3.0])
    out = normalize_intensity(x, (0, 100))
    assert np.isfinite(out).all() and out[0] == 0 and out[3] == 0
    np.testing.assert_allclose(out[[1, 2, 5]], [0, 1, 0.5])
    assert not normalize_intensity(np.full(5, np.nan)).any()


def test_channels_to_rgb():
    grey = np.random.default_rng(0).integers(0, 255, (20, 30), dtype=np.uint8)
    rgb = to_rgb_float(grey)
    assert rgb.shape == (20, 30, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
    two = to_rgb_float(np.stack([grey, grey // 2], -1))
    assert np.all(two[..., 2] == 0) and np.allclose(two[..., 1], (grey // 2) / 255)
    rgba = np.dstack([grey, grey, grey, np.zeros_like(grey)])
    np.testing.assert_array_equal(to_rgb_float(rgba), rgb)
    five = np.stack([np.full((20, 20), 10 * i, np.uint16) for i in range(5)], -1)
    with pytest.raises(ValueError, match=r"\(20, 20, 5\) is ambiguous.*channels=\(r, g, b\)"):
        to_rgb_float(five, value_range=(0, 40))  # five channels: never silently the first three
    chosen = to_rgb_float(five, value_range=(0, 40), channels=(4, -1, 1))
    np.testing.assert_allclose(chosen[0, 0], [1, 0, 0.25])
    with pytest.raises(ValueError, match="channels"):
        to_rgb_float(five, channels=(0, 5, 1))
    uint16_rgba = np.stack([np.full((20, 20), v, np.uint16) for v in (0, 100, 200, 300)], -1)
    np.testing.assert_allclose(to_rgb_float(uint16_rgba, value_range=(0, 300))[0, 0], [0, 1 / 3, 2 / 3], atol=1e-6)


def test_one_value_range_for_a_whole_image_and_its_parts():
    from napari_clipseg.segmentation.transforms import intensity_range

    image = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)
    lo, hi = intensity_range(image, (0, 100))
    assert (lo, hi) == (0, 9999)
    part = normalize_intensity(image[:10, :10], value_range=(lo, hi))
    np.testing.assert_allclose(part, image[:10, :10] / 9999, atol=1e-6)  # not stretched on its own
    assert intensity_range(np.zeros((4, 4), np.uint8)) is None and intensity_range(np.ones((4, 4)) / 2) is None


def test_percentiles_of_a_lazy_image_are_sampled_not_loaded():
    import dask.array as da

    from napari_clipseg.segmentation.transforms import PERCENTILE_SAMPLE, intensity_range

    lazy = da.random.default_rng(0).integers(0, 60000, (4000, 4000), chunks=1000).astype(np.uint16)
    lo, hi = intensity_range(lazy)
    assert 0 <= lo < 1000 and 59000 < hi <= 60000
    assert lazy.size > 3 * PERCENTILE_SAMPLE


def test_model_input_is_imagenet_normalised_352():
    pixels = to_model_input(np.full((50, 70, 3), 255, np.uint8))
    assert pixels.shape == (1, 3, 352, 352)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(pixels[0, :, 10, 10], expected, atol=1e-6)
