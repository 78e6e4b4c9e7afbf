"""The training core every Learn shares: examples, the loss, the optimiser, the threshold rule.

A fine-tuning run from files (:mod:`.finetune`) and an annotation project's bounded Learn
(:mod:`napari_clipseg.project.learn`) both train in :func:`~.train.iter_train`, through
:class:`Optimiser` on :class:`Example` objects, and choose the threshold with
:func:`best_threshold`, so what was measured for one holds for the other (docs/finetune.md).

Why it trains as it does (measured on real nuclei crops, full-size random towers): batches of
examples decoded in one call, the learning rate decayed on a cosine over the planned steps, the
gradient norm clipped, and dropout off; with the decoder's own 0.1 dropout and single-example
steps at a fixed rate the held-out IoU jumped from epoch to epoch, and dropout alone took three
quarters of each step (torch's attention falls back to its slow kernel for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import RunCancelled
from ..evaluation.metrics import class_scores, mean_ignoring_nan
from ..segmentation.postprocess import labels_from_probabilities

#: Decoder parts that train (the rest of the model stays frozen).
TRAINABLE = ("film_mul", "film_add", "blocks", "trans_conv")


@dataclass
class Example:
    """One training view of an image: its reduced taps and its labels at the model's output size.

    Kept compact (the annotation project holds one per verified image): targets as ``uint8``, no
    weight map when every pixel is labelled, the shown labels as ``int16``.
    """

    reduced: list[torch.Tensor]
    grid: tuple[int, int]
    targets: torch.Tensor  # (P, h, w) uint8 0/1
    weight: torch.Tensor | None  # (h, w) float 1 where labelled; None: every pixel is
    labels: np.ndarray  # (h, w) int16 class values (ignored pixels: -1)


def example_from_features(features: Any, labels: np.ndarray, n_classes: int, ignore: int | None, patch: int) -> Example:
    """An :class:`Example` from encoded features (an ``ImageFeatures``) and the image's labels."""
    reduced = [r.detach().float().clone() for r in features.reduced]  # normal tensors: autograd may save them
    size = (features.grid[0] * patch, features.grid[1] * patch)
    small = F.interpolate(torch.from_numpy(labels.astype(np.int64))[None, None].float(), size=size, mode="nearest")
    small = small[0, 0].long()
    weight = None if ignore is None or not bool((small == ignore).any()) else (small != ignore).float()
    values = torch.arange(1, n_classes + 1)[:, None, None]
    targets = (small[None] == values).to(torch.uint8)
    shown = small.numpy().astype(np.int16) if weight is None else np.where(weight.numpy() > 0, small.numpy(), -1)
    return Example(reduced, tuple(features.grid), targets, weight, shown.astype(np.int16))


def _loss(logits: torch.Tensor, example: Example, dice_weight: float) -> torch.Tensor:
    """BCE + soft Dice of one example's logits ``(P, h, w)``."""
    targets = example.targets.to(logits.dtype)
    weight = torch.ones_like(logits) if example.weight is None else example.weight.expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, targets, weight=weight, reduction="sum")
    bce = bce / weight.sum().clamp(min=1)
    probability = torch.sigmoid(logits) * weight
    overlap = (probability * targets).sum(dim=(1, 2))
    total = probability.sum(dim=(1, 2)) + (targets * weight).sum(dim=(1, 2))
    dice = 1 - (2 * overlap + 1) / (total + 1)
    return bce + dice_weight * dice.mean()


def decode_examples(
    decoder: torch.nn.Module, examples: Sequence[Example], conditionals: torch.Tensor
) -> list[torch.Tensor]:
    """Logits ``(P, h, w)`` of each example, examples of one grid decoded in one call."""
    n_classes = conditionals.shape[0]
    out: dict[int, torch.Tensor] = {}
    by_grid: dict[tuple[int, int], list[int]] = {}
    for i, example in enumerate(examples):
        by_grid.setdefault(example.grid, []).append(i)
    for grid, indices in by_grid.items():
        depth = len(examples[indices[0]].reduced)
        reduced = [
            torch.cat([examples[i].reduced[k] for i in indices]).repeat_interleave(n_classes, 0) for k in range(depth)
        ]
        logits = decoder.decode(reduced, conditionals.repeat(len(indices), 1), grid)
        for j, i in enumerate(indices):
            out[i] = logits[j * n_classes : (j + 1) * n_classes]
    return [out[i] for i in range(len(examples))]


