"""A verified image as training examples, encoded exactly as pre-labelling encoded it.

Pre-labelling reads a plane as a whole at the model's input size (in the ``whole`` and ``both``
modes) with the intensity range of the whole image; reading it here the same way gives the same
model-input pixels, so the same key in the project's feature store: a verified image costs no
image-tower pass when it is learnt from.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..learning.core import Example, example_from_features
from ..segmentation.options import SegmentOptions


def examples_of(
    path: str | os.PathLike, labels: np.ndarray, predictor: Any, options: SegmentOptions, n_classes: int
) -> list[Example]:
    """One :class:`~napari_clipseg.learning.core.Example` per plane of the image at ``path``."""
    from ..datasets.steps import input_options
    from ..io.inputs import open_image
    from ..segmentation.pipeline import plan_planes
    from ..segmentation.transforms import intensity_range

    opened = open_image(path)
    options = input_options(options, opened)
    geometry = plan_planes(opened.data, options)
    value_range = options.intensity or intensity_range(geometry.data, predictor.percentiles)
    patch = predictor.model.config.vision.patch_size
    examples = []
    for index in geometry.planes:
        (features,) = predictor.encode([geometry.data[index]], value_range=value_range, channels=options.channels)
        examples.append(example_from_features(features, np.asarray(labels[index]), n_classes, None, patch))
    return examples
