"""The pixel refiner in a project: learnt in each Learn, applied to every pre-label of its decoder.

A Learn (:mod:`.learn`) first trains the decoder; then :class:`PixelLearner` learns a refiner on
top of the decoder that will be in use (the new one if it was kept, else the current one), from
the newest :data:`TRAIN_IMAGES` training images' decoder maps at the image's resolution and their
verified labels. It is kept only when decoder + refiner beats the decoder alone on the held-out
newest verified images at the image's resolution, with the speck size that leaves the fewest
object corrections there (:func:`fewest_corrections`). When the decoder's maps mislead it (an
early Learn: the decoder fits its few training images so well that a head learns to trust its
map, which an unseen image's map does not deserve), a head on the image's features alone is
judged the same way instead (``context=False``: it ignores the decoder's maps). A kept refiner is
learnt again from the held-out images too (the procedure was judged, and early Learns have one or
two images to spare) and stored in the decoder's folder (``decoders/NNN/refiner.*``).

The first verified image already teaches a refiner (:meth:`PixelLearner.learn_within`), as one
image teaches ilastik: no decoder can be judged on one image, but a refiner can be judged on half
of it. Each half (along the image's last axis) teaches a head on the image's features alone (the
decoder's maps of one image cannot teach how far to trust its maps of others), judged on the other
half; the refiner is kept, learnt from the whole image, when it beats the decoder there. Loading
that decoder attaches it (:func:`~napari_clipseg.segmentation.refiner.attach_refiner`), so the
pipeline refines every pre-label it makes, here or on a cluster's workers, and the record names it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.effort import object_corrections, objects
from ..evaluation.metrics import class_scores, mean_ignoring_nan
from ..segmentation.options import SegmentOptions
from ..segmentation.postprocess import labels_from_probabilities
from ..segmentation.refiner import SPECK_SIZES, PixelRefiner, lower_specks
from .model import ProjectModel
from .state import REFINED_THRESHOLD
from .training import Planes, planes_of

logger = logging.getLogger(__name__)

#: At most this many of the newest training images teach the refiner (its time stays flat).
TRAIN_IMAGES = 12


def refined(refiner: PixelRefiner, planes: Planes, probabilities: np.ndarray) -> np.ndarray:
    """The refined probabilities of a whole image (``(P, ...)`` like ``probabilities``)."""
    out = np.array(probabilities, dtype=np.float32)
    for index in planes.planes:
        where = (slice(None), *index)
        out[where] = refiner.refine_plane(planes.data[index], out[where], planes.value_range)
    return out


@dataclass(frozen=True)
class PixelOutcome:
    """What learning the refiner found on the held-out images (image resolution, mean IoU)."""

    refiner: PixelRefiner | None
    plain_iou: float  # the decoder alone
    refined_iou: float  # decoder + the new refiner
    current_iou: float  # the decoder in use now, with its refiner if it has one
    halves: bool = False  # learnt from one image, each half judged on the other (no held-out image)

    @property
    def kept(self) -> bool:
        return self.refiner is not None


class PixelLearner:
    """Learns a project's refiner (see the module docstring).

    Args:
        model: The project's model (base, store, the current decoder and its refiner).
        options: How images are segmented.
        classes: The class names.
        labels_of: The verified labels of an image, by name.
        stop: Cancels.
    """

    def __init__(
        self,
        model: ProjectModel,
        options: SegmentOptions,
        classes: list[str],
        labels_of: Callable[[str], np.ndarray],
        stop: threading.Event,
    ) -> None:
        self.model, self.options, self.classes, self.labels_of, self.stop = model, options, classes, labels_of, stop

    def learn(
        self,
        decoder_state: dict[str, Any] | None,
        current: Path | None,
        train: Sequence[tuple[str, str]],
        held: Sequence[tuple[str, str]],
        decoder_threshold: Any,
        current_threshold: Any,
    ) -> PixelOutcome:
        """Learn on ``train`` and judge on ``held`` (``(name, path)`` pairs) the refiner of the decoder
        with ``decoder_state`` (None: the current one, in ``current``); see the module docstring.
        ``decoder_threshold`` is the new decoder's (its maps alone), ``current_threshold`` that of
        the maps shown now."""
        predictor = self._predictor(decoder_state, current)
        rng = np.random.default_rng(0)
        samples, channels = [], 1
        for name, path in list(train)[-TRAIN_IMAGES:]:
            planes = planes_of(path, self.options)
            samples += self._samples(planes, self._maps(predictor, planes), self.labels_of(name), rng)
            channels = planes.channels
        current_predictor = self._shown_predictor(decoder_state, current)
        checks, shown_checks, held_samples = [], [], []
        for name, path in held:
            labels, planes = self.labels_of(name), planes_of(path, self.options)
            probabilities = self._maps(predictor, planes)
            shown = probabilities if current_predictor is None else self._maps(current_predictor, planes)
            checks.append((planes, probabilities, labels))
            shown_checks.append((planes, shown, labels))
            held_samples += self._samples(planes, probabilities, labels, rng)
        plain_iou, current_iou = _mean_iou(checks, decoder_threshold), _mean_iou(shown_checks, current_threshold)
        return self._choose([samples], [checks], plain_iou, current_iou, samples + held_samples, channels)

    def learn_within(
        self, current: Path | None, image: tuple[str, str], decoder_threshold: Any, current_threshold: Any
    ) -> PixelOutcome:
        """The refiner of the decoder in ``current`` from one verified image (``(name, path)``),
        each half judged on the other (see the module docstring)."""
        name, path = image
        labels, planes = self.labels_of(name), planes_of(path, self.options)
        probabilities = self._maps(self._predictor(None, current), planes)
        current_predictor = self._shown_predictor(None, current)
        shown = probabilities if current_predictor is None else self._maps(current_predictor, planes)
        folds = halves(planes, probabilities, labels)
        plain_iou = _mean_iou(folds, decoder_threshold)
        current_iou = _mean_iou(halves(planes, shown, labels), current_threshold)
        rng = np.random.default_rng(0)
        taught = [self._samples(*fold, rng) for fold in folds]
        whole = self._samples(planes, probabilities, labels, rng)
        # the pixels alone: maps of one image cannot teach how far to trust the maps of another
        checks = [folds[1:], folds[:1]]
        outcome = self._choose(taught, checks, plain_iou, current_iou, whole, planes.channels, (False,))
        return dataclasses.replace(outcome, halves=True)

    def _choose(
        self,
        taught: Sequence[list[Any]],
        checks: Sequence[Sequence[tuple[Planes, np.ndarray, np.ndarray]]],
        plain_iou: float,
        current_iou: float,
        everything: list[Any],
        channels: int,
        contexts: tuple[bool, ...] = (True, False),
    ) -> PixelOutcome:
        """Heads learnt on each of ``taught`` and judged on the ``checks`` beside it, for each of
        ``contexts`` in turn (with the decoder's maps, then without: where they mislead); the first
        better than the decoder alone there is learnt again from ``everything`` and kept."""
        from ..learning.pixels import learn_refiner

        for context in contexts:
            heads = [learn_refiner(samples, self.classes, channels, self.stop, context=context) for samples in taught]
            refiner_iou, min_size = judged(
                [(head, check) for head, part in zip(heads, checks, strict=True) for check in part]
            )
            if refiner_iou > plain_iou:
                break
        if refiner_iou <= plain_iou:
            return PixelOutcome(None, plain_iou, refiner_iou, current_iou)
        refiner = learn_refiner(everything, self.classes, channels, self.stop, context=context)
        return PixelOutcome(dataclasses.replace(refiner, min_size=min_size), plain_iou, refiner_iou, current_iou)

    def _samples(
        self, planes: Planes, probabilities: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> list[Any]:
        """The sampled pixels of every plane of one verified image."""
        from ..learning.pixels import sample_plane

        count = len(self.classes)
        return [
            sample_plane(planes.data[index], probabilities[(slice(None), *index)], labels[index], count, rng)
            for index in planes.planes
        ]

    def _predictor(self, decoder_state: dict[str, Any] | None, current: Path | None) -> Any:
        """A predictor of the decoder alone (``decoder_state``, else the one in ``current``): no refiner."""
        from ..segmentation.predictor import ClipSegPredictor

        model = self.model.with_decoder(current)
        if decoder_state is not None:
            decoder = copy.deepcopy(model.decoder)
            decoder.load_state_dict(decoder_state)
            model = model.with_decoder(decoder.eval())
        plain = copy.copy(model)
        plain.pixel_refiner = None
        predictor = ClipSegPredictor(plain, cache_bytes=0, store=self.model.store())
        predictor.stop = self.stop
        return predictor

    def _shown_predictor(self, decoder_state: dict[str, Any] | None, current: Path | None) -> Any:
        """A predictor of the maps shown now (the decoder in use, refined when it has a refiner);
        None when they are the plain maps already: the decoder kept as it is, without a refiner."""
        in_use = self.model.with_decoder(current)
        same = decoder_state is None and getattr(in_use, "pixel_refiner", None) is None
        return None if same else self.model.predictor(current)

    def _maps(self, predictor: Any, planes: Planes) -> np.ndarray:
        """The decoder's probabilities of an image at its resolution (as pre-labelling makes them)."""
        from ..segmentation.pipeline import iter_segment
        from ..segmentation.results import run

        result = run(iter_segment(planes.image, self.classes, predictor, planes.options))
        return np.asarray(result.probabilities, dtype=np.float32)


def judged(pairs: Sequence[tuple[PixelRefiner, tuple[Planes, np.ndarray, np.ndarray]]]) -> tuple[float, int]:
    """The held-out IoU of each refiner on its check (planes, decoder maps, verified labels), with
    the speck size that leaves the fewest object corrections there (:func:`fewest_corrections`)."""
    maps = [refined(refiner, planes, probabilities) for refiner, (planes, probabilities, _) in pairs]
    truths = [labels for _, (_, _, labels) in pairs]
    min_size = fewest_corrections(maps, truths)
    ious = [
        _iou(labels_from_probabilities(lower_specks(m, min_size), REFINED_THRESHOLD), t)
        for m, t in zip(maps, truths, strict=True)
    ]
    return float(mean_ignoring_nan(ious)), min_size


def fewest_corrections(maps: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> int:
    """The speck size of :data:`~napari_clipseg.segmentation.refiner.SPECK_SIZES` whose refined
    labels need the fewest object corrections against the verified ``truths`` (the smallest of equals)."""
    costs = []
    for size in SPECK_SIZES:
        labelled = [labels_from_probabilities(lower_specks(m.copy(), size), REFINED_THRESHOLD) for m in maps]
        costs.append(
            sum(object_corrections(objects(p), objects(t)).cost for p, t in zip(labelled, truths, strict=True))
        )
    return SPECK_SIZES[int(np.argmin(costs))]


def halves(
    planes: Planes, probabilities: np.ndarray, labels: np.ndarray
) -> list[tuple[Planes, np.ndarray, np.ndarray]]:
    """The two halves of an image along its last spatial axis: each its planes (cut lazily: a
    plane is read when it is refined or sampled), decoder maps and verified labels. The cut is at
    the median column of the labelled pixels (within the middle half of the image), so each half
    holds about half of the objects: one object in a corner gives both halves a part of it."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    width = labels.shape[-1]
    columns = np.nonzero(labels > 0)[-1]
    middle = int(np.median(columns)) if len(columns) else width // 2
    cut_at = int(np.clip(middle, width // 4, width - width // 4))
    return [
        (dataclasses.replace(planes, data=_Cut(planes.data, cut)), probabilities[..., cut], labels[..., cut])
        for cut in (slice(0, cut_at), slice(cut_at, width))
    ]


class _Cut:
    """The planes of ``data`` cut to ``columns`` (the last spatial axis; colour channels stay)."""

    def __init__(self, data: Any, columns: slice) -> None:
        self.data, self.columns = data, columns

    def __getitem__(self, index: tuple[int, ...]) -> np.ndarray:
        plane = np.asarray(self.data[index])
        return plane[:, self.columns]


def _mean_iou(checks: Sequence[tuple[Planes, np.ndarray, np.ndarray]], threshold: Any) -> float:
    """The mean IoU of the maps of ``checks`` (planes, maps, verified labels) at ``threshold``."""
    return float(mean_ignoring_nan([_iou(labels_from_probabilities(m, threshold), t) for _, m, t in checks]))


def _iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    values = [v for v in np.unique(truth) if v > 0] or [1]
    return float(mean_ignoring_nan([class_scores(predicted, truth, int(v))["iou"] for v in values]))
