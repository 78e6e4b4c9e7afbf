"""The pixel refiner (issue 33): learnt in the loop, kept only when better, stored and loaded with its
decoder, named in the records, and exact across strips, channels and planes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_LEARNING_RATE
from napari_clipseg.errors import ProjectError
from napari_clipseg.evaluation.metrics import class_scores
from napari_clipseg.segmentation import refiner as refiner_module
from napari_clipseg.segmentation.refiner import (
    PixelRefiner,
    RefinerError,
    feature_count,
    load_refiner,
    make_head,
    pixel_features,
)


def _verify(project, truth, names):
    project.prelabel()
    for name in names:
        project.verify(name, truth[name])


def test_a_learn_keeps_a_refiner_when_it_is_better_and_the_waiting_images_get_it(project, images):
    _, truth = images
    before = {}
    project.prelabel()
    for name in ("disc6", "disc7"):
        before[name] = class_scores(project.prelabels(name), truth[name], 1)["iou"]
    _verify(project, truth, [f"disc{i}" for i in range(5)])
    project.learn(steps=20, learning_rate=TINY_LEARNING_RATE)
    outcome = project.last_learn
    assert outcome.accepted and outcome.pixels.kept and outcome.pixels.refined_iou > outcome.pixels.plain_iou
    assert "decoder + pixel refiner" in outcome.message
    folder = project.decoder
    assert (folder / "refiner.safetensors").is_file() and project.decoders[-1]["refiner"] is True
    assert project.threshold == 0.5  # its maps are the refiner's
    with pytest.raises(ProjectError, match="pixel refiner: its maps are calibrated"):
        project.set_threshold(0.3)
    for name in ("disc6", "disc7"):
        record = json.loads((project.folder.prelabels / name / "clipseg.json").read_text())
        assert record["model"]["decoder"]["name"] == folder.name
        assert record["model"]["decoder"]["refiner"]["file"] == "refiner.safetensors"  # every record names it
        after = class_scores(project.prelabels(name), truth[name], 1)["iou"]
        assert after > before[name] + 0.3 and after > 0.7


def test_the_first_verified_image_teaches_a_refiner_judged_on_its_halves(images, tmp_path, spec):
    import napari_clipseg as ncs

    folder, truth = images
    with ncs.open_project(folder, tmp_path / "p", prompts=["disc"], model=spec, auto_learn=1) as project:
        project.prelabel()
        before = class_scores(project.prelabels("disc7"), truth["disc7"], 1)["iou"]
        project.verify("disc0", truth["disc0"])
        assert project.learn_due  # Learn as I go learns from the first image
        assert project.next() != "disc0"  # runs that Learn and re-predicts the waiting images
        outcome = project.last_learn
        assert outcome.pixels.halves and outcome.pixels.kept and outcome.accepted
        assert outcome.message.startswith("Learnt a pixel refiner from the first verified image")
        assert project.decoders[-1]["refiner"] and project.decoders[-1]["images"] == ["disc0"]
        assert class_scores(project.prelabels("disc7"), truth["disc7"], 1)["iou"] > max(before + 0.3, 0.7)
        name = project.next()
        project.verify(name, truth[name])
        project.learn(steps=5, learning_rate=TINY_LEARNING_RATE)  # two images: the decoder learns too
        assert not project.last_learn.pixels.halves and project.last_learn.result.steps > 0


def test_a_first_image_refiner_not_better_on_the_other_half_is_not_kept(project, images, monkeypatch):
    from napari_clipseg.learning import pixels

    _, truth = images
    _verify(project, truth, ["disc0"])
    tried = []

    def useless(samples, classes, channels, stop, seed=0, context=True):
        tried.append(context)
        return _background_everywhere(samples, classes, channels, stop)

    monkeypatch.setattr(pixels, "learn_refiner", useless)
    project.learn()
    outcome = project.last_learn
    assert tried == [False, False]  # a head per half, on the image's pixels alone
    assert outcome.pixels.halves and not outcome.pixels.kept and not outcome.accepted
    assert "not better on its halves" in outcome.message and project.decoder is None
    assert not list(project.folder.decoders.glob("*/refiner.*"))


def _background_everywhere(samples, classes, channels, stop, seed=0, context=True):
    head = make_head(feature_count(channels, len(classes)), len(classes))
    for parameter in head.parameters():
        parameter.data.zero_()
    head[-1].bias.data[0] = 10.0
    return PixelRefiner(head.eval(), list(classes), channels)


def test_a_refiner_that_is_not_better_is_not_kept(project, images, monkeypatch):
    from napari_clipseg.learning import pixels

    _, truth = images
    _verify(project, truth, ["disc0", "disc1", "disc2"])

    tried = []

    def useless(samples, classes, channels, stop, seed=0, context=True):
        tried.append(context)
        return _background_everywhere(samples, classes, channels, stop)

    monkeypatch.setattr(pixels, "learn_refiner", useless)
    project.learn(steps=2, learning_rate=1e-12)
    outcome = project.last_learn
    assert outcome.pixels is not None and not outcome.pixels.kept
    assert outcome.message.count("pixel refiner was not better") == 1  # said once, with its IoU
    assert tried == [True, False]  # with the decoder's maps, then on the image's pixels alone
    assert not list(project.folder.decoders.glob("*/refiner.*"))


def test_a_damaged_refiner_is_said_clearly(project, images):
    from napari_clipseg.errors import ProjectError

    _, truth = images
    _verify(project, truth, [f"disc{i}" for i in range(4)])
    project.learn(steps=5, learning_rate=TINY_LEARNING_RATE, repredict=False)
    assert project.decoders[-1]["refiner"]
    (project.decoder / "refiner.safetensors").write_bytes(b"not safetensors")
    project.model.forget()
    with pytest.raises(RefinerError, match=r"pixel refiner in .* is damaged .* learn again"):
        project.prelabel()
    assert isinstance(RefinerError("x"), ValueError) and not isinstance(RefinerError("x"), ProjectError)


def test_strips_give_the_whole_planes_features_and_channels_are_checked(monkeypatch):
    rng = np.random.default_rng(0)
    plane = rng.random((300, 40, 3)).astype(np.float32)
    probabilities = rng.random((2, 300, 40)).astype(np.float32)
    head = make_head(feature_count(3, 2), 2)
    refiner = PixelRefiner(head.eval(), ["a", "b"], channels=3)
    whole = refiner.probabilities(pixel_features(plane, probabilities))
    monkeypatch.setattr(refiner_module, "STRIP_PIXELS", 64 * 40)  # strips of 64 rows, 40 more on each side
    monkeypatch.setattr(refiner_module, "CHUNK", 1000)  # the head on pieces of rows
    np.testing.assert_allclose(refiner.refine_plane(plane, probabilities, (0.0, 1.0)), whole, atol=1e-5)
    with pytest.raises(RefinerError, match="learnt on 3 channel"):
        refiner.refine_plane(plane[..., 0], probabilities, (0.0, 1.0))


def test_a_refiner_is_saved_and_loaded_safely(tmp_path):
    head = make_head(feature_count(1, 1), 1)
    PixelRefiner(head, ["disc"], 1).save(tmp_path)
    loaded = load_refiner(tmp_path)
    assert loaded.classes == ["disc"] and loaded.channels == 1
    features = np.random.default_rng(1).random((5, 5, feature_count(1, 1))).astype(np.float32)
    np.testing.assert_allclose(loaded.probabilities(features), PixelRefiner(head, ["disc"], 1).probabilities(features))
    assert load_refiner(tmp_path / "nothing-here") is None


def test_a_stack_is_refined_plane_by_plane(tmp_path):
    from napari_clipseg.project.refine import Planes, refined

    rng = np.random.default_rng(2)
    stack = rng.random((3, 32, 32)).astype(np.float32)
    maps = rng.random((1, 3, 32, 32)).astype(np.float32)
    refiner = PixelRefiner(make_head(feature_count(1, 1), 1).eval(), ["x"], 1)
    out = refined(refiner, Planes(stack, stack, [(0,), (1,), (2,)], (0.0, 1.0), None), maps)
    for z in range(3):
        np.testing.assert_allclose(out[:, z], refiner.refine_plane(stack[z], maps[:, z], (0.0, 1.0)), atol=1e-6)


def test_a_decoder_loaded_anywhere_brings_its_refiner(project, images, spec, tmp_path):
    """The Segment mode, ``segment`` and ``batch`` load a project's decoder with its refiner: the
    same pipeline refines their planes as it refined the project's pre-labels."""
    import napari_clipseg as ncs
    from napari_clipseg.cli.args import _decoder_threshold

    folder, truth = images
    _verify(project, truth, [f"disc{i}" for i in range(5)])
    project.learn(steps=20, learning_rate=TINY_LEARNING_RATE)
    assert project.decoders[-1]["refiner"]
    model = spec.replace(decoder=str(project.decoder)).load()
    assert model.pixel_refiner is not None and model.info.to_dict()["decoder"]["refiner"]["threshold"] == 0.5
    image = np.load(folder / "disc7.npy")
    labels = ncs.segment(image, ["disc"], model=model, threshold=0.5)
    np.testing.assert_array_equal(labels, project.prelabels("disc7"))
    assert _decoder_threshold(str(project.decoder)) == 0.5  # the CLI's default for --decoder
    report = ncs.segment_dataset([folder / "disc6.npy"], ["disc"], tmp_path / "out", model=model, threshold=0.5)
    assert report.ok
    record = json.loads((tmp_path / "out" / "disc6" / "clipseg.json").read_text())
    assert record["model"]["decoder"]["refiner"]["file"] == "refiner.safetensors"
    assert ncs.segment(image, ["something else"], model=model).shape == image.shape[:2]  # other classes: no refiner


