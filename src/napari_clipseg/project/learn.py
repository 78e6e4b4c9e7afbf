"""A project's Learn: bounded in time, warm-started, checked against the decoder it would replace.

Every verified image is one training example per plane: its taps (from the project's store, the
ones pre-labelling encoded, so a Learn runs no image tower for them) and its verified labels. A
Learn starts from the *current* decoder and takes ``steps`` optimiser steps (the same
:class:`~napari_clipseg.learning.finetune.Optimiser` and loss as ``finetune``) on batches drawn
from all verified images but the newest, images verified since the last Learn drawn three times as
often; so its time is flat in the number of verified images. The newest verified images (a
quarter, one to four) are held out: the current decoder pre-labelled them and no decoder has
trained on them. The new decoder replaces the current one only when it is better there, at the
threshold :func:`~napari_clipseg.learning.finetune.best_threshold` keeps (it moves only on
evidence); otherwise the current decoder stays, and that is an outcome of the loop, not an error.
No flipped views are encoded: on the real nuclei crops they were worth no more than the images
themselves (docs/annotation-loop.md), and each would cost a tower pass.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ProjectError, RecordError
from ..segmentation.results import Progress

if TYPE_CHECKING:  # torch is imported by the first Learn, not by opening a project
    import torch

    from ..learning.core import Example
    from ..learning.finetune import FineTuneResult, FineTuneSettings
    from .state import ImageEntry

logger = logging.getLogger(__name__)

#: Images verified since the last Learn are drawn this many times as often as the others.
NEW_WEIGHT = 3.0
#: At most this many of the newest verified images are held out.
MAX_HELD_OUT = 4


@dataclass(frozen=True)
class LearnOutcome:
    """What a Learn did.

    Attributes:
        accepted: The new decoder is now the project's (better than the current one on the held-out images).
        iou: The new decoder's held-out IoU (at ``threshold`` when accepted).
        current_iou: The replaced (or kept) decoder's held-out IoU, at its threshold.
        threshold: The threshold in use after this Learn.
        decoder: The project-relative folder of the decoder in use after it (None: the base's).
        training, held_out: The names trained on and held out.
        steps: Optimiser steps taken.
        seconds: Wall time of the Learn.
        repeated: Refused, and the Learn before it was refused too (say it once, not every time).
        result: The training result (accepted Learns: what was saved).
    """

    accepted: bool
    iou: float
    current_iou: float
    threshold: Any
    decoder: str | None
    training: tuple[str, ...]
    held_out: tuple[str, ...]
    steps: int
    seconds: float
    repeated: bool = False
    result: FineTuneResult | None = None

    @property
    def base_iou(self) -> float:
        """The held-out IoU before this Learn (the name ``finetune``'s results use)."""
        return self.current_iou

    @property
    def message(self) -> str:
        images = f"{len(self.training) + len(self.held_out)} verified images"
        if self.accepted:
            return (
                f"Learnt from {images}: held-out IoU {self.current_iou:.2f} -> {self.iou:.2f} "
                f"on {len(self.held_out)} newest, threshold {_threshold_text(self.threshold)}."
            )
        return (
            f"The decoder stays as it was: what it learnt from {images} was not better on the "
            f"{len(self.held_out)} newest (held-out IoU {self.iou:.2f}, now {self.current_iou:.2f}). "
            "Verify a few more images; the next Learn tries again."
        )


def _threshold_text(threshold: Any) -> str:
    return ", ".join(f"{t:.2f}" for t in threshold) if isinstance(threshold, tuple) else f"{threshold:.2f}"


@dataclass(frozen=True)
class VerifiedExamples:
    """The examples of one verified image (one per plane), and when it was verified."""

    name: str
    examples: tuple[Example, ...]
    verified_at: int


def split(
    verified: Sequence[VerifiedExamples], holdout: float
) -> tuple[list[VerifiedExamples], list[VerifiedExamples]]:
    """Training images and the held-out newest ones (a share ``holdout``, one to :data:`MAX_HELD_OUT`)."""
    ordered = sorted(verified, key=lambda v: v.verified_at)
    held = min(MAX_HELD_OUT, max(1, round(len(ordered) * holdout)))
    return ordered[:-held], ordered[-held:]


def iter_learn_steps(
    decoder: torch.nn.Module,
    verified: Sequence[VerifiedExamples],
    conditionals: torch.Tensor,
    settings: FineTuneSettings,
    *,
    threshold: Any,
    last_learn: float,
    stop: Any,
    epochs: int | None = None,
) -> Generator[Progress, None, tuple[FineTuneResult, float]]:
    """Train a copy of ``decoder`` (the current one); returns the result (state, held-out IoU at
    the threshold it keeps, the names trained on and held out) and the current decoder's held-out IoU.

    ``epochs`` asks for that many passes over the training images instead of ``settings.steps``.
    """
    from ..learning.core import Optimiser, best_threshold, held_out_iou, sparkline
    from ..learning.finetune import FineTuneResult, TrainingProgress

    train, held = split(verified, settings.holdout)
    pool = [(ex, NEW_WEIGHT if v.verified_at > last_learn else 1.0) for v in train for ex in v.examples]
    held_out = [ex for v in held for ex in v.examples]
    current_iou = held_out_iou(decoder, held_out, conditionals, threshold)
    candidate = copy.deepcopy(decoder).float()
    batch = min(settings.batch_size, len(pool))
    steps = settings.steps if epochs is None else epochs * -(-len(pool) // batch)
    optimiser = Optimiser(candidate, settings, steps)
    rng = np.random.default_rng(settings.seed)
    weights = np.array([w for _, w in pool])
    weights = weights / weights.sum()
    losses: list[float] = []
    report = max(1, steps // 12)
    for step in range(1, steps + 1):
        picked = rng.choice(len(pool), size=batch, replace=False, p=weights)
        losses.append(optimiser.step([pool[i][0] for i in picked], conditionals, stop))
        if step % report == 0 or step == steps:
            stage = f"step {step} of {steps}: loss {losses[-1]:.3f} {sparkline(losses[::report])}"
            yield TrainingProgress(step, steps, stage, losses[-1], None, unit="step")
    scalar = not isinstance(threshold, tuple)
    if scalar:
        kept, iou = best_threshold(candidate, held_out, conditionals, float(threshold))
    else:
        kept, iou = threshold, held_out_iou(candidate, held_out, conditionals, threshold)
    result = FineTuneResult(
        state={k: v.detach().clone() for k, v in candidate.state_dict().items()},
        classes=[],
        base={},
        settings=dataclasses.replace(settings, steps=steps),
        base_iou=current_iou,
        iou=iou,
        best_epoch=0,
        history=[{"step": (i + 1) * report, "loss": loss} for i, loss in enumerate(losses[report - 1 :: report])],
        training=[v.name for v in train],
        held_out=[v.name for v in held],
        threshold=kept if scalar else None,
        threshold_iou=iou,
    )
    return result, current_iou


def keep_learnt(project: Any, result: Any, model: Any, names: list[str], learnt_at: int, accepted: bool) -> str | None:
    """Take a Learn's result in: an accepted decoder is saved as the next ``decoders/NNN``
    (numbered past every folder there) and becomes the current one; returns the current one."""
    import dataclasses

    from ..modeling.decoder_files import base_identity, save_decoder

    with project._lock:
        manifest = project._state.manifest
        manifest["learnt_at"] = learnt_at
        if accepted:
            numbers = [int(p.name) for p in project.folder.decoders.glob("[0-9]*") if p.name.isdigit()]
            relative = f"decoders/{max(numbers, default=0) + 1:03d}"
            result = dataclasses.replace(result, classes=project.classes, base=base_identity(model))
            save_decoder(result, project.folder.root / relative, durable=True)
            entry = {
                "folder": relative,
                "images": names,
                "iou": result.iou,
                "base_iou": result.base_iou,
                "held_out": result.held_out,
                "threshold": result.threshold,
            }
            manifest["decoders"] = [*manifest.get("decoders", []), entry]
            manifest["decoder"] = relative
            if not isinstance(project.threshold, tuple):
                manifest["threshold"] = result.threshold
        project._save()
        return manifest.get("decoder")


def use_decoder(project: Any, name: str | None) -> None:
    """Make the decoder ``name`` (or the base's, None) the one ``project`` uses (see
    :meth:`~.project.Project.use_decoder`)."""
    manifest = project._state.manifest
    chosen = None
    if name is not None:
        folder = name if str(name).startswith("decoders/") else f"decoders/{name}"
        known = {d["folder"]: d for d in manifest.get("decoders", [])}
        if folder not in known:
            names = ", ".join(f.split("/")[-1] for f in known) or "none yet"
            raise ProjectError(f"{project.folder.root} has no decoder {name!r} (decoders: {names}; or the base model)")
        chosen = known[folder]
    with project._lock:
        manifest["decoder"] = chosen["folder"] if chosen else None
        if not isinstance(project.options.threshold, tuple):
            manifest["threshold"] = chosen.get("threshold") if chosen else None
        project._save()


class Learner:
    """A project's learning: the examples of its verified images (made once per verification),
    when it last learnt, and how many Learns in a row were refused."""

    def __init__(self, learnt_at: int) -> None:
        self.learnt_at = learnt_at  # ns: images verified later are new to the next Learn
        self.refusals = 0
        self._examples: dict[str, tuple[int | None, VerifiedExamples]] = {}

    def due(self, verified: list[ImageEntry], every: int) -> bool:
        """Whether ``every`` images were verified since the last Learn (and two are, at least)."""
        return bool(every) and len(verified) >= 2 and sum((e.stamp or 0) > self.learnt_at for e in verified) >= every

    def examples(self, project: Any, entry: ImageEntry, predictor: Any) -> VerifiedExamples:
        """The training examples of a verified image (its taps from the store when pre-labelling
        encoded them: the same pixels, the same key)."""
        from .training import examples_of

        known = self._examples.get(entry.name)
        if known is not None and known[0] == entry.stamp:
            return known[1]
        labels = project.verified_labels(entry.name)
        made = examples_of(entry.path, labels, predictor, project.options, len(project.classes))
        examples = VerifiedExamples(entry.name, tuple(made), entry.stamp or 0)
        self._examples[entry.name] = (entry.stamp, examples)
        return examples

    def iter_learn(self, project: Any, settings: dict[str, Any]) -> Generator[Progress, None, LearnOutcome]:
        """One Learn of ``project`` (see :meth:`~.project.Project.iter_learn`)."""
        from ..learning.finetune import FineTuneSettings

        settings = dict(settings)
        epochs = settings.pop("epochs", None)
        known = {f.name for f in dataclasses.fields(FineTuneSettings)} | {"epochs"}
        unknown = sorted(set(settings) - known)
        if unknown:
            names = ", ".join(sorted(known))
            raise TypeError(f"unknown Learn setting(s) {', '.join(unknown)}; the settings are {names}")
        chosen = dataclasses.replace(FineTuneSettings(augment=False), **settings)
        if not all(isinstance(p, str) for p in project.prompts):
            raise ProjectError("learning from corrections needs text prompts (this project has an example prompt)")
        verified = [e for e in project._state.in_state("verified") if project.still_there(e.name)]
        if len(verified) < 2:
            raise ProjectError(f"verify at least 2 images before learning ({len(verified)} verified)")
        started = time.perf_counter()
        predictor = project.model.predictor(project.decoder)
        yield Progress(0, len(verified), "reading the verified images")
        examples = []
        for number, entry in enumerate(verified, start=1):
            try:
                examples.append(self.examples(project, entry, predictor))
            except (RecordError, OSError, ValueError) as e:  # damaged by hand or by the disk: left out, said
                logger.warning("left out of the Learn: the verified labels of %s cannot be read (%s)", entry.name, e)
            if number % 16 == 0:
                yield Progress(number, len(verified), f"read {number} of {len(verified)} verified images")
        if len(examples) < 2:
            raise ProjectError(f"verify at least 2 readable images before learning ({len(examples)} can be read)")
        conditionals = predictor.embed_prompts(project.classes).clone()
        result, current_iou = yield from iter_learn_steps(
            predictor.model.decoder,
            examples,
            conditionals,
            chosen,
            threshold=project.threshold,
            last_learn=self.learnt_at,
            stop=project.stop,
            epochs=epochs,
        )
        accepted = bool(chosen.force or result.iou > current_iou or np.isnan(current_iou))
        self.learnt_at = max(e.stamp or 0 for e in verified)
        names = result.training + result.held_out
        decoder = keep_learnt(project, result, predictor.model, names, self.learnt_at, accepted)
        self.refusals = 0 if accepted else self.refusals + 1
        return LearnOutcome(
            accepted=accepted,
            iou=float(result.iou),
            current_iou=float(current_iou),
            threshold=project.threshold,
            decoder=decoder,
            training=tuple(result.training),
            held_out=tuple(result.held_out),
            steps=result.settings.steps,
            seconds=time.perf_counter() - started,
            repeated=self.refusals >= 2,
            result=result if accepted else None,
        )
