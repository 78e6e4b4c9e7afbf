"""Thresholding, arg-max between prompts, and small-object removal."""

from __future__ import annotations

import numpy as np
import pytest

from napari_clipseg.postprocess import labels_from_probabilities, remove_small_objects


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