def _map_with_objects(sizes_and_places, shape=(40, 40)):
    """A one-class map at 0.9 over squares (side, row, column), 0.1 elsewhere."""
    p = np.full((1, *shape), 0.1, np.float32)
    for side, row, column in sizes_and_places:
        p[0, row : row + side, column : column + side] = 0.9
    return p


def test_specks_smaller_than_the_learnt_size_fall_below_the_threshold():
    from napari_clipseg.segmentation.refiner import THRESHOLD, lower_specks

    p = _map_with_objects([(2, 2, 2), (8, 20, 20)])  # a 4-px speck and a 64-px object
    kept = lower_specks(p.copy(), 0)
    np.testing.assert_array_equal(kept, p)
    cleaned = lower_specks(p.copy(), 5)
    assert cleaned[0, 2:4, 2:4].max() < THRESHOLD and (cleaned[0, 20:28, 20:28] == p[0, 20:28, 20:28]).all()


def test_the_speck_size_is_the_one_with_fewest_corrections_on_the_verified_images():
    from napari_clipseg.project.refine import fewest_corrections

    maps = [_map_with_objects([(2, 2, 2), (3, 30, 5), (8, 20, 20)])]
    clean = (_map_with_objects([(8, 20, 20)])[0] > 0.5).astype(np.uint8)
    assert fewest_corrections(maps, [clean]) == 10  # both specks go; 5 would leave the 9-px one
    with_small = (maps[0][0] > 0.5).astype(np.uint8)  # the annotator kept them: nothing is removed
    assert fewest_corrections(maps, [with_small]) == 0


