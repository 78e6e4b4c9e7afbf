"""Probabilities -> label images: thresholding, multi-prompt arg-max, small-object removal."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.measure import label as connected_components

from .constants import DEFAULT_THRESHOLD
from .options import check_min_size, check_threshold


def label_dtype(n_classes: int) -> np.dtype:
    """Smallest unsigned dtype holding labels ``0..n_classes``."""
    return np.dtype(np.uint8 if n_classes < 256 else np.uint16 if n_classes < 65536 else np.uint32)


def remove_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set connected components (per class, 8-connected) smaller than ``min_size`` to 0, in place."""
    if min_size <= 1:
        return labels
    for value in np.unique(labels[labels > 0]):
        components = connected_components(labels == value, connectivity=labels.ndim)
        sizes = np.bincount(components.ravel())
        small = sizes < min_size
        small[0] = False
        labels[small[components]] = 0
    return labels


def labels_from_probabilities(
    probabilities: np.ndarray,
    threshold: float | Sequence[float] = DEFAULT_THRESHOLD,
    min_size: int = 0,
) -> np.ndarray:
    """Combine per-prompt probabilities into one label image.

    A pixel gets label ``i + 1`` when prompt ``i`` has the highest probability among the prompts
    whose probability reaches their threshold, and 0 (background) when none does.

    Args:
        probabilities: ``(P, ...)`` floats in [0, 1], one map per prompt.
        threshold: One value, or one per prompt.
        min_size: Components smaller than this many pixels are removed (0 keeps all).

    Returns:
        ``probabilities.shape[1:]`` labels in the smallest unsigned dtype that fits.
    """
    probabilities = np.asarray(probabilities)
    n = probabilities.shape[0]
    checked = check_threshold(threshold)
    if isinstance(checked, tuple) and len(checked) not in (1, n):
        raise ValueError(f"got {len(checked)} thresholds for {n} prompts: give one, or exactly one per prompt")
    thresholds = np.broadcast_to(np.asarray(checked, dtype=np.float32), (n,))
    min_size = check_min_size(min_size)
    above = probabilities >= thresholds.reshape((n,) + (1,) * (probabilities.ndim - 1))
    scores = np.where(above, probabilities, -1.0)
    labels = (np.argmax(scores, axis=0) + 1).astype(label_dtype(n))
    labels[~above.any(axis=0)] = 0
    return remove_small_objects(labels, min_size)
