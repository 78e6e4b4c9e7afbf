"""Learn from corrections: fine-tune the decoder on label images an annotator fixed, on a CPU, in minutes.

CLIPSeg's CLIP towers are frozen (as in the paper); only the small decoder learns. Each training
image goes through the image tower once per augmentation (identity, horizontal and vertical
flips, 180° rotation), and its reduced taps are kept in memory and reused every epoch; the class
prompts are embedded once. What trains: FiLM, the decoder blocks and the head. The input
projections (``reduces``) stay as they are, so the cached taps stay valid and memory stays at
~0.4 MB per image and augmentation (rd64) instead of ~4.5 MB for raw taps.

How it trains (measured on real nuclei crops with ``benchmarks/bench_loop.py``, see
docs/finetune.md): AdamW on batches of ``batch_size`` examples decoded in one call, the learning
rate decayed on a cosine over the planned steps, the gradient norm clipped, and **dropout off**
(the decoder's own 0.1 dropout made the held-out IoU jump from epoch to epoch and cost three
quarters of each step in torch's attention kernel). Loss: binary cross-entropy plus soft Dice, per
class, with the other classes and the background as negatives; pixels holding ``ignore_value``
(never looked at) are left out. Images are split into training and held-out ones; training stops
early when the held-out IoU stops improving, the best epoch is kept, and a decoder not better than
the base on the held-out images is refused (an outcome: ``accepted`` is False) unless forced. The
threshold moves from the usual one only on evidence (:func:`~.core.best_threshold`). A seed gives
the same weights on the same machine (with the same torch threads).

:func:`iter_finetune` prepares the examples of whole images (the CLI's ``finetune``, the dock's
Learn from corrections) and trains them in the one training core (:mod:`.train`, the
:class:`~.train.Epochs` schedule), as the annotation project's Learn does (its
:class:`~.train.Steps` schedule).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..segmentation.results import Progress
from .core import Example, example_from_features
from .train import (
    Epochs,
    FineTuneResult,
    FineTuneSettings,
    TrainingProgress,
    TrainingSet,
    iter_train,
    split_newest,
)

if TYPE_CHECKING:
    import torch

    from ..segmentation.predictor import ClipSegPredictor

__all__ = ["FineTuneResult", "FineTuneSettings", "TrainingPair", "TrainingProgress", "finetune", "iter_finetune"]


@dataclass(frozen=True)
class TrainingPair:
    """One corrected image: a 2D ``image`` (``(Y, X)`` or ``(Y, X, C)``) and its ``labels``
    (``(Y, X)``: 0 background, ``i`` = the i-th class, ``ignore_value`` = not looked at)."""

    image: Any
    labels: np.ndarray
    name: str = ""


def _variants(image: np.ndarray, labels: np.ndarray, augment: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = [(image, labels)]
    if augment:
        for flip in (lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: a[::-1, ::-1]):
            pairs.append((np.ascontiguousarray(flip(image)), np.ascontiguousarray(flip(labels))))
    return pairs


def _example(
    predictor: ClipSegPredictor, store: Any, image: np.ndarray, labels: np.ndarray, n_classes: int, ignore: int | None
) -> Example:
    (features,) = predictor.encode([image]) if store is None else (store.encode(predictor, image),)
    return example_from_features(features, labels, n_classes, ignore, predictor.model.config.vision.patch_size)


def check_pairs(pairs: Sequence[TrainingPair], n_classes: int, ignore: int | None = None) -> None:
    """Refuse, before any model work, data that cannot teach: fewer than two images, labels of
    the wrong shape or values, or masks that label nothing (ValueError saying which and what fits)."""
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 corrected images (one is held out to check the result); got {len(pairs)}")
    for i, pair in enumerate(pairs):
        labels = np.asarray(pair.labels)
        if labels.ndim != 2 or tuple(labels.shape) != tuple(np.shape(pair.image)[:2]):
            raise ValueError(f"pair {pair.name or i}: labels {labels.shape} must be the image's 2D shape")
        valid = labels[labels != ignore] if ignore is not None else labels
        if valid.size and (valid.min() < 0 or valid.max() > n_classes):
            raise ValueError(f"pair {pair.name or i}: label values must be 0..{n_classes} (or ignore_value)")
    labelled = lambda labels: bool(np.any((labels > 0) & (labels != ignore) if ignore is not None else labels > 0))  # noqa: E731
    if not any(labelled(np.asarray(p.labels)) for p in pairs):
        raise ValueError(
            f"the {len(pairs)} corrected masks label nothing: every pixel is background (0)"
            f"{' or ignored' if ignore is not None else ''}. Paint the objects of each class (label 1 = the first "
            "prompt) before fine-tuning"
        )


def _prepare(
    predictor: ClipSegPredictor,
    pairs: Sequence[TrainingPair],
    classes: Sequence[str],
    settings: FineTuneSettings,
    cache_dir: Any,
) -> Generator[Progress, None, tuple[list[list[Example]], torch.Tensor]]:
    """Encode every image (and its augmentations) once, or read them from ``cache_dir``; embed the classes once."""
    from .feature_store import FeatureStore

    store = FeatureStore(cache_dir, predictor.model) if cache_dir is not None else None
    conditionals = predictor.embed_prompts(list(classes)).clone()
    examples = []
    for i, pair in enumerate(pairs):
        variants = _variants(np.asarray(pair.image), np.asarray(pair.labels), settings.augment)
        n, ignore = len(classes), settings.ignore_value
        examples.append([_example(predictor, store, im, lab, n, ignore) for im, lab in variants])
        yield Progress(i + 1, len(pairs), f"encoding image {i + 1} of {len(pairs)}")
    return examples, conditionals


def iter_finetune(
    predictor: ClipSegPredictor,
    pairs: Sequence[TrainingPair],
    classes: Sequence[str],
    settings: FineTuneSettings | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    **changes: Any,
) -> Generator[Progress, None, FineTuneResult]:
    """Train a copy of the decoder on ``pairs`` (the model itself is not changed).

    Args:
        predictor: A :class:`~napari_clipseg.segmentation.predictor.ClipSegPredictor` (its ``stop`` cancels).
        pairs: Corrected images, oldest first (the last are held out: :func:`~.train.split_newest`);
            label ``i`` is ``classes[i - 1]``.
        classes: The class prompts (texts), in label order.
        settings: :class:`FineTuneSettings`; keywords change fields (``epochs=20``).
        cache_dir: A folder that keeps the encoded images
            (:class:`~napari_clipseg.learning.feature_store.FeatureStore`), so a later run on the
            same images and model skips the image tower.

    Yields :class:`Progress` while encoding, then a :class:`TrainingProgress` per epoch; returns
    the :class:`FineTuneResult` of the best epoch, ``accepted`` only when it beat the model's
    decoder on the held-out images (or ``force``): a refusal is an outcome, not an exception.

    Raises:
        ValueError: fewer than 2 pairs, labels that do not fit, or masks that label nothing.
    """
    from ..modeling.decoder_files import base_identity

    settings = dataclasses.replace(settings or FineTuneSettings(), **changes)
    check_pairs(pairs, len(classes), settings.ignore_value)
    examples, conditionals = yield from _prepare(predictor, pairs, classes, settings, cache_dir)
    names = [p.name or f"pair {i}" for i, p in enumerate(pairs)]
    train, held = split_newest(list(range(len(pairs))), settings.holdout)
    data = TrainingSet(
        pool=[(ex, 1.0) for i in train for ex in examples[i]],
        held_out=[examples[i][0] for i in held],  # held-out images as they are (no augmentation)
        training_names=[names[i] for i in train],
        held_out_names=[names[i] for i in held],
    )
    return (
        yield from iter_train(
            predictor.model.decoder,
            data,
            conditionals,
            settings,
            Epochs(settings.epochs, settings.patience, settings.max_steps),
            threshold=settings.threshold,
            stop=predictor.stop,
            describe=(list(classes), base_identity(predictor.model)),
        )
    )


def finetune(
    predictor: ClipSegPredictor, pairs: Sequence[TrainingPair], classes: Sequence[str], **kwargs: Any
) -> FineTuneResult:
    """Run :func:`iter_finetune` to its end (see there)."""
    from ..segmentation.results import run

    return run(iter_finetune(predictor, pairs, classes, **kwargs))
