"""Property tests (hypothesis) for the pure functions: what must hold for every input, not a few."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.measure import label as connected_components

import napari_clipseg as ncs
from napari_clipseg.io.export import read_array, write_array
from napari_clipseg.segmentation.postprocess import labels_from_probabilities
from napari_clipseg.segmentation.tiling import Stitcher, tile_boxes
from napari_clipseg.segmentation.transforms import intensity_range, normalize_intensity
from napari_clipseg.segmentation.visual import crop_box

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = [np.bool_, np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64]
shapes = st.tuples(st.integers(1, 24), st.integers(1, 24))


@st.composite
def images(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    elements = None
    if dtype.kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=dtype.itemsize * 8)
    return draw(arrays(dtype, draw(shapes), elements=elements))


@FAST
@given(images())
def test_intensities_of_any_dtype_become_finite_values_in_unit_range(image):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # float64 beyond float32's range is handled, not overflowed
        out = normalize_intensity(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.isfinite(out).all() and out.min(initial=0) >= 0 and out.max(initial=0) <= 1


def test_float64_beyond_float32_saturates_instead_of_overflowing():
    image = np.array([[1e300, -1e300, 1.0], [np.inf, np.nan, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = normalize_intensity(image, value_range=(-1e300, 1e300))
    np.testing.assert_array_equal(out[0, :2], [1.0, 0.0])  # the largest value is the top of the range
    assert np.isfinite(out).all() and (out[1, :2] == 0).all()  # inf and NaN count as missing


@FAST
@given(st.sampled_from(DTYPES), shapes, st.integers(0, 200))
def test_a_constant_image_stays_constant(dtype, shape, value):
    image = np.full(shape, value).astype(dtype)
    out = normalize_intensity(image)
    assert np.all(out == out.flat[0])


@FAST
@given(images())
def test_one_range_for_a_whole_image_scales_its_parts_alike(image):
    value_range = intensity_range(image)
    whole = normalize_intensity(image, value_range=value_range)
    part = normalize_intensity(image[: max(1, image.shape[0] // 2)], value_range=value_range)
    np.testing.assert_array_equal(part, whole[: part.shape[0]])


@FAST
@given(st.integers(1, 1500), st.integers(1, 1500), st.integers(8, 400), st.data())
def test_tiles_cover_every_pixel_inside_the_image_with_the_overlap(height, width, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    boxes = tile_boxes((height, width), tile, overlap)
    rows = sorted({(y0, y1) for y0, y1, _, _ in boxes})
    cols = sorted({(x0, x1) for _, _, x0, x1 in boxes})
    for spans, size in ((rows, height), (cols, width)):
        assert spans[0][0] == 0 and spans[-1][1] == size  # covered from edge to edge ...
        assert all(0 <= a < b <= size and b - a == min(tile, size) for a, b in spans)  # ... by full tiles inside
        assert all(nxt[0] <= end - overlap for (_, end), nxt in itertools.pairwise(spans))
    assert len(boxes) == len(rows) * len(cols)


@FAST
@given(st.integers(20, 300), st.integers(20, 300), st.integers(16, 120), st.data())
def test_stitching_reproduces_constant_and_linear_fields_exactly(height, width, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    a, b, c = data.draw(st.tuples(*[st.floats(-2, 2)] * 3))
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    field = (a * yy / height + b * xx / width + c).astype(np.float32)
    stitcher = Stitcher(1, (height, width), ramp=overlap)
    for y0, y1, x0, x1 in tile_boxes((height, width), tile, overlap):
        stitcher.add((y0, y1, x0, x1), field[None, y0:y1, x0:x1])
    np.testing.assert_allclose(stitcher.result()[0], field, rtol=1e-5, atol=1e-5)  # float32 sums


probabilities = st.integers(1, 4).flatmap(lambda n: arrays(np.float32, (n, 12, 12), elements=st.floats(0, 1, width=32)))


@FAST
@given(probabilities, st.floats(0, 1))
def test_a_label_is_the_best_prompt_above_its_threshold(probs, threshold):
    labels = labels_from_probabilities(probs, threshold)
    above = probs >= np.float32(threshold)
    assert np.array_equal(labels == 0, ~above.any(axis=0))
    chosen = np.take_along_axis(probs, np.maximum(labels.astype(int) - 1, 0)[None], 0)[0]
    best = np.where(above, probs, -1).max(axis=0)
    assert np.all(chosen[labels > 0] == best[labels > 0])


@FAST
@given(probabilities, st.floats(0, 1), st.integers(0, 30))
def test_min_size_leaves_no_smaller_component(probs, threshold, min_size):
    labels = labels_from_probabilities(probs, threshold, min_size)
    kept = labels_from_probabilities(probs, threshold)
    assert np.all((labels == kept) | (labels == 0))  # only removes
    for value in np.unique(labels[labels > 0]):
        sizes = np.bincount(connected_components(labels == value, connectivity=2).ravel())[1:]
        assert sizes.min() >= min_size


@FAST
@given(st.integers(4, 80), st.integers(4, 80), st.data())
def test_crop_box_holds_the_region_plus_context_inside_the_image(height, width, data):
    y0 = data.draw(st.integers(0, height - 1))
    x0 = data.draw(st.integers(0, width - 1))
    y1 = data.draw(st.integers(y0 + 1, height))
    x1 = data.draw(st.integers(x0 + 1, width))
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    by0, by1, bx0, bx1 = crop_box(mask)
    assert 0 <= by0 <= y0 < y1 <= by1 <= height and 0 <= bx0 <= x0 < x1 <= bx1 <= width
    assert y0 - by0 <= 0.1 * (y1 - y0) + 1 and by1 - y1 <= 0.1 * (y1 - y0) + 1


@FAST
@given(
    st.sampled_from([".tif", ".npy", ".png"]),
    st.sampled_from([np.uint8, np.uint16, np.uint32, np.float32]),
    shapes,
    st.data(),
)
def test_arrays_round_trip_through_every_format(tmp_path_factory, suffix, dtype, shape, data):
    assume(not (suffix == ".png" and dtype in (np.uint32, np.float32)))
    array = data.draw(
        arrays(dtype, shape, elements=st.integers(0, 255) if dtype != np.float32 else st.floats(0, 1, width=32))
    )
    path = tmp_path_factory.mktemp("roundtrip") / f"a{suffix}"
    write_array(path, array)
    back = read_array(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_png_refuses_what_it_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=r"use \.tif"):
        write_array(tmp_path / "p.png", np.zeros((4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []


names = st.lists(st.text(min_size=1, max_size=12).filter(str.strip), min_size=1, max_size=5, unique=True)
options = st.builds(
    ncs.SegmentOptions,
    mode=st.sampled_from(["auto", "whole", "tiled", "both"]),
    overlap=st.integers(0, 351),
    batch_size=st.integers(1, 16),
    rgb=st.sampled_from([None, True, False]),
    channels=st.one_of(st.none(), st.tuples(*[st.integers(-1, 5)] * 3)),
    intensity=st.one_of(st.none(), st.tuples(st.floats(-1e6, 0), st.floats(1, 1e6))),
    planes=st.one_of(st.none(), st.lists(st.tuples(st.integers(0, 9)), min_size=1, max_size=3)),
    threshold=st.one_of(st.floats(0, 1), st.lists(st.floats(0, 1), min_size=1, max_size=4)),
    min_size=st.integers(0, 10_000),
)


@FAST
@given(names, options)
def test_records_and_options_round_trip_through_a_file(tmp_path_factory, classes, run_options):
    assert ncs.SegmentOptions.from_dict(run_options.to_dict()) == run_options
    record = ncs.build_record(classes, options=run_options, image={"name": "x", "shape": [3, 4]}, edited=True)
    path = ncs.write_record(tmp_path_factory.mktemp("record") / "r.json", record)
    back = ncs.read_record(path)
    assert [c["name"] for c in back["classes"]] == classes and back["edited"] is True
    assert ncs.SegmentOptions.from_dict(back["options"]) == run_options


_PART = st.sampled_from(["a", "b", "a.b", "..", ".", "", "c d", "x\\y"])


@FAST
@given(st.lists(st.lists(_PART, min_size=1, max_size=3).map("/".join), min_size=1, max_size=6, unique=True))
def test_accepted_project_names_never_escape_nor_share_a_folder(names):
    """Whatever names a folder of images (or an edited manifest) gives, the ones a project accepts
    are plain relative paths, and no image's folder holds another's (verifying one never replaces
    another's labels); the ones it refuses are refused with a ProjectError, never anything else."""
    from pathlib import PurePosixPath

    from napari_clipseg.errors import ProjectError
    from napari_clipseg.project.folder import check_names

    try:
        check_names(names, "test")
    except ProjectError:
        bad = any(p in ("", ".", "..") or "\\" in p for n in names for p in n.split("/"))
        nested = any(other != name and other.startswith(name + "/") for name in names for other in names)
        assert bad or nested
        return
    root = PurePosixPath("/project/verified")
    folders = [root / name for name in names]
    for folder in folders:
        assert root in folder.parents and ".." not in folder.parts
        assert not any(other != folder and folder in other.parents for other in folders)