def held_out_iou(
    decoder: torch.nn.Module,
    examples: Sequence[Example],
    conditionals: torch.Tensor,
    threshold: float | Sequence[float],
) -> float:
    """Mean over ``examples`` of the mean IoU over classes at ``threshold`` (NaN without examples)."""
    return _mean_iou(_probabilities(decoder, examples, conditionals), examples, threshold)


def _probabilities(
    decoder: torch.nn.Module, examples: Sequence[Example], conditionals: torch.Tensor
) -> list[np.ndarray]:
    decoder.eval()
    with torch.no_grad():
        return [torch.sigmoid(logits).numpy() for logits in decode_examples(decoder, examples, conditionals)]


def _mean_iou(probabilities: list[np.ndarray], examples: Sequence[Example], threshold: Any) -> float:
    scores = []
    for probability, ex in zip(probabilities, examples, strict=True):
        predicted = labels_from_probabilities(probability, threshold).astype(np.int64)
        predicted[ex.labels < 0] = -1
        values = range(1, probability.shape[0] + 1)
        scores.append(mean_ignoring_nan([class_scores(predicted, ex.labels, v)["iou"] for v in values]))
    return float(mean_ignoring_nan(scores)) if scores else float("nan")


def sparkline(values: Sequence[float], low: float | None = None, high: float | None = None, width: int = 12) -> str:
    """The last ``width`` values as a line of block characters (a live plot in a status line)."""
    values = [v for v in values[-width:] if v == v]
    if not values:
        return ""
    low = min(values) if low is None else low
    high = max(values) if high is None else high
    span = (high - low) or 1.0
    return "".join("▁▂▃▄▅▆▇█"[min(7, max(0, int((v - low) / span * 7.999)))] for v in values)


def _trainable(decoder: torch.nn.Module) -> list[torch.nn.Parameter]:
    decoder.requires_grad_(False)
    params = []
    for name in TRAINABLE:
        part = getattr(decoder, name)
        part.requires_grad_(True)
        params += list(part.parameters())
    return params


class Optimiser:
    """AdamW over the decoder's trainable parts, the learning rate decayed on a cosine over
    ``total_steps``, the gradient norm clipped; the decoder trains with dropout off (module docstring).
    ``settings`` is a :class:`~napari_clipseg.learning.train.FineTuneSettings`."""

    def __init__(self, decoder: torch.nn.Module, settings: Any, total_steps: int) -> None:
        self.decoder, self.settings, self.total_steps = decoder, settings, max(1, total_steps)
        self.params = _trainable(decoder)
        self.optimizer = torch.optim.AdamW(self.params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        self.done = 0

    def step(self, batch: Sequence[Example], conditionals: torch.Tensor, stop: Any) -> float:
        """One optimiser step on ``batch``; the batch's mean loss."""
        if stop.is_set():
            raise RunCancelled("stopped on request")
        rate = (
            self.settings.learning_rate
            * 0.5
            * (1 + np.cos(np.pi * min(self.done, self.total_steps) / self.total_steps))
        )
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self.decoder.eval()  # dropout off: see the module docstring (no batch norm here, so nothing else changes)
        logits = decode_examples(self.decoder, batch, conditionals)
        loss = sum(_loss(lg, ex, self.settings.dice_weight) for lg, ex in zip(logits, batch, strict=True)) / len(batch)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.settings.clip_norm)
        self.optimizer.step()
        self.done += 1
        return float(loss.detach())


#: Thresholds tried on the held-out images after training (the dock's slider range, in steps of 0.05).
THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))

#: How much better (held-out IoU) another threshold must be before it replaces the current one:
#: with one to three held-out images, smaller differences are noise (a 0.9 chosen on two crops).
THRESHOLD_EVIDENCE = 0.02


def best_threshold(
    decoder: torch.nn.Module, held_out: list[Example], conditionals: torch.Tensor, default: float
) -> tuple[float, float]:
    """The threshold to use with ``decoder`` and its held-out IoU: ``default`` unless another of
    :data:`THRESHOLDS` beats it on the held-out images by at least :data:`THRESHOLD_EVIDENCE`."""
    probabilities = _probabilities(decoder, held_out, conditionals)
    scores = {t: _mean_iou(probabilities, held_out, t) for t in THRESHOLDS}
    kept = scores[default] if default in scores else _mean_iou(probabilities, held_out, default)
    best = max(scores, key=lambda t: scores[t])
    if not scores[best] >= kept + THRESHOLD_EVIDENCE:  # NaN (no held-out image) keeps the default too
        return default, kept
    return best, scores[best]
