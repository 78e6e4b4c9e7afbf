"""One training loop for every Learn: two schedules, one held-out rule, one outcome.

The Segment mode's fine-tuning from files (:mod:`.finetune`) and an annotation project's Learn
(:mod:`napari_clipseg.project.learn`) both call :func:`iter_train`:

- :class:`Epochs`: passes over the training examples with early stopping on the held-out IoU,
  the best pass kept (fine-tuning from files, whose images have no order in time);
- :class:`Steps`: a bounded number of optimiser steps on batches drawn by weight (the project's
  Learn: its time is flat in the number of images verified).

The held-out images are always the *newest* (the last of the order given: verification time in a
project, the files' order otherwise; :func:`split_newest`). The result is a :class:`FineTuneResult`
whose ``accepted`` says whether it beat the decoder it started from on the held-out images, at
the threshold :func:`~.core.best_threshold` keeps; a refusal is an outcome, never an exception.
A pixel learner (docs/annotation-loop.md) trains beside the decoder on the same split.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from ..constants import DEFAULT_THRESHOLD
from ..segmentation.results import Progress
from .core import Example, Optimiser, best_threshold, held_out_iou, sparkline
from .settings import FineTuneSettings, threshold_text

T = TypeVar("T")

#: At most this many of the newest images are held out.
MAX_HELD_OUT = 4


@dataclass(frozen=True)
class Epochs:
    """Passes over the training examples, stopping after ``patience`` passes without a better
    held-out IoU, or when ``max_steps`` optimiser steps are taken (a bound in time)."""

    epochs: int
    patience: int
    max_steps: int


@dataclass(frozen=True)
class Steps:
    """``steps`` optimiser steps on batches drawn by the examples' weights."""

    steps: int


@dataclass(frozen=True)
class TrainingProgress(Progress):
    """Progress of a training run: after each epoch (or every few steps, ``unit="step"``), its
    training ``loss`` and held-out ``iou``."""

    loss: float | None = None
    iou: float | None = None
    unit: str = "epoch"


@dataclass(frozen=True)
class FineTuneResult:
    """What a training run made (apply or save it: :mod:`napari_clipseg.modeling.decoder_files`).

    ``accepted``: better than the decoder it started from on the held-out images (or forced); a
    refused result is never saved or applied. ``base_iou`` is the starting decoder's held-out IoU
    at its threshold, ``iou`` the new one's at ``threshold`` (the one it keeps).
    """

    state: dict[str, torch.Tensor]
    classes: list[str]
    base: dict[str, Any]
    settings: FineTuneSettings
    base_iou: float
    iou: float
    best_epoch: int
    accepted: bool = True
    history: list[dict[str, float]] = field(default_factory=list)
    training: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)
    threshold: Any = DEFAULT_THRESHOLD
    threshold_iou: float | None = None
    steps: int = 0
    seconds: float = 0.0

    @property
    def message(self) -> str:
        """The outcome in one sentence (the dock and the command line say it as it is)."""
        images = f"{len(self.training) + len(self.held_out)} images"
        newest = f"the {len(self.held_out)} held out"
        if self.accepted:
            return (
                f"Learnt from {images}: held-out IoU {self.base_iou:.2f} -> {self.iou:.2f} on {newest}, "
                f"threshold {threshold_text(self.threshold)}."
            )
        return (
            f"The decoder stays as it was: what it learnt from {images} was not better on {newest} "
            f"(held-out IoU {self.iou:.2f}, now {self.base_iou:.2f}). "
            "Add a few more images; the next Learn tries again."
        )

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
            "threshold": list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold,
            "history": self.history,
            "images": {"training": self.training, "held_out": self.held_out},
        }


def split_newest(ordered: Sequence[T], holdout: float) -> tuple[list[T], list[T]]:
    """The one held-out rule: the newest (last) share ``holdout`` of ``ordered`` is held out, at
    least one and at most :data:`MAX_HELD_OUT`; the rest trains."""
    held = min(MAX_HELD_OUT, max(1, round(len(ordered) * holdout)), len(ordered) - 1)
    return list(ordered[:-held]), list(ordered[-held:])


@dataclass(frozen=True)
class TrainingSet:
    """What one run trains on: weighted training examples and held-out ones, named by image."""

    pool: list[tuple[Example, float]]
    held_out: list[Example]
    training_names: list[str]
    held_out_names: list[str]


