"""The generator pipeline and ``segment``."""

from __future__ import annotations

import numpy as np
import pytest

import napari_clipseg as ncs
from napari_clipseg.constants import DEFAULT_THRESHOLD


def test_iter_segment_reports_progress_and_returns_the_result(tiny_model, rng):
    image = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    events = []
    result = ncs.run(ncs.iter_segment(image, ["a", "b"], ncs.ClipSegPredictor(tiny_model)), events.append)
    assert [e.step for e in events] == [0, 1, 2, 3] and all(e.total == 3 for e in events)
    assert result.prompts == ["a", "b"] and result.probabilities.shape == (2, 64, 80)
    np.testing.assert_array_equal(result.labels, ncs.labels_from_probabilities(result.probabilities))


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
    assert np.all(labels == 1) and result.threshold == 0.0


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
