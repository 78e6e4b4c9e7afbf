"""Training pairs from files: images matched by name with corrected label images (or batch outputs)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io.inputs import named_entries, open_image
from ..io.records import RECORD_NAME
from .finetune import TrainingPair


def read_corrected_labels(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """A label image and, for a batch output folder or a file with a record, its class names."""
    from ..io.outputs import read_labels_file, read_output
    from ..io.records import class_names, read_record, sidecar_path

    if (path / RECORD_NAME).is_file():
        return np.asarray(read_output(path)), class_names(read_record(path / RECORD_NAME))
    names = class_names(read_record(sidecar_path(path))) if sidecar_path(path).is_file() else None
    return np.asarray(read_labels_file(path)), names


def pairs_from_files(
    images: Sequence[str | os.PathLike], masks: Sequence[str | os.PathLike]
) -> tuple[list[TrainingPair], list[str] | None]:
    """Pairs of images and label images matched by name (a stack gives one pair per plane).

    Returns:
        The pairs, and the class names the label files' records give (None when they give none).

    Raises:
        ValueError: no name matches, shapes differ, or the records disagree on the classes.
    """
    image_paths = {k: v for source in images for k, v in named_entries(source).items()}
    mask_paths = {k: v for source in masks for k, v in named_entries(source).items()}
    names = sorted(set(image_paths) & set(mask_paths))
    if not names:
        raise ValueError(
            f"no image matches a mask by name (images: {sorted(image_paths)[:3]}, masks: {sorted(mask_paths)[:3]})"
        )
    pairs, classes = [], None
    for name in names:
        image = np.asarray(open_image(image_paths[name]).data)
        labels, found = read_corrected_labels(mask_paths[name])
        if found is not None and classes is not None and found != classes:
            raise ValueError(f"{mask_paths[name]} has classes {found}, other masks {classes}")
        classes = found or classes
        pairs += image_pairs(image, labels, name)
    return pairs, classes


def image_pairs(image: np.ndarray, labels: np.ndarray, name: str) -> list[TrainingPair]:
    """The training pairs of one image and its labels: itself, or one pair per plane of a stack.

    Raises:
        ValueError: the labels do not have the image's spatial shape.
    """
    if tuple(image.shape[: labels.ndim]) != tuple(labels.shape):
        raise ValueError(f"{name}: image {image.shape} and labels {labels.shape} do not match")
    if labels.ndim == 2:
        return [TrainingPair(image, labels, name)]
    return [TrainingPair(image[z], labels[z], f"{name}#{z}") for z in range(labels.shape[0])]
