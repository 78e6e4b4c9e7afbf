"""Thresholding, arg-max between prompts, and small-object removal."""

from __future__ import annotations

import numpy as np
import pytest

from napari_clipseg.segmentation.postprocess import (
    fill_holes,
    instances_from_labels,
    labels_from_probabilities,
    remove_small_objects,
    smooth,
)


def test_argmax_among_prompts_above_threshold():
    probs = np.array([[[0.9, 0.5, 0.1, 0.45]], [[0.6, 0.7, 0.2, 0.39]]], np.float32)
    labels = labels_from_probabilities(probs, 0.4)
    np.testing.assert_array_equal(labels, [[1, 2, 0, 1]])
    assert labels.dtype == np.uint8


def test_threshold_per_prompt():
    probs = np.array([[[0.5, 0.5]], [[0.45, 0.3]]], np.float32)
    np.testing.assert_array_equal(labels_from_probabilities(probs, [0.6, 0.4]), [[2, 0]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        labels_from_probabilities(probs, 1.5)


def test_many_prompts_use_a_wider_dtype():
    probs = np.zeros((300, 2, 2), np.float32)
    probs[299] = 1
    labels = labels_from_probabilities(probs, 0.5)
    assert labels.dtype == np.uint16 and np.all(labels == 300)


def test_small_components_are_removed_per_class():
    labels = np.zeros((10, 10), np.uint8)
    labels[0:4, 0:4] = 1  # 16 px, kept
    labels[8, 8] = 1  # 1 px, removed
    labels[6:8, 0:2] = 2  # 4 px, removed at min_size 5
    out = remove_small_objects(labels.copy(), 5)
    assert (out == 1).sum() == 16 and not (out == 2).any() and out[8, 8] == 0
    np.testing.assert_array_equal(remove_small_objects(labels.copy(), 0), labels)


def _touching_discs(radius: int = 12, centres=((30, 30), (30, 52), (70, 40), (72, 90))) -> tuple[np.ndarray, int]:
    """Discs of one class, the first two overlapping (touching): the watershed must split them."""
    yy, xx = np.mgrid[:110, :120]
    mask = np.zeros((110, 120), bool)
    for cy, cx in centres:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return mask.astype(np.uint8), len(centres)


def test_watershed_splits_touching_discs_and_connected_components_do_not():
    labels, n = _touching_discs()
    split = instances_from_labels(labels, min_distance=6)
    assert split.count == n and split.ids.max() == n and split.classes == (1,) * n
    merged = instances_from_labels(labels, split=False)
    assert merged.count == n - 1  # the two touching discs are one component
    assert np.array_equal(split.ids > 0, labels > 0) and np.array_equal(merged.ids > 0, labels > 0)


def test_instances_keep_their_class_and_numbering_is_stable():
    labels, _ = _touching_discs()
    yy, xx = np.mgrid[:110, :120]
    labels[(yy - 70) ** 2 + (xx - 40) ** 2 <= 12**2] = 2  # the third disc becomes class 2
    first = instances_from_labels(labels, min_distance=6)
    again = instances_from_labels(labels.copy(), min_distance=6)
    np.testing.assert_array_equal(first.ids, again.ids)
    assert sorted(first.classes) == [1, 1, 1, 2]
    for i, value in enumerate(first.classes, start=1):
        assert np.all(labels[first.ids == i] == value)


def test_probability_seeds_and_3d_stacks():
    labels, n = _touching_discs()
    yy, xx = np.mgrid[:110, :120]
    probability = np.zeros((1, 110, 120), np.float32)
    for cy, cx in ((30, 30), (30, 52), (70, 40), (72, 90)):
        probability[0] = np.maximum(probability[0], np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 80))
    assert instances_from_labels(labels, probability, seeds="probability", min_distance=6).count == n
    stack = np.stack([labels, labels])
    assert instances_from_labels(stack, min_distance=6).count == 2 * n  # per plane
    assert instances_from_labels(stack, min_distance=6, dims=3).count == n  # objects through the stack
    with pytest.raises(ValueError, match="seeds"):
        instances_from_labels(labels, seeds="random")


def test_fill_holes_and_smooth_change_only_what_they_should():
    labels = np.zeros((40, 40), np.uint8)
    labels[5:25, 5:25] = 1
    labels[12:16, 12:16] = 0  # a hole
    labels[30:35, 30:35] = 2
    labels[30, 36] = 2  # a spur
    filled = fill_holes(labels)
    assert np.all(filled[12:16, 12:16] == 1) and np.array_equal(filled[30:36, 30:37], labels[30:36, 30:37])
    smoothed = smooth(labels, 1)
    assert smoothed[30, 36] == 0 and smoothed[20, 20] == 1
    assert np.array_equal(smooth(labels, 0), labels)


def test_an_object_that_fills_the_image_is_one_instance():
    full = np.ones((20, 30), np.uint8)
    assert instances_from_labels(full).count == 1 and instances_from_labels(full, split=False).count == 1
    assert instances_from_labels(np.zeros((20, 30), np.uint8)).count == 0
