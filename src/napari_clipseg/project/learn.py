"""A project's Learn: bounded in time, warm-started, checked against the decoder it would replace.

Every verified image is one training example per plane: its taps (from the project's store, the
ones pre-labelling encoded, so a Learn runs no image tower for them) and its verified labels. A
Learn trains in the one training core (:func:`~napari_clipseg.learning.train.iter_train`) with
its :class:`~napari_clipseg.learning.train.Steps` schedule, from the *current* decoder, on batches
drawn from all verified images but the newest, images verified since the last Learn drawn
:data:`NEW_WEIGHT` times as often; so its time is flat in the number of verified images. The
newest verified images are held out (:func:`~napari_clipseg.learning.train.split_newest`): the
current decoder pre-labelled them and no decoder has trained on them. The new decoder replaces the
current one only when it is better there; otherwise the current decoder stays, and that is an
outcome of the loop, not an error. Verified images that label nothing are refused before any
training (a decoder learnt from them could only predict nothing). With a single verified image
there is nothing to hold out: that Learn learns the pixel refiner alone, each half of the image
judged on the other (:meth:`~.refine.PixelLearner.learn_within`), so the second image of the queue
is already refined.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ProjectError, RecordError
from ..io.outputs import read_output
from ..learning.settings import FineTuneSettings, check_positive
from ..segmentation.options import SegmentOptions
from ..segmentation.results import Progress
from .manifest import DecoderRecord, Threshold
from .model import ProjectModel
from .sources import Sources
from .state import ImageEntry, ProjectState

if TYPE_CHECKING:  # torch is imported by the first Learn, not by opening a project
    import torch

    from ..learning.core import Example
    from ..learning.train import FineTuneResult
    from .refine import PixelLearner, PixelOutcome

logger = logging.getLogger(__name__)

#: Images verified since the last Learn are drawn this many times as often as the others.
NEW_WEIGHT = 3.0


@dataclass(frozen=True)
class LearnOutcome:
    """What a Learn did: the training core's ``result`` (the decoder, accepted or refused), what the
    pixel refiner found (``pixels``; None when none was learnt), whether a new decoder version was
    kept (``accepted``), the decoder in use after it (``decoders/NNN``; None: the base's) and its
    threshold, and whether the Learn before it was refused too (``repeated``: say it once)."""

    result: FineTuneResult
    accepted: bool
    decoder: str | None
    threshold: Threshold
    pixels: PixelOutcome | None = None
    repeated: bool = False
    elapsed: float = 0.0  # the whole Learn (the decoder's training, then the refiner's), seconds

    iou = property(lambda self: self.pixels.refined_iou if self._refined else self.result.iou)
    current_iou = property(lambda self: self.pixels.current_iou if self._refined else self.result.base_iou)
    training = property(lambda self: tuple(self.result.training))
    held_out = property(lambda self: tuple(self.result.held_out))
    steps = property(lambda self: self.result.steps)
    seconds = property(lambda self: self.elapsed or self.result.seconds)
    _refined = property(lambda self: self.pixels is not None and self.pixels.kept and self.accepted)

    @property
    def message(self) -> str:
        if self.pixels is not None and self.pixels.halves:  # one verified image: the refiner alone
            p = self.pixels
            if self._refined:
                return (
                    f"Learnt a pixel refiner from the first verified image (each half judged on the other): IoU "
                    f"{p.current_iou:.2f} -> {p.refined_iou:.2f}. The decoder learns from the second image on."
                )
            return (
                f"The pixel refiner learnt from the first verified image was not better on its halves (IoU "
                f"{p.refined_iou:.2f}, now {p.current_iou:.2f}): verify another image, and the next Learn tries again."
            )
        if not self._refined:
            refused = self.pixels is not None and not self.pixels.kept
            return self.result.message + (
                f" The pixel refiner was not better on them (IoU {self.pixels.refined_iou:.2f}, the decoder alone "
                f"{self.pixels.plain_iou:.2f}): the decoder's own map is kept."
                if refused
                else ""
            )
        images = len(self.training) + len(self.held_out)
        return (
            f"Learnt from {images} verified images: decoder + pixel refiner: held-out IoU {self.current_iou:.2f} -> "
            f"{self.iou:.2f} on the {len(self.held_out)} newest (the decoder alone {self.pixels.plain_iou:.2f})."
        )


@dataclass(frozen=True)
class VerifiedImage:
    """One verified image as the Learn uses it: its examples (one per plane), when it was verified,
    and whether it labels anything."""

    name: str
    examples: tuple[Example, ...]
    verified_at: int
    labelled: bool


def learn_settings(settings: dict[str, Any]) -> tuple[FineTuneSettings, int | None, bool]:
    """The settings of a Learn (:class:`FineTuneSettings` fields, ``epochs``, ``refiner``), checked
    before any model work; returns them, the passes asked for (None: ``steps``) and whether a
    pixel refiner is learnt too (:mod:`.refine`; on unless ``refiner=False``).

    Raises:
        TypeError: an unknown setting; ValueError: a count below 1.
    """
    settings = dict(settings)
    epochs = settings.pop("epochs", None)
    refiner = bool(settings.pop("refiner", True))
    known = {f.name for f in dataclasses.fields(FineTuneSettings)} | {"epochs", "refiner"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"unknown Learn setting(s) {', '.join(unknown)}; the settings are {', '.join(sorted(known))}")
    if epochs is not None:
        check_positive(epochs=epochs)
    return dataclasses.replace(FineTuneSettings(augment=False), **settings), epochs, refiner


class Learner:
    """A project's learning: the examples of its verified images (made once per verification)
    and how many Learns in a row were refused."""

    def __init__(
        self,
        state: ProjectState,
        model: ProjectModel,
        sources: Sources,
        prompts: list[Any],
        options: SegmentOptions,
        stop: threading.Event,
        pixels: PixelLearner,
    ) -> None:
        self.state, self.model, self.sources, self.prompts = state, model, sources, prompts
        self.options, self.stop, self.pixels = options, stop, pixels
        self.refusals = 0
        self.versions = DecoderVersions(state)
        self._images: dict[str, VerifiedImage] = {}

    @property
    def classes(self) -> list[str]:
        return [p if isinstance(p, str) else p.label for p in self.prompts]

    def due(self, every: int) -> bool:
        """Whether ``every`` images were verified since the last Learn."""
        verified = list(self.state.in_state("verified"))
        learnt_at = self.state.manifest.learnt_at
        return bool(every) and sum((e.verified_at or 0) > learnt_at for e in verified) >= every

    def iter_learn(self, settings: dict[str, Any]) -> Generator[Progress, None, LearnOutcome]:
        """One Learn (see :meth:`~.project.Project.iter_learn`)."""
        from ..learning.train import Steps, TrainingSet, iter_train, split_newest
        from ..modeling.decoder_files import base_identity

        started = time.perf_counter()
        chosen, epochs, with_refiner = learn_settings(settings)
        if not all(isinstance(p, str) for p in self.prompts):
            raise ProjectError("learning from corrections needs text prompts (this project has an example prompt)")
        verified = [e for e in self.state.in_state("verified") if self.sources.still_there(e.name)]
        least = 1 if with_refiner else 2  # one image teaches the refiner alone; a decoder needs one held out
        if len(verified) < least:
            raise ProjectError(
                f"verify at least {least} image{'s' * (least > 1)} before learning ({len(verified)} verified)"
            )
        predictor = self.model.predictor(self.state.decoder_path)
        images = yield from self._read(verified, predictor, least)
        if len(images) == 1:
            return (yield from self._learn_within(images[0], predictor, chosen, started))
        learnt_at = self.state.manifest.learnt_at
        train, held = split_newest(sorted(images, key=lambda v: v.verified_at), chosen.holdout)
        pool = [(ex, NEW_WEIGHT if v.verified_at > learnt_at else 1.0) for v in train for ex in v.examples]
        data = TrainingSet(
            pool, [ex for v in held for ex in v.examples], [v.name for v in train], [v.name for v in held]
        )
        steps = chosen.steps if epochs is None else epochs * -(-len(pool) // min(chosen.batch_size, len(pool)))
        result = yield from iter_train(
            predictor.model.decoder,
            data,
            predictor.embed_prompts(self.classes).clone(),
            chosen,
            Steps(steps),
            threshold=self.state.decoder_threshold(self.state.decoder),
            stop=self.stop,
            describe=(self.classes, base_identity(predictor.model)),
        )
        pixels = None
        if with_refiner:
            yield Progress(0, 1, "learning the pixel refiner")
            own, shown = self.state.decoder_threshold(self.state.decoder), self.state.threshold_of(self.state.decoder)
            pairs = [[(v.name, self.state.entry(v.name).path) for v in part] for part in (train, held)]
            decoder_state = result.state if result.accepted else None
            threshold = result.threshold if result.accepted else own
            pixels = self.pixels.learn(decoder_state, self.state.decoder_path, *pairs, threshold, shown)
        return self._commit(result, pixels, predictor.model.decoder, images, started)

    def _learn_within(
        self, image: VerifiedImage, predictor: Any, chosen: FineTuneSettings, started: float
    ) -> Generator[Progress, None, LearnOutcome]:
        """The Learn of a single verified image: the pixel refiner alone (see the module docstring)."""
        from ..learning.train import FineTuneResult
        from ..modeling.decoder_files import base_identity

        yield Progress(0, 1, "learning the pixel refiner from the first verified image")
        decoder = self.state.decoder
        own, shown = self.state.decoder_threshold(decoder), self.state.threshold_of(decoder)
        pair = (image.name, self.state.entry(image.name).path)
        pixels = self.pixels.learn_within(self.state.decoder_path, pair, own, shown)
        iou, base = pixels.current_iou, base_identity(predictor.model)
        unchanged = FineTuneResult(
            {}, self.classes, base, chosen, iou, iou, 0, False, training=[image.name], threshold=own
        )
        return self._commit(unchanged, pixels, predictor.model.decoder, [image], started)

    def _commit(
        self,
        result: FineTuneResult,
        pixels: PixelOutcome | None,
        current: torch.nn.Module,
        images: list[VerifiedImage],
        started: float,
    ) -> LearnOutcome:
        """Keep what the Learn made when it is better (``current``: the decoder in use), log it,
        and say what it did."""
        record = self.versions.keep(result, pixels, current)
        self.refusals = 0 if record is not None else self.refusals + 1
        decoder = record.folder if record else self.state.manifest.decoder
        outcome = LearnOutcome(result, record is not None, decoder, None, pixels, self.refusals >= 2)
        log = {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "verified": len(images),
            "kept": record.folder if record else None,
            "refiner": bool(record and record.refiner),
            "iou": outcome.iou,
            "current_iou": outcome.current_iou,
            "seconds": round(time.perf_counter() - started, 2),
        }
        self.state.commit_learn(max(v.verified_at for v in images), record, log)
        threshold = self.state.threshold_of(self.state.decoder)  # the one in use now, kept or not
        return dataclasses.replace(outcome, threshold=threshold, elapsed=log["seconds"])

    def _read(
        self, verified: list[ImageEntry], predictor: Any, least: int
    ) -> Generator[Progress, None, list[VerifiedImage]]:
        """The verified images that can be read (a damaged one is left out, said); refused when
        fewer than ``least``, or when none labels anything."""
        yield Progress(0, len(verified), "reading the verified images")
        images = []
        for number, entry in enumerate(verified, start=1):
            try:
                images.append(self._image(entry, predictor))
            except (RecordError, OSError, ValueError) as e:  # damaged by hand or by the disk: left out, said
                logger.warning("left out of the Learn: the verified labels of %s cannot be read (%s)", entry.name, e)
            if number % 16 == 0:
                yield Progress(number, len(verified), f"read {number} of {len(verified)} verified images")
        if len(images) < least:
            raise ProjectError(
                f"verify at least {least} readable image{'s' * (least > 1)} before learning ({len(images)} can be read)"
            )
        if not any(v.labelled for v in images):
            raise ProjectError(
                f"the {len(images)} verified images label nothing (every pixel is background): a decoder learnt "
                f"from them could only predict nothing. Label the {', '.join(self.classes)} in a few images first"
            )
        return images

    def _image(self, entry: ImageEntry, predictor: Any) -> VerifiedImage:
        """A verified image's examples (its taps from the store when pre-labelling encoded them)."""
        from .training import examples_of

        known = self._images.get(entry.name)
        if known is not None and known.verified_at == entry.verified_at:
            return known
        labels = np.asarray(read_output(self.state.folder.verified / entry.name))
        made = examples_of(entry.path, labels, predictor, self.options, len(self.classes))
        image = VerifiedImage(entry.name, tuple(made), entry.verified_at or 0, bool(np.any(labels > 0)))
        self._images[entry.name] = image
        return image


class DecoderVersions:
    """The decoder versions a project keeps (``decoders/NNN``, each with its refiner if one is kept)."""

    def __init__(self, state: ProjectState) -> None:
        self.state = state

    def keep(self, result: FineTuneResult, pixels: PixelOutcome | None, current: Any) -> DecoderRecord | None:
        """A new decoder version (the decoder learnt if it was accepted, else the one in use, with
        the refiner if it was kept) saved as the next ``decoders/NNN``, when it is better."""
        from ..modeling.decoder_files import save_decoder

        kept = pixels is not None and pixels.kept
        better_pixels = kept and pixels.refined_iou > pixels.current_iou
        if not (result.accepted or better_pixels):
            return None
        if not result.accepted:  # the decoder in use, now with a refiner
            state = {k: v.detach().clone() for k, v in current.state_dict().items()}
            own = self.state.decoder_threshold(self.state.decoder)
            result = dataclasses.replace(result, state=state, accepted=True, iou=result.base_iou, threshold=own)
        numbers = [int(p.name) for p in self.state.folder.decoders.glob("[0-9]*") if p.name.isdigit()]
        relative = f"decoders/{max(numbers, default=0) + 1:03d}"
        save_decoder(result, self.state.folder.root / relative, durable=True)
        if kept:
            pixels.refiner.save(self.state.folder.root / relative)
        images, held = (*result.training, *result.held_out), tuple(result.held_out)
        ious = (pixels.refined_iou, pixels.current_iou) if kept else (result.iou, result.base_iou)
        return DecoderRecord(relative, images, *ious, held, result.threshold, kept)


def find_decoder(state: ProjectState, name: str | None) -> DecoderRecord | None:
    """The record of the decoder ``name`` (``001`` or ``decoders/001``; None: the base model's).

    Raises:
        ProjectError: the project learnt no such decoder.
    """
    if name is None:
        return None
    record = state.manifest.record(str(name))
    if record is None:
        names = ", ".join(d.name for d in state.manifest.decoders) or "none yet"
        raise ProjectError(f"{state.folder.root} has no decoder {name!r} (decoders: {names}; or the base model)")
    return record