def test_the_speck_size_is_kept_with_the_refiner(tmp_path):
    PixelRefiner(make_head(feature_count(1, 1), 1), ["disc"], 1, min_size=20).save(tmp_path)
    assert load_refiner(tmp_path).min_size == 20
    meta = json.loads((tmp_path / refiner_module.META_NAME).read_text())
    del meta["min_size"]  # a refiner written before the speck size keeps every object
    (tmp_path / refiner_module.META_NAME).write_text(json.dumps(meta))
    assert load_refiner(tmp_path).min_size == 0


def test_specks_are_judged_plane_by_plane_in_a_stack():
    from napari_clipseg.segmentation.refiner import THRESHOLD, lower_specks

    plane = _map_with_objects([(2, 2, 2), (8, 20, 20)])[0]
    stack = np.stack([plane, plane])[None]  # the speck spans two planes: 8 voxels, 4 per plane
    cleaned = lower_specks(stack.copy(), 5)
    assert cleaned[0, :, 2:4, 2:4].max() < THRESHOLD and (cleaned[0, :, 20:28, 20:28] > THRESHOLD).all()


class _RecordingPlane:
    """A lazy plane (as a dask or zarr one): says which rows were read."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.ndim, self.dtype, self.rows_read = data, data.shape, data.ndim, data.dtype, []

    def __getitem__(self, key):
        self.rows_read.append(key.stop - key.start)
        return self.data[key]


def test_a_lazy_plane_is_read_a_strip_at_a_time(monkeypatch):
    rng = np.random.default_rng(3)
    plane = rng.integers(0, 4000, (300, 30), dtype=np.uint16)
    probabilities = rng.random((1, 300, 30)).astype(np.float32)
    refiner = PixelRefiner(make_head(feature_count(1, 1), 1).eval(), ["a"], 1)
    whole = refiner.refine_plane(plane, probabilities, (0.0, 4000.0))
    monkeypatch.setattr(refiner_module, "STRIP_PIXELS", 64 * 30)
    lazy = _RecordingPlane(plane)
    np.testing.assert_allclose(refiner.refine_plane(lazy, probabilities, (0.0, 4000.0)), whole, atol=1e-5)
    assert max(lazy.rows_read) <= 64 + 2 * refiner_module.MARGIN and sum(lazy.rows_read) < 3 * 300


def test_a_refiner_on_the_pixels_alone_ignores_the_decoders_maps():
    from napari_clipseg.learning.pixels import learn_refiner, sample_plane

    rng = np.random.default_rng(4)
    plane = _map_with_objects([(10, 5, 5), (12, 20, 18)])[0]  # bright squares on a dark plane
    truth = (plane > 0.5).astype(np.uint8)
    misleading = rng.random((1, 40, 40)).astype(np.float32)
    samples = [sample_plane(plane, misleading, truth, 1, rng)]
    refiner = learn_refiner(samples, ["square"], 1, None, context=False)
    one = refiner.refine_plane(plane, misleading, (0.0, 1.0))
    other = refiner.refine_plane(plane, rng.random((1, 40, 40)).astype(np.float32), (0.0, 1.0))
    np.testing.assert_allclose(one, other, atol=1e-6)
    assert class_scores((one[0] > 0.5).astype(np.uint8), truth, 1)["iou"] > 0.9


def test_a_refiner_works_on_the_dtypes_own_scale_and_an_older_one_on_the_images_stretch(tmp_path):
    rng = np.random.default_rng(5)
    plane = rng.integers(0, 4000, (40, 40), dtype=np.uint16)
    maps = rng.random((1, 40, 40)).astype(np.float32)
    head = make_head(feature_count(1, 1), 1).eval()
    new, old = PixelRefiner(head, ["a"], 1), PixelRefiner(head, ["a"], 1, scale="image")
    raw = new.probabilities(pixel_features(plane.astype(np.float32), maps))
    stretched = new.probabilities(pixel_features(np.clip(plane / 4000.0, 0, 1).astype(np.float32), maps))
    np.testing.assert_allclose(new.refine_plane(plane, maps, (0.0, 4000.0)), raw, atol=1e-5)  # the range is not used
    np.testing.assert_allclose(old.refine_plane(plane, maps, (0.0, 4000.0)), stretched, atol=1e-5)
    new.save(tmp_path)
    assert load_refiner(tmp_path).scale == "dtype"
    meta = json.loads((tmp_path / refiner_module.META_NAME).read_text())
    del meta["intensity"]  # a refiner of schema version 1: learnt on the model input's stretch
    (tmp_path / refiner_module.META_NAME).write_text(json.dumps(meta))
    assert load_refiner(tmp_path).scale == "image"