def iter_train(
    decoder: torch.nn.Module,
    data: TrainingSet,
    conditionals: torch.Tensor,
    settings: FineTuneSettings,
    schedule: Epochs | Steps,
    *,
    threshold: Any,
    stop: Any,
    describe: tuple[list[str], dict[str, Any]] = ([], {}),
) -> Generator[TrainingProgress, None, FineTuneResult]:
    """Train a copy of ``decoder`` (never ``decoder`` itself) on ``data`` by ``schedule``; returns
    the outcome (``describe``: the classes and base identity it is recorded with)."""
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    base_iou = held_out_iou(decoder, data.held_out, conditionals, threshold)
    candidate = copy.deepcopy(decoder).float()
    if isinstance(schedule, Epochs):
        trained = yield from _by_epochs(candidate, data, conditionals, settings, schedule, threshold, base_iou, stop)
    else:
        trained = yield from _by_steps(candidate, data, conditionals, settings, schedule, stop)
    best_epoch, history, steps = trained
    scalar = not isinstance(threshold, tuple)
    if scalar:
        kept, iou = best_threshold(candidate, data.held_out, conditionals, float(threshold))
    else:
        kept, iou = threshold, held_out_iou(candidate, data.held_out, conditionals, threshold)
    accepted = bool(settings.force or iou > base_iou or np.isnan(base_iou))
    return FineTuneResult(
        state={k: v.detach().clone() for k, v in candidate.state_dict().items()},
        classes=list(describe[0]),
        base=dict(describe[1]),
        settings=dataclasses.replace(settings, steps=steps) if isinstance(schedule, Steps) else settings,
        base_iou=float(base_iou),
        iou=float(iou),
        best_epoch=best_epoch,
        accepted=accepted,
        history=history,
        training=list(data.training_names),
        held_out=list(data.held_out_names),
        threshold=kept,
        threshold_iou=float(iou),
        steps=steps,
        seconds=time.perf_counter() - started,
    )


def _by_steps(
    candidate: torch.nn.Module,
    data: TrainingSet,
    conditionals: torch.Tensor,
    settings: FineTuneSettings,
    schedule: Steps,
    stop: Any,
) -> Generator[TrainingProgress, None, tuple[int, list[dict[str, float]], int]]:
    """``schedule.steps`` steps on batches drawn by weight, without replacement within a batch."""
    pool = data.pool
    batch = min(settings.batch_size, len(pool))
    optimiser = Optimiser(candidate, settings, schedule.steps)
    rng = np.random.default_rng(settings.seed)
    weights = np.array([w for _, w in pool], dtype=float)
    weights = weights / weights.sum()
    losses: list[float] = []
    report = max(1, schedule.steps // 12)
    history = []
    for step in range(1, schedule.steps + 1):
        picked = rng.choice(len(pool), size=batch, replace=False, p=weights)
        losses.append(optimiser.step([pool[i][0] for i in picked], conditionals, stop))
        if step % report == 0 or step == schedule.steps:
            history.append({"step": step, "loss": losses[-1]})
            stage = f"step {step} of {schedule.steps}: loss {losses[-1]:.3f} {sparkline(losses[::report])}"
            yield TrainingProgress(step, schedule.steps, stage, losses[-1], None, unit="step")
    return 0, history, schedule.steps


def _by_epochs(
    candidate: torch.nn.Module,
    data: TrainingSet,
    conditionals: torch.Tensor,
    settings: FineTuneSettings,
    schedule: Epochs,
    threshold: Any,
    base_iou: float,
    stop: Any,
) -> Generator[TrainingProgress, None, tuple[int, list[dict[str, float]], int]]:
    """Passes with early stopping; ``candidate`` ends with the best pass's weights (the last one's
    when no pass beat the start: the outcome then says refused, unless forced)."""
    examples = [ex for ex, _ in data.pool]
    size = settings.batch_size
    planned = min(schedule.epochs * -(-len(examples) // size), schedule.max_steps)
    epochs = -(-planned // -(-len(examples) // size))
    optimiser = Optimiser(candidate, settings, planned)
    best_iou, best_epoch, best_state, history = base_iou, 0, None, []
    order_rng = np.random.default_rng(settings.seed)
    for epoch in range(1, epochs + 1):
        order = [examples[j] for j in order_rng.permutation(len(examples))]
        starts = range(0, len(order), size)
        losses = [optimiser.step(order[i : i + size], conditionals, stop) for i in starts if optimiser.done < planned]
        loss = float(np.mean(losses))
        iou = held_out_iou(candidate, data.held_out, conditionals, threshold)
        history.append({"epoch": epoch, "loss": loss, "iou": iou})
        if iou > best_iou or np.isnan(best_iou):
            best_iou, best_epoch, best_state = iou, epoch, copy.deepcopy(candidate.state_dict())
        ious = [base_iou] + [h["iou"] for h in history]
        stage = (
            f"epoch {epoch}: loss {loss:.3f} {sparkline([h['loss'] for h in history])}, "
            f"held-out IoU {iou:.3f} {sparkline(ious, 0, 1)}"
        )
        yield TrainingProgress(epoch, epochs, stage, loss, iou)
        if epoch - best_epoch >= schedule.patience:
            break
    if best_state is not None:
        candidate.load_state_dict(best_state)
    return best_epoch, history, optimiser.done
