"""The pipeline: modes, tiling, stacks, lazy data, the feature cache, and ``segment``."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

import napari_clipseg as ncs
from napari_clipseg.constants import DEFAULT_THRESHOLD
from napari_clipseg.segmentation import pipeline as pipeline_module
from napari_clipseg.segmentation.pipeline import choose_mode, iter_plane_logits
from napari_clipseg.segmentation.predictor import _features_bytes
from napari_clipseg.segmentation.tiling import Stitcher, blend_weights, tile_boxes
from napari_clipseg.segmentation.transforms import intensity_range


def seg(image, prompts, predictor, **options):
    """Drive the one pipeline generator to its result."""
    return ncs.run(ncs.iter_segment(image, prompts, predictor, ncs.SegmentOptions(**options)))


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
    tiled = seg(image, ["a cat", "sky"], predictor, rgb=True, mode="tiled")
    predictor.set_image(image)
    np.testing.assert_allclose(tiled.probabilities, predictor.predict(["a cat", "sky"]), atol=1e-6)


def test_both_is_the_average_of_whole_and_tiled_logits(tiny_model, rng):
    image = rng.random((500, 800)).astype(np.float32)
    predictor = ncs.ClipSegPredictor(tiny_model)
    conditionals = predictor.embed_prompts(["a", "b"])
    kw = {"overlap": 44, "batch_size": 4, "value_range": None, "channels": None}
    logits = {
        m: ncs.run(iter_plane_logits(image, conditionals, predictor, mode=m, **kw)) for m in ("whole", "tiled", "both")
    }
    np.testing.assert_allclose(logits["both"], (logits["whole"] + logits["tiled"]) / 2, atol=1e-5)
    assert not np.allclose(logits["whole"], logits["tiled"], atol=1e-3)


def test_stack_equals_per_plane_results_and_dask_equals_numpy(tiny_model, rng):
    stack = rng.random((3, 64, 80)).astype(np.float32)  # in [0, 1]: every plane is scaled alike
    predictor = ncs.ClipSegPredictor(tiny_model)
    result = seg(stack, ["cell", "nucleus"], predictor, batch_size=2, threshold=0.45)
    assert result.labels.shape == (3, 64, 80) and result.probabilities.shape == (2, 3, 64, 80)
    for z in range(3):
        predictor.set_image(stack[z])
        np.testing.assert_allclose(result.probabilities[:, z], predictor.predict(["cell", "nucleus"]), atol=1e-6)
    lazy = seg(da.from_array(stack, chunks=(1, 32, 40)), ["cell", "nucleus"], predictor, batch_size=2, threshold=0.45)
    np.testing.assert_array_equal(lazy.probabilities, result.probabilities)
    np.testing.assert_array_equal(lazy.labels, result.labels)


def test_one_intensity_range_for_the_whole_stack(tiny_model):
    dim, bright = np.full((32, 32), 100, np.uint16), np.full((32, 32), 5000, np.uint16)
    stack = np.stack([dim, bright])
    predictor = ncs.ClipSegPredictor(tiny_model)
    together = seg(stack, ["x"], predictor, intensity=(0, 5000))
    alone = seg(dim[None], ["x"], predictor, intensity=(0, 5000))
    np.testing.assert_array_equal(together.probabilities[:, 0], alone.probabilities[:, 0])
    auto = seg(stack, ["x"], predictor)  # "auto": one range from the whole stack
    from napari_clipseg.segmentation.transforms import intensity_range

    shared = seg(stack, ["x"], predictor, intensity=intensity_range(stack))
    np.testing.assert_array_equal(auto.probabilities, shared.probabilities)
    predictor.set_image(dim)  # on its own, a constant plane is stretched to all zeros: another input
    assert np.abs(predictor.predict("x") - together.probabilities[:, 0]).max() > 1e-6


def test_reprompting_a_stack_runs_only_the_decoder(tiny_model, rng):
    stack = rng.integers(0, 4000, (5, 48, 48), dtype=np.uint16)
    predictor = ncs.ClipSegPredictor(tiny_model)
    calls = []
    hook = tiny_model.clip.visual.conv1.register_forward_hook(lambda *_: calls.append(1))
    try:
        seg(stack, ["cell"], predictor, batch_size=2)
        first = len(calls)
        again = seg(stack, ["nucleus", "membrane"], predictor)
    finally:
        hook.remove()
    assert first == 3 and len(calls) == first  # 5 planes in batches of 2, then none
    assert predictor.feature_cache.hits == 5 and again.labels.shape == (5, 48, 48)


def test_cache_is_bounded_by_memory(tiny_model, rng):
    size = _features_bytes(ncs.ClipSegPredictor(tiny_model).encode([rng.random((32, 32))])[0])
    predictor = ncs.ClipSegPredictor(tiny_model, cache_bytes=3 * size)
    images = [rng.random((32, 32)) for _ in range(10)]
    for image in images:
        predictor.encode([image])
    assert len(predictor.feature_cache) == 3 and predictor.feature_cache.total_size == 3 * size
    calls = []
    hook = tiny_model.clip.visual.conv1.register_forward_hook(lambda *_: calls.append(1))
    try:
        predictor.encode([images[9]])  # still cached
        predictor.encode([images[0]])  # evicted: encoded again
    finally:
        hook.remove()
    assert len(calls) == 1


def test_large_lazy_plane_is_tiled_with_progress_per_batch(tiny_model):
    lazy = da.random.default_rng(0).integers(0, 4000, (800, 1000), chunks=(200, 250)).astype(np.uint16)
    events = []
    result = ncs.run(
        ncs.iter_segment(lazy, ["cell"], ncs.ClipSegPredictor(tiny_model), ncs.SegmentOptions(mode="tiled")),
        events.append,
    )
    assert result.labels.shape == (800, 1000) and result.mode == "tiled"
    n_tiles = len(tile_boxes((800, 1000)))
    assert [e.stage for e in events if e.stage.startswith("tile batch")] == [
        f"tile batch {i} of {-(-n_tiles // 4)}" for i in range(1, -(-n_tiles // 4) + 1)
    ]


def test_large_results_are_kept_compact(tiny_model, rng, monkeypatch):
    monkeypatch.setattr(pipeline_module, "COMPACT_ABOVE", 1000)
    result = seg(rng.random((40, 40)), ["x"], ncs.ClipSegPredictor(tiny_model))
    assert result.probabilities.dtype == np.float16


def test_visual_prompts_on_stacks_need_their_image(tiny_model, rng):
    stack = rng.random((2, 48, 48)).astype(np.float32)
    mask = np.zeros((48, 48), bool)
    mask[10:30, 10:30] = True
    predictor = ncs.ClipSegPredictor(tiny_model)
    with pytest.raises(ValueError, match="needs image="):
        seg(stack, [ncs.VisualPrompt(mask)], predictor)
    result = seg(stack, [ncs.VisualPrompt(mask, image=stack[0])], predictor)
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
    with pytest.raises(ncs.PlaneError, match=r"plane \(2,\): unreadable chunk"):
        seg(stack, ["x"], predictor, batch_size=1)
    big = rng.random((400, 800)).astype(np.float32)
    monkeypatch.setattr(ncs.ClipSegPredictor, "encode", lambda self, images, **kw: 1 / 0)
    with pytest.raises(ncs.PlaneError, match=r"image: tiles \(0, 352, 0, 352\).*division by zero"):
        seg(big, ["x"], predictor, mode="tiled")


def test_a_channel_axis_is_combined_as_colour(tiny_model, rng):
    cyx = rng.integers(0, 4000, (2, 40, 56), dtype=np.uint16)  # e.g. nuclei + membrane channels
    predictor = ncs.ClipSegPredictor(tiny_model)
    moved = seg(np.moveaxis(cyx, 0, -1), ["cell"], predictor, rgb=True)
    axis = seg(cyx, ["cell"], predictor, channel_axis=0)
    lazy = seg(da.from_array(cyx, chunks=(1, 20, 28)), ["cell"], predictor, channel_axis=0)
    assert axis.labels.shape == (40, 56)
    np.testing.assert_array_equal(axis.probabilities, moved.probabilities)
    np.testing.assert_array_equal(lazy.probabilities, moved.probabilities)
    with pytest.raises(ValueError, match="channel_axis 3"):
        seg(cyx, ["cell"], predictor, channel_axis=3)


def test_whole_image_features_are_shared_between_modes(tiny_model, rng):
    stack = rng.random((3, 400, 760)).astype(np.float32)
    predictor = ncs.ClipSegPredictor(tiny_model)
    seg(stack, ["x"], predictor, mode="whole")
    hits = predictor.feature_cache.hits
    seg(stack, ["x"], predictor, mode="both")
    assert predictor.feature_cache.hits - hits == 3  # the three whole-plane passes come from the cache


def test_segment_labels_follow_prompt_order_and_threshold(tiny_model, rng):
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    predictor = ncs.ClipSegPredictor(tiny_model)
    predictor.set_image(image)
    probs = predictor.predict(["sky", "rock"])
    threshold = float(np.median(probs))  # random weights: put the threshold where both classes appear
    labels = ncs.segment(image, ["sky", "rock"], model=tiny_model, threshold=threshold)
    np.testing.assert_array_equal(labels, ncs.labels_from_probabilities(probs, threshold))
    assert set(np.unique(labels)) <= {0, 1, 2} and len(np.unique(labels)) > 1
    assert DEFAULT_THRESHOLD == 0.4


def test_relabel_uses_cached_probabilities(tiny_model, rng):
    result = ncs.run(ncs.iter_segment(rng.random((40, 40)), "x", ncs.ClipSegPredictor(tiny_model)))
    labels = result.relabel(0.0)
    assert np.all(labels == 1) and result.options.threshold == 0.0


def test_bad_prompts_fail_before_any_model_work(tiny_model):
    generator = ncs.iter_segment(np.zeros((32, 32)), ["ok", ""], ncs.ClipSegPredictor(tiny_model))
    with pytest.raises(ValueError, match="empty"):
        next(generator)


def test_segment_takes_stacks_large_images_and_visual_prompts(tiny_model, rng):
    stack = rng.integers(0, 4000, (2, 40, 48), dtype=np.uint16)
    assert ncs.segment(stack, "cell", model=tiny_model, threshold=0.0).shape == (2, 40, 48)
    big = rng.integers(0, 255, (720, 760, 3), dtype=np.uint8)
    labels = ncs.segment(big, ["a", "b"], model=tiny_model, mode="tiled", overlap=20)
    assert labels.shape == (720, 760)
    mask = np.zeros((720, 760), bool)
    mask[100:300, 200:400] = True
    visual = ncs.segment(big, [ncs.VisualPrompt(mask)], model=tiny_model, mode="whole", threshold=0.0)
    assert visual.shape == (720, 760) and np.all(visual == 1)


def test_progress_events_and_result_of_a_single_image(tiny_model, rng):
    events = []
    image = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    result = ncs.run(ncs.iter_segment(image, ["a", "b"], ncs.ClipSegPredictor(tiny_model)), events.append)
    assert [(e.step, e.total) for e in events] == [(0, 1), (1, 1)]
    assert result.prompts == ["a", "b"] and result.probabilities.shape == (2, 64, 80)
    assert result.mode == "whole" and result.planes == [()]
    np.testing.assert_array_equal(result.labels, ncs.labels_from_probabilities(result.probabilities))


@pytest.mark.parametrize("shape", [(900, 1500, 3), (5000, 300)], ids=["strided-before", "block-mean"])
def test_whole_mode_and_set_image_read_the_image_alike(tiny_model, rng, shape):
    """One way into the model frame: segment(mode="whole") is set_image + predict, at any size."""
    image = rng.integers(0, 255, shape, dtype=np.uint8)
    whole = seg(image, ["a", "b"], ncs.ClipSegPredictor(tiny_model), mode="whole")
    predictor = ncs.ClipSegPredictor(tiny_model)
    predictor.set_image(image)
    np.testing.assert_allclose(whole.probabilities, predictor.predict(["a", "b"]), atol=1e-6)


@pytest.mark.parametrize("mode", ["auto", "whole", "tiled", "both"])
def test_thin_long_images_work_in_every_mode(tiny_model, rng, mode):
    image = rng.integers(0, 4000, (16, 4000), dtype=np.uint16)
    result = seg(image, ["x"], ncs.ClipSegPredictor(tiny_model), mode=mode)
    assert result.labels.shape == (16, 4000) and np.isfinite(result.probabilities).all()


def test_feature_cache_follows_content_not_identity(tiny_model, rng):
    """Features are keyed by pixel content: an edited or a different image is never served stale."""
    predictor = ncs.ClipSegPredictor(tiny_model)
    image = rng.random((64, 64)).astype(np.float32)
    before = seg(image, ["x"], predictor).probabilities
    image[:32] = rng.random((32, 64))  # edited in place: same object, same id, new pixels
    after = seg(image, ["x"], predictor).probabilities
    fresh = ncs.ClipSegPredictor(tiny_model)
    np.testing.assert_allclose(after, seg(image, ["x"], fresh).probabilities, atol=1e-6)
    assert np.abs(after - before).max() > 1e-4
    again = seg(image.copy(), ["y"], predictor)  # another object with the same pixels: a cache hit
    assert predictor.feature_cache.hits >= 1 and again.labels.shape == (64, 64)


def test_options_are_checked_before_any_model_work(tiny_model, rng):
    image = rng.random((32, 32))
    with pytest.raises(TypeError, match=r"unknown option.*valid options: mode"):
        ncs.segment(image, "x", model=tiny_model, tile_overlap=10)
    with pytest.raises(ValueError, match="2 thresholds for 3 prompts"):
        ncs.segment(image, ["a", "b", "c"], model=tiny_model, threshold=[0.2, 0.3])
    with pytest.raises(ValueError, match="more than once"):
        ncs.segment(image, ["a", "b", "a"], model=tiny_model)
    with pytest.raises(ValueError, match="plane"):
        ncs.segment(np.zeros((2, 32, 32)), "x", model=tiny_model, planes=[(5,)])


def test_a_multiscale_list_uses_the_chosen_level(tiny_model, rng):
    full = rng.random((128, 128)).astype(np.float32)
    pyramid = [full, full[::2, ::2]]
    labels = ncs.segment(pyramid, "x", model=tiny_model, pyramid_level=1, threshold=0.0)
    assert labels.shape == (64, 64)


def test_boxes_segment_only_their_region_like_a_crop(tiny_model, rng):
    from napari_clipseg.segmentation.regions import iter_segment_boxes

    image = rng.integers(0, 4000, (300, 400), dtype=np.uint16)
    predictor = ncs.ClipSegPredictor(tiny_model)
    boxes = [(10.4, 80, 20, 120.2), (200, 290, 300, 399)]
    parts = ncs.run(iter_segment_boxes(image, boxes, ["cell"], predictor))
    assert [p.box for p in parts] == [(10, 80, 20, 121), (200, 290, 300, 399)]
    intensity = intensity_range(image)
    for part in parts:
        y0, y1, x0, x1 = part.box
        crop = seg(image[y0:y1, x0:x1], ["cell"], ncs.ClipSegPredictor(tiny_model), intensity=intensity)
        np.testing.assert_allclose(part.result.probabilities, crop.probabilities, atol=1e-6)
    with pytest.raises(ValueError, match="less than 16x16"):
        ncs.run(iter_segment_boxes(image, [(0, 5, 0, 100)], ["cell"], predictor))
    with pytest.raises(ValueError, match="draw at least one box"):
        ncs.run(iter_segment_boxes(image, [], ["cell"], predictor))


def test_a_box_of_a_huge_lazy_image_never_loads_the_rest(tiny_model):
    import dask.array as da

    from napari_clipseg.segmentation.regions import iter_segment_boxes, labels_canvas

    reads = []
    lazy = da.zeros((50_000, 50_000), dtype=np.uint16, chunks=4096).map_blocks(
        lambda block: reads.append(block.shape) or block + 7, dtype=np.uint16
    )
    parts = ncs.run(
        iter_segment_boxes(
            lazy,
            [(1000, 1300, 2000, 2400)],
            ["cell"],
            ncs.ClipSegPredictor(tiny_model),
            ncs.SegmentOptions(intensity=(0, 10)),
        )
    )
    assert parts[0].result.labels.shape == (300, 400)
    assert sum(int(np.prod(s)) for s in reads) <= 4096 * 4096  # one chunk holds the box, not 2.5 G px
    canvas = labels_canvas((50_000, 50_000), np.uint8, lazy=True)
    canvas[1000:1300, 2000:2400] = parts[0].result.labels
    assert canvas.nchunks_initialized == 4  # the four 1024-px chunks the box touches


def test_a_one_off_segment_keeps_no_features(tiny_model, rng, monkeypatch):
    from napari_clipseg.segmentation import pipeline

    made = []
    original = pipeline.ClipSegPredictor

    def recording(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(pipeline, "ClipSegPredictor", recording)
    ncs.segment(rng.random((40, 40)), "x", model=tiny_model)
    assert len(made[0].feature_cache) == 0  # a predictor that dies with the call caches nothing


def test_a_read_scale_tiles_the_image_coarser(tiny_model, rng):
    """scale 0.5: tiles of 704 image pixels read at 352, a quarter of the passes; a tile is the
    whole image shrunk once the tile covers it, and options outside (0, 1] are refused."""
    image = rng.random((1400, 1400)).astype(np.float32)
    predictor = ncs.ClipSegPredictor(tiny_model, cache_bytes=0)
    for scale, tile in ((1.0, 352), (0.5, 704)):
        options = ncs.SegmentOptions(mode="tiled", scale=scale, overlap=44)
        assert options.tile_size == tile and options.tile_overlap == round(44 * tile / 352)
        events = []
        result = ncs.run(ncs.iter_segment(image, ["cell"], predictor, options), events.append)
        assert result.probabilities.shape == (1, 1400, 1400)
        batches = -(-len(tile_boxes((1400, 1400), tile, options.tile_overlap)) // 4)
        assert [e.stage for e in events if e.stage.startswith("tile batch")][-1] == f"tile batch {batches} of {batches}"
    assert len(tile_boxes((1400, 1400), 704, 88)) == 9 and len(tile_boxes((1400, 1400), 352, 44)) == 25
    small = rng.random((300, 500)).astype(np.float32)  # a tile at 0.5 covers all of it: one pass, as "whole" does
    coarse = seg(small, ["a"], predictor, mode="tiled", scale=0.5)
    whole = seg(small, ["a"], predictor, mode="whole")
    np.testing.assert_allclose(coarse.probabilities, whole.probabilities, atol=1e-5)
    for bad in (0, 1.5, float("nan"), "half"):
        with pytest.raises(ValueError, match=r"scale must lie in \(0, 1\]"):
            ncs.SegmentOptions(scale=bad)
