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
early when the held-out IoU stops improving, the best epoch is kept, and a decoder worse than the
base on the held-out images is refused unless forced. The threshold moves from the usual one only
on evidence (:func:`best_threshold`). A seed gives the same weights on the same machine (with the
same torch threads).

:func:`iter_finetune` trains from the model's decoder on whole images (the CLI's ``finetune``, the
dock's Learn from corrections); the annotation project's bounded Learn
(:mod:`napari_clipseg.project.learn`) uses the same :class:`Optimiser`, loss and threshold rule.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..constants import DEFAULT_THRESHOLD
from ..errors import TrainingRefusedError
from ..segmentation.results import Progress
from .core import (  # noqa: F401 - re-exported: the training core's names as they were here
    THRESHOLD_EVIDENCE,
    THRESHOLDS,
    TRAINABLE,
    Example,
    Optimiser,
    _held_out_iou,
    _loss,
    _trainable,
    best_threshold,
    example_from_features,
    held_out_iou,
    sparkline,
)

_Example = Example  # the name older code used

if TYPE_CHECKING:
    from ..segmentation.predictor import ClipSegPredictor


@dataclass(frozen=True)
class TrainingPair:
    """One corrected image: a 2D ``image`` (``(Y, X)`` or ``(Y, X, C)``) and its ``labels``
    (``(Y, X)``: 0 background, ``i`` = the i-th class, ``ignore_value`` = not looked at)."""

    image: Any
    labels: np.ndarray
    name: str = ""


@dataclass(frozen=True)
class FineTuneSettings:
    """How to train (every field is recorded with the decoder)."""

    #: Passes over the training examples (each pass: one step per ``batch_size`` of them).
    epochs: int = 120
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    #: Examples per optimiser step (decoded in one call).
    batch_size: int = 4
    #: Optimiser steps of a bounded Learn (the annotation project's; ``epochs`` there asks for passes instead).
    steps: int = 48
    #: Largest gradient norm (steadies the first steps from a decoder that never saw these images).
    clip_norm: float = 1.0
    holdout: float = 0.25
    patience: int = 24
    seed: int = 0
    augment: bool = True
    ignore_value: int | None = None
    dice_weight: float = 1.0
    threshold: float = DEFAULT_THRESHOLD
    force: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1:
            raise ValueError(f"epochs and patience must be at least 1; got {self.epochs}, {self.patience}")
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError(f"batch_size and steps must be at least 1; got {self.batch_size}, {self.steps}")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout must lie in (0, 1); got {self.holdout}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive; got {self.learning_rate}")


@dataclass(frozen=True)
class TrainingProgress(Progress):
    """Progress of a training run: after each epoch (or a project's Learn: every few optimiser
    steps, ``unit="step"``), its training ``loss`` and held-out ``iou``."""

    loss: float | None = None
    iou: float | None = None
    unit: str = "epoch"


@dataclass
class FineTuneResult:
    """A trained decoder and how it came about (apply or save it: :mod:`napari_clipseg.modeling.decoder_files`)."""

    state: dict[str, torch.Tensor]
    classes: list[str]
    base: dict[str, Any]
    settings: FineTuneSettings
    base_iou: float
    iou: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    training: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)
    #: The threshold that maximised the held-out IoU (used by default with this decoder), and that IoU.
    threshold: float = DEFAULT_THRESHOLD
    threshold_iou: float | None = None

    def metadata(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "base": self.base,
            "settings": dataclasses.asdict(self.settings),
            "metrics": {
                "base_iou": self.base_iou,
                "iou": self.iou,
                "best_epoch": self.best_epoch,
                "threshold_iou": self.threshold_iou,
            },
            "threshold": self.threshold,
            "history": self.history,
            "images": {"training": self.training, "held_out": self.held_out},
        }


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


def _split(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, round(n * holdout))
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


def _epoch(
    optimiser: Optimiser, examples: list[Example], conditionals: torch.Tensor, stop: Any, batch_size: int
) -> float:
    """One pass over the training examples (in the given order), ``batch_size`` at a time; the mean loss."""
    losses = [
        optimiser.step(examples[start : start + batch_size], conditionals, stop)
        for start in range(0, len(examples), batch_size)
    ]
    return float(np.mean(losses))


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


