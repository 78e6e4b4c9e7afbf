"""A verified image read exactly as pre-labelling read it: its planes, and its training examples.

Pre-labelling reads a plane as a whole at the model's input size (in the ``whole`` and ``both``
modes) with the intensity range of the whole image; reading it here the same way
(:func:`planes_of`) gives the same model-input pixels, so the same key in the project's feature
store: a verified image costs no image-tower pass when it is learnt from, and the pixel refiner
(:mod:`.refine`) sees the planes and value range the pipeline refines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..constants import DEFAULT_PERCENTILES
from ..segmentation.options import SegmentOptions

if TYPE_CHECKING:  # torch is imported by the first Learn, not by opening a project
    from ..learning.core import Example


@dataclass(frozen=True)
class Planes:
    """An image as pre-labelling reads it: the image, its data, the planes segmented, their value
    range, and the options for this input."""

    image: Any
    data: Any
    planes: list[tuple[int, ...]]
    value_range: tuple[float, float] | None
    options: SegmentOptions

    @property
    def channels(self) -> int:
        plane = np.asarray(self.data[self.planes[0]])
        return plane.shape[-1] if plane.ndim == 3 else 1


def planes_of(
    path: str | os.PathLike, options: SegmentOptions, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> Planes:
    """The planes of the image at ``path``, read as pre-labelling reads them (one value range)."""
    from ..datasets.steps import input_options
    from ..io.inputs import open_image
    from ..segmentation.pipeline import plan_planes
    from ..segmentation.transforms import intensity_range

    opened = open_image(path)
    options = input_options(options, opened)
    geometry = plan_planes(opened.data, options)
    value_range = options.intensity or intensity_range(geometry.data, percentiles)
    return Planes(opened.data, geometry.data, list(geometry.planes), value_range, options)


def examples_of(
    path: str | os.PathLike, labels: np.ndarray, predictor: Any, options: SegmentOptions, n_classes: int
) -> list[Example]:
    """One :class:`~napari_clipseg.learning.core.Example` per plane of the image at ``path``."""
    from ..learning.core import example_from_features

    planes = planes_of(path, options, predictor.percentiles)
    patch = predictor.model.config.vision.patch_size
    examples = []
    for index in planes.planes:
        (features,) = predictor.encode(
            [planes.data[index]], value_range=planes.value_range, channels=planes.options.channels
        )
        examples.append(example_from_features(features, np.asarray(labels[index]), n_classes, None, patch))
    return examples
