"""What a run reports and returns, and the helpers that drive run generators.

Every long job in this package (segmentation now; batches and training later) is a generator that
yields :class:`Progress` and *returns* its result. :func:`run` drives one to the end (CLI, tests,
notebooks); a GUI runs the same generator in a worker thread and stops it between steps to cancel.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .options import SegmentOptions
from .postprocess import label_dtype, labels_from_probabilities

R = TypeVar("R")


@dataclass(frozen=True)
class Progress:
    """One step of a run: ``step`` of ``total`` done, now in ``stage`` (a short description)."""

    step: int
    total: int
    stage: str


class _Returning(Iterator[Progress]):
    """Iterate a generator's events and keep what it returns in ``value`` (the one drain loop)."""

    def __init__(self, generator: Generator[Progress, None, R]) -> None:
        self._generator = generator
        self.value = None

    def __next__(self) -> Progress:
        try:
            return next(self._generator)
        except StopIteration as stop:
            self.value = stop.value
            raise StopIteration from None


def run(generator: Generator[Progress, None, R], on_progress: Callable[[Progress], None] | None = None) -> R:
    """Drive a run generator to its end, passing each :class:`Progress` to ``on_progress``; return its result."""
    events = _Returning(generator)
    for event in events:
        if on_progress is not None:
            on_progress(event)
    return events.value


def relay(
    generator: Generator[Progress, None, R], convert: Callable[[Progress], Progress]
) -> Generator[Progress, None, R]:
    """Re-yield a nested run's events through ``convert``; return its result (``x = yield from relay(...)``)."""
    events = _Returning(generator)
    for event in events:
        yield convert(event)
    return events.value


@dataclass
class SegmentationResult:
    """What a segmentation run produced.

    Attributes:
        prompts: Class names in label order (label ``i + 1`` = ``prompts[i]``): the texts, and
            each visual prompt's name.
        probabilities: ``(P, *spatial)`` in [0, 1] (float16 when large, else float32).
        labels: Label image with the spatial shape (0 = background).
        options: The options of the run; ``threshold`` and ``min_size`` are those of ``labels``.
        mode: The mode each plane was read in (``"auto"`` resolved).
        planes: Indices of the leading axes that were segmented (``[()]`` for a 2D image); the
            other planes hold 0.
    """

    prompts: list[str]
    probabilities: np.ndarray
    labels: np.ndarray
    options: SegmentOptions
    mode: str
    planes: list[tuple[int, ...]]

    def relabel(self, threshold: float | Sequence[float], min_size: int = 0) -> np.ndarray:
        """New labels from the cached probabilities (no model call); updates ``labels`` and ``options``.

        Only the segmented planes are labelled, each on its own (``min_size`` counts pixels per
        plane); the other planes stay 0.
        """
        options = self.options.replace(threshold=threshold, min_size=min_size)
        threshold = options.thresholds_for(len(self.prompts))
        labels = np.zeros(self.probabilities.shape[1:], label_dtype(len(self.prompts)))
        for index in self.planes:
            plane = self.probabilities[(slice(None), *index)]
            labels[index] = labels_from_probabilities(plane, threshold, options.min_size)
        self.labels, self.options = labels, options
        return labels