def _refuse_unless(force: bool, base_iou: float) -> None:
    if not force:
        raise TrainingRefusedError(
            f"training never beat the base decoder on the held-out images (IoU {base_iou:.3f}): "
            "add corrected images, or pass force=True to keep the last epoch"
        )


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
        pairs: Corrected images; label ``i`` is ``classes[i - 1]``.
        classes: The class prompts (texts), in label order.
        settings: :class:`FineTuneSettings`; keywords change fields (``epochs=20``).
        cache_dir: A folder that keeps the encoded images
            (:class:`~napari_clipseg.learning.feature_store.FeatureStore`), so a later run on the
            same images and model skips the image tower.

    Yields :class:`Progress` while encoding, then a :class:`TrainingProgress` per epoch; returns
    the :class:`FineTuneResult` of the best epoch.

    Raises:
        ValueError: fewer than 2 pairs, or labels that do not fit.
        TrainingRefusedError: the best decoder is worse than the base on the held-out images.
    """
    from ..modeling.decoder_files import base_identity

    settings = dataclasses.replace(settings or FineTuneSettings(), **changes)
    check_pairs(pairs, len(classes), settings.ignore_value)
    torch.manual_seed(settings.seed)
    examples, conditionals = yield from _prepare(predictor, pairs, classes, settings, cache_dir)
    train, held = _split(len(pairs), settings.holdout, settings.seed)
    held_out = [examples[i][0] for i in held]  # held-out images as they are (no augmentation)
    decoder = copy.deepcopy(predictor.model.decoder).float()
    batch = [ex for i in train for ex in examples[i]]
    trained = yield from _train(decoder, batch, held_out, conditionals, predictor.stop, settings)
    decoder.load_state_dict(trained.state)
    threshold, iou = best_threshold(decoder, held_out, conditionals, settings.threshold)
    names = [p.name or f"pair {i}" for i, p in enumerate(pairs)]
    return FineTuneResult(
        state=trained.state,
        classes=list(classes),
        base=base_identity(predictor.model),
        settings=settings,
        base_iou=trained.base_iou,
        iou=trained.iou,
        best_epoch=trained.best_epoch,
        history=trained.history,
        training=[names[i] for i in train],
        held_out=[names[i] for i in held],
        threshold=threshold,
        threshold_iou=iou,
    )


@dataclass
class _Trained:
    state: dict[str, torch.Tensor]
    base_iou: float
    iou: float
    best_epoch: int
    history: list[dict[str, float]]


def _train(
    decoder: torch.nn.Module,
    batch: list[Example],
    held_out: list[Example],
    conditionals: torch.Tensor,
    stop: Any,
    settings: FineTuneSettings,
) -> Generator[TrainingProgress, None, _Trained]:
    """Epochs with early stopping on the held-out IoU; the best epoch's weights (the last when forced)."""
    steps_per_epoch = -(-len(batch) // settings.batch_size)
    optimiser = Optimiser(decoder, settings, settings.epochs * steps_per_epoch)
    base_iou = best_iou = held_out_iou(decoder, held_out, conditionals, settings.threshold)
    best_state, best_epoch, history = copy.deepcopy(decoder.state_dict()), 0, []
    order_rng = np.random.default_rng(settings.seed)
    for epoch in range(1, settings.epochs + 1):
        order = [batch[j] for j in order_rng.permutation(len(batch))]
        loss = _epoch(optimiser, order, conditionals, stop, settings.batch_size)
        iou = held_out_iou(decoder, held_out, conditionals, settings.threshold)
        history.append({"epoch": epoch, "loss": loss, "iou": iou})
        if iou > best_iou:
            best_iou, best_epoch, best_state = iou, epoch, copy.deepcopy(decoder.state_dict())
        losses, ious = [h["loss"] for h in history], [base_iou] + [h["iou"] for h in history]
        stage = f"epoch {epoch}: loss {loss:.3f} {sparkline(losses)}, held-out IoU {iou:.3f} {sparkline(ious, 0, 1)}"
        yield TrainingProgress(epoch, settings.epochs, stage, loss, iou)
        if epoch - best_epoch >= settings.patience:
            break
    if best_epoch == 0:  # never better than the base: refused, or the last epoch when forced
        _refuse_unless(settings.force, base_iou)
        best_state, best_iou = copy.deepcopy(decoder.state_dict()), history[-1]["iou"]
    return _Trained(best_state, base_iou, best_iou, best_epoch, history)


def finetune(
    predictor: ClipSegPredictor, pairs: Sequence[TrainingPair], classes: Sequence[str], **kwargs: Any
) -> FineTuneResult:
    """Run :func:`iter_finetune` to its end (see there)."""
    from ..segmentation.results import run

    return run(iter_finetune(predictor, pairs, classes, **kwargs))
