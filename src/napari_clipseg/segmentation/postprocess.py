"""Probabilities -> label images: thresholding, arg-max between prompts, small objects, holes,
smoothing, and instances (one id per object, touching objects split by a seeded watershed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.measure import label as connected_components
from skimage.morphology import ball, disk
from skimage.segmentation import watershed

from ..constants import DEFAULT_THRESHOLD
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
    checked = check_threshold(threshold, n)
    thresholds = np.broadcast_to(np.asarray(checked, dtype=np.float32), (n,))
    min_size = check_min_size(min_size)
    above = probabilities >= thresholds.reshape((n,) + (1,) * (probabilities.ndim - 1))
    if n == 1:  # one prompt: the threshold alone decides (a fifth of the cost of the arg-max below)
        return remove_small_objects(above[0].astype(label_dtype(n)), min_size)
    scores = np.where(above, probabilities, -1.0)
    labels = (np.argmax(scores, axis=0) + 1).astype(label_dtype(n))
    labels[~above.any(axis=0)] = 0
    return remove_small_objects(labels, min_size)


def _per_class(labels: np.ndarray, change) -> np.ndarray:
    """Apply ``change(mask) -> mask`` to each class and rebuild the labels (a class never takes
    another class's pixels; pixels a class gives up become background)."""
    out = labels.copy()
    for value in np.unique(labels[labels > 0]):
        mask = labels == value
        new = change(mask)
        out[mask & ~new] = 0
        out[new & (labels == 0)] = value
    return out


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes enclosed by a class (per plane for 2D axes, or in nD as given)."""
    return _per_class(labels, ndi.binary_fill_holes)


def smooth(labels: np.ndarray, radius: int) -> np.ndarray:
    """Smooth class boundaries: a binary opening then closing with a disk (2D) or ball of ``radius``."""
    if radius <= 0:
        return labels
    footprint = (disk if labels.ndim == 2 else ball)(radius)
    if labels.ndim > 3:
        raise ValueError(f"smooth works on 2D or 3D labels; got {labels.ndim}D: apply it per plane")
    return _per_class(labels, lambda m: ndi.binary_closing(ndi.binary_opening(m, footprint), footprint))


@dataclass(frozen=True)
class Instances:
    """Instance labels: ``ids`` holds 0 (background) and 1..N, one per object; ``classes[i - 1]``
    is the class value (label of :func:`labels_from_probabilities`) of object ``i``."""

    ids: np.ndarray
    classes: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class InstanceSettings:
    """How instances are made from class labels: ``split`` touching objects, seeds at least
    ``min_distance`` px apart (the widget's "Split (px)", the CLI's ``--split``)."""

    split: bool = True
    min_distance: int = 5

    @classmethod
    def chosen(cls, instances: bool, split_distance: int) -> InstanceSettings | None:
        """The settings for a split distance (None: no instances; distance 0: no split)."""
        return cls(split_distance > 0, max(1, split_distance)) if instances else None

    def apply(self, labels: np.ndarray, probabilities: np.ndarray | None = None) -> Instances:
        """The instances of ``labels`` (see :func:`instances_from_labels`)."""
        return instances_from_labels(labels, probabilities, split=self.split, min_distance=self.min_distance)


def instance_scores(instances: Instances, probabilities: np.ndarray) -> list[float]:
    """Each object's mean probability of its class inside it (COCO's detection score)."""
    scores = np.zeros(instances.count)
    for value in set(instances.classes):
        ids = [i + 1 for i, c in enumerate(instances.classes) if c == value]
        means = ndi.mean(np.asarray(probabilities[value - 1], np.float64), labels=instances.ids, index=ids)
        scores[np.asarray(ids) - 1] = means
    return [round(float(s), 6) for s in scores]


def _split_touching(mask: np.ndarray, probability: np.ndarray | None, min_distance: int, seeds: str) -> np.ndarray:
    """Seeded watershed of one class mask: seeds at peaks of the distance transform (or of the
    probability), flooding ``-distance`` (or ``-probability``) within the mask."""
    components = connected_components(mask, connectivity=mask.ndim)
    distance = ndi.distance_transform_edt(mask)
    relief = probability if seeds == "probability" and probability is not None else distance
    peaks = peak_local_max(relief, min_distance=max(1, min_distance), labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    found = np.unique(components[markers > 0])  # a component without a peak keeps its own seed
    missing = np.setdiff1d(np.unique(components[components > 0]), found)
    for i, component in enumerate(missing, start=len(peaks) + 1):
        markers[tuple(np.argwhere(components == component)[0])] = i
    return watershed(-relief, markers, mask=mask)


def instances_from_labels(
    labels: np.ndarray,
    probabilities: np.ndarray | None = None,
    *,
    split: bool = True,
    min_distance: int = 5,
    seeds: str = "distance",
    min_size: int = 0,
    dims: int = 2,
) -> Instances:
    """One id per object of every class: connected components, touching objects split by a seeded watershed.

    Args:
        labels: Class labels (0 = background), ``(..., Y, X)``.
        probabilities: ``(P, ...)`` maps the labels came from (needed for ``seeds="probability"``).
        split: Split touching objects (seeded watershed); False keeps connected components.
        min_distance: Smallest distance in pixels between two seeds (about an object's radius).
        seeds: ``"distance"``: peaks of the distance to the background; ``"probability"``: peaks
            of the class's probability.
        min_size: Objects smaller than this many pixels are dropped.
        dims: 2: objects per plane of the leading axes; 3: objects in the last three axes (stacks).

    Returns:
        :class:`Instances` with ids numbered 1..N in scan order of their first pixel.
    """
    if seeds not in ("distance", "probability"):
        raise ValueError(f"seeds must be 'distance' or 'probability'; got {seeds!r}")
    if dims not in (2, 3) or labels.ndim < dims:
        raise ValueError(f"dims must be 2 or 3 and at most the labels' {labels.ndim} axes; got {dims}")
    min_size = check_min_size(min_size)
    ids = np.zeros(labels.shape, np.int32)
    classes: list[int] = []
    for index in np.ndindex(*labels.shape[: labels.ndim - dims]):
        part = labels[index]
        for value in np.unique(part[part > 0]):
            mask = part == value
            probability = probabilities[(int(value) - 1, *index)] if probabilities is not None else None
            objects = (
                _split_touching(mask, probability, min_distance, seeds)
                if split
                else connected_components(mask, connectivity=mask.ndim)
            )
            sizes = np.bincount(objects.ravel())
            for obj in np.flatnonzero(sizes[1:]) + 1:  # ids present, background (0) left out
                if sizes[obj] < min_size:
                    continue
                classes.append(int(value))
                ids[index][objects == obj] = len(classes)
    return _renumbered(ids, classes)


def _renumbered(ids: np.ndarray, classes: list[int]) -> Instances:
    """Ids in scan order of each object's first pixel, so equal inputs give equal numbering."""
    flat = ids.ravel()
    values, first = np.unique(flat, return_index=True)
    order = values[np.argsort(first)]
    order = order[order > 0]
    mapping = np.zeros(len(classes) + 1, np.int64)
    mapping[order] = np.arange(1, len(order) + 1)
    return Instances(mapping[ids].astype(label_dtype(len(order))), tuple(classes[i - 1] for i in order))
