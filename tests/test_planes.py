"""Tiling, stacks, lazy data and the feature cache."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

import napari_clipseg as ncs
from napari_clipseg import planes as planes_module
from napari_clipseg.planes import FeatureCache, choose_mode, iter_plane_logits, iter_segment_nd
from napari_clipseg.tiling import Stitcher, blend_weights, tile_boxes


@pytest.mark.parametrize("shape", [(1000, 777), (352, 352), (100, 2000), (353, 704)])
@pytest.mark.parametrize("overlap", [0, 44, 100])
def test_tiles_cover_every_pixel_with_the_stated_overlap(shape, overlap):
    boxes = tile_boxes(shape, 352, overlap)
    covered = np.zeros(shape, int)
    for y0, y1, x0, x1 in boxes:
        assert 0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]
        assert (y1 - y0, x1 - x0) == (min(352, shape[0]), min(352, shape[1]))
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    for axis in (0, 1):  # neighbours along each axis overlap by at least `overlap`
        starts = sorted({b[2 * axis] for b in boxes})
        ends = sorted({b[2 * axis + 1] for b in boxes})
        assert all(end - nxt >= overlap for end, nxt in zip(ends[:-1], starts[1:], strict=True))


def test_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(ValueError, match="overlap"):
        tile_boxes((1000, 1000), 352, 352)


@pytest.mark.parametrize("field", ["constant", "linear"])
def test_stitching_reproduces_fields_the_tiles_agree_on(field):
    shape = (900, 1300)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    values = np.full(shape, 3.5, np.float32) if field == "constant" else 0.01 * yy - 0.02 * xx + 1
    stitcher = Stitcher(1, shape, ramp=44)
    for y0, y1, x0, x1 in tile_boxes(shape, 352, 44):
        stitcher.add((y0, y1, x0, x1), values[None, y0:y1, x0:x1])
    np.testing.assert_allclose(stitcher.result()[0], values, rtol=1e-5, atol=1e-5)


def test_blend_weights_are_positive_and_smooth():
    w = blend_weights(352, 352, 44)
    assert w.min() > 0 and w.max() == 1 and w[176, 176] == 1 and w[0, 0] < w[10, 10]


def test_auto_mode_by_size():
    assert choose_mode((700, 500)) == "whole" and choose_mode((705, 100)) == "both"
    with pytest.raises(ValueError, match="unknown mode"):
        choose_mode((10, 10), "sliced")


def test_tiled_equals_untiled_on_an_image_of_one_tile(tiny_model, rng):
    image = rng.random((352, 352, 3)).astype(np.float32)
    predictor = ncs.ClipSegPredictor(tiny_model)
    tiled = ncs.run(iter_segment_nd(image, ["a cat", "sky"], predictor, rgb=True, mode="tiled"))
    predictor.set_image(image)
    np.testing.assert_allclose(tiled.probabilities, predictor.predict(["a cat", "sky"]), atol=1e-6)


def test_both_is_the_average_of_whole_and_tiled_logits(tiny_model, rng):
    image = rng.random((500, 800)).astype(np.float32)
    predictor = ncs.ClipSegPredictor(tiny_model)
    conditionals = predictor.embed_prompts(["a", "b"])
    logits = {
        m: ncs.run(iter_plane_logits(image, conditionals, predictor, mode=m, value_range=None))
        for m in ("whole", "tiled", "both")
    }
    np.testing.assert_allclose(logits["both"], (logits["whole"] + logits["tiled"]) / 2, atol=1e-5)
    assert not np.allclose(logits["whole"], logits["tiled"], atol=1e-3)


def test_stack_equals_per_plane_results_and_dask_equals_numpy(tiny_model, rng):
    stack = rng.random((3, 64, 80)).astype(np.float32)  # in [0, 1]: every plane is scaled alike
    predictor = ncs.ClipSegPredictor(tiny_model)
    result = ncs.run(iter_segment_nd(stack, ["cell", "nucleus"], predictor, batch=2, threshold=0.45))
    assert result.labels.shape == (3, 64, 80) and result.probabilities.shape == (2, 3, 64, 80)
    for z in range(3):
        predictor.set_image(stack[z])
        np.testing.assert_allclose(result.probabilities[:, z], predictor.predict(["cell", "nucleus"]), atol=1e-6)
    lazy = ncs.run(
        iter_segment_nd(
            da.from_array(stack, chunks=(1, 32, 40)), ["cell", "nucleus"], predictor, batch=2, threshold=0.45
        )
    )
    np.testing.assert_array_equal(lazy.probabilities, result.probabilities)
    np.testing.assert_array_equal(lazy.labels, result.labels)


def test_one_intensity_range_for_the_whole_stack(tiny_model):
    dim, bright = np.full((32, 32), 100, np.uint16), np.full((32, 32), 5000, np.uint16)
    stack = np.stack([dim, bright])
    predictor = ncs.ClipSegPredictor(tiny_model)
    together = ncs.run(iter_segment_nd(stack, ["x"], predictor, value_range=(0, 5000)))
    alone = ncs.run(iter_segment_nd(dim[None], ["x"], predictor, value_range=(0, 5000)))
    np.testing.assert_array_equal(together.probabilities[:, 0], alone.probabilities[:, 0])
    auto = ncs.run(iter_segment_nd(stack, ["x"], predictor))  # "auto": one range from the whole stack
    from napari_clipseg.transforms import intensity_range

    shared = ncs.run(iter_segment_nd(stack, ["x"], predictor, value_range=intensity_range(stack)))
    np.testing.assert_array_equal(auto.probabilities, shared.probabilities)
    predictor.set_image(dim)  # on its own, a constant plane is stretched to all zeros: another input
    assert np.abs(predictor.predict("x") - together.probabilities[:, 0]).max() > 1e-6


def test_reprompting_a_stack_runs_only_the_decoder(tiny_model, rng):
    stack = rng.integers(0, 4000, (5, 48, 48), dtype=np.uint16)
    predictor, cache = ncs.ClipSegPredictor(tiny_model), FeatureCache()
    calls = []
    hook = tiny_model.clip.visual.conv1.register_forward_hook(lambda *_: calls.append(1))
    try:
        ncs.run(iter_segment_nd(stack, ["cell"], predictor, batch=2, cache=cache, cache_key="stack"))
        first = len(calls)
        again = ncs.run(iter_segment_nd(stack, ["nucleus", "membrane"], predictor, cache=cache, cache_key="stack"))
    finally:
        hook.remove()
    assert first == 3 and len(calls) == first  # 5 planes in batches of 2, then none
    assert cache.hits == 5 and again.labels.shape == (5, 48, 48)


def test_cache_is_bounded_by_memory(tiny_model, rng):
    predictor = ncs.ClipSegPredictor(tiny_model)
    features = predictor.encode([rng.random((32, 32))])[0]
    size = FeatureCache._size(features)
    cache = FeatureCache(max_bytes=3 * size)
    for i in range(10):
        cache.put(i, features)
    assert len(cache) == 3 and cache.get(9) is not None and cache.get(0) is None


def test_large_lazy_plane_is_tiled_with_progress_per_batch(tiny_model):
    lazy = da.random.default_rng(0).integers(0, 4000, (800, 1000), chunks=(200, 250)).astype(np.uint16)
    events = []
    result = ncs.run(iter_segment_nd(lazy, ["cell"], ncs.ClipSegPredictor(tiny_model), mode="tiled"), events.append)
    assert result.labels.shape == (800, 1000) and result.metadata["mode"] == "tiled"
    n_tiles = len(tile_boxes((800, 1000)))
    assert [e.stage for e in events if e.stage.startswith("tile batch")] == [
        f"tile batch {i} of {-(-n_tiles // 4)}" for i in range(1, -(-n_tiles // 4) + 1)
    ]


def test_large_results_are_kept_compact(tiny_model, rng, monkeypatch):
    monkeypatch.setattr(planes_module, "COMPACT_ABOVE", 1000)
    result = ncs.run(iter_segment_nd(rng.random((40, 40)), ["x"], ncs.ClipSegPredictor(tiny_model)))
    assert result.probabilities.dtype == np.float16


def test_visual_prompts_on_stacks_need_their_image(tiny_model, rng):
    stack = rng.random((2, 48, 48)).astype(np.float32)
    mask = np.zeros((48, 48), bool)
    mask[10:30, 10:30] = True
    predictor = ncs.ClipSegPredictor(tiny_model)
    with pytest.raises(RuntimeError, match="set_image"):
        ncs.run(iter_segment_nd(stack, [ncs.VisualPrompt(mask)], predictor))
    result = ncs.run(iter_segment_nd(stack, [ncs.VisualPrompt(mask, image=stack[0])], predictor))
    assert result.prompts == ["example"] and result.probabilities.shape == (1, 2, 48, 48)
    assert torch.is_tensor(predictor.embed_prompts([ncs.VisualPrompt(mask, image=stack[0])]))


def test_a_failing_plane_or_tile_is_named(tiny_model, rng, monkeypatch):
    stack = rng.random((3, 40, 40)).astype(np.float32)
    predictor = ncs.ClipSegPredictor(tiny_model)
    original = ncs.ClipSegPredictor.encode

    def fail_on_plane_2(self, images, **kw):
        if any(np.array_equal(np.asarray(i), stack[2]) for i in images):
            raise ValueError("unreadable chunk")
        return original(self, images, **kw)

    monkeypatch.setattr(ncs.ClipSegPredictor, "encode", fail_on_plane_2)
    with pytest.raises(planes_module.PlaneError, match=r"plane \(2,\): unreadable chunk"):
        ncs.run(iter_segment_nd(stack, ["x"], predictor, batch=1))
    big = rng.random((400, 800)).astype(np.float32)
    monkeypatch.setattr(ncs.ClipSegPredictor, "encode", lambda self, images, **kw: 1 / 0)
    with pytest.raises(planes_module.PlaneError, match=r"image: tiles \(0, 352, 0, 352\).*division by zero"):
        ncs.run(iter_segment_nd(big, ["x"], predictor, mode="tiled"))


def test_a_channel_axis_is_combined_as_colour(tiny_model, rng):
    cyx = rng.integers(0, 4000, (2, 40, 56), dtype=np.uint16)  # e.g. nuclei + membrane channels
    predictor = ncs.ClipSegPredictor(tiny_model)
    moved = ncs.run(iter_segment_nd(np.moveaxis(cyx, 0, -1), ["cell"], predictor, rgb=True))
    axis = ncs.run(iter_segment_nd(cyx, ["cell"], predictor, channel_axis=0))
    lazy = ncs.run(iter_segment_nd(da.from_array(cyx, chunks=(1, 20, 28)), ["cell"], predictor, channel_axis=0))
    assert axis.labels.shape == (40, 56)
    np.testing.assert_array_equal(axis.probabilities, moved.probabilities)
    np.testing.assert_array_equal(lazy.probabilities, moved.probabilities)
    with pytest.raises(ValueError, match="channel_axis 3"):
        ncs.run(iter_segment_nd(cyx, ["cell"], predictor, channel_axis=3))


def test_whole_image_features_are_shared_between_modes(tiny_model, rng):
    stack = rng.random((3, 400, 760)).astype(np.float32)
    predictor, cache = ncs.ClipSegPredictor(tiny_model), FeatureCache()
    ncs.run(iter_segment_nd(stack, ["x"], predictor, mode="whole", cache=cache, cache_key="s"))
    hits = cache.hits
    ncs.run(iter_segment_nd(stack, ["x"], predictor, mode="both", cache=cache, cache_key="s"))
    assert cache.hits - hits == 3  # the three whole-plane passes come from the cache, only tiles are new
