"""Segmentation as a generator of progress events, shared by the API, the CLI and the widget.

``iter_segment`` yields :class:`Progress` between steps and *returns* a
:class:`SegmentationResult`; ``run`` drains it. A GUI runs the same generator in a worker thread
and stops it between steps to cancel, so a cancelled run never produces a partial result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .constants import DEFAULT_THRESHOLD
from .postprocess import label_dtype, labels_from_probabilities
from .predictor import ClipSegPredictor
from .prompts import Prompts, clean_prompts, prompt_label


@dataclass(frozen=True)
class Progress:
    """One step of a run: ``step`` of ``total`` done, now in ``stage`` (a short description)."""

    step: int
    total: int
    stage: str


@dataclass
class SegmentationResult:
    """What a run produced.

    Attributes:
        prompts: Class names in label order (label ``i + 1`` = ``prompts[i]``): the texts, and
            each visual prompt's name.
        probabilities: ``(P, Y, X)`` float32 in [0, 1].
        labels: ``(Y, X)`` label image (0 = background).
        threshold, min_size: The post-processing used for ``labels``.
    """

    prompts: list[str]
    probabilities: np.ndarray
    labels: np.ndarray
    threshold: float | list[float] = DEFAULT_THRESHOLD
    min_size: int = 0
    metadata: dict = field(default_factory=dict)

    def relabel(self, threshold: float | Sequence[float], min_size: int = 0) -> np.ndarray:
        """New labels from the cached probabilities (no model call); updates ``labels``.

        With ``metadata["planes"]`` (nD runs), only those planes are labelled, each on its own
        (``min_size`` counts pixels per plane); the other planes stay 0.
        """
        planes = self.metadata.get("planes")
        if planes is None:
            self.labels = labels_from_probabilities(self.probabilities, threshold, min_size)
        else:
            self.labels = np.zeros(self.probabilities.shape[1:], label_dtype(len(self.prompts)))
            for index in planes:
                plane = self.probabilities[(slice(None), *index)]
                self.labels[index] = labels_from_probabilities(plane, threshold, min_size)
        self.threshold, self.min_size = threshold, min_size
        return self.labels


def iter_segment(
    image: np.ndarray,
    prompts: Prompts,
    predictor: ClipSegPredictor,
    *,
    threshold: float | Sequence[float] = DEFAULT_THRESHOLD,
    min_size: int = 0,
) -> Generator[Progress, None, SegmentationResult]:
    """Segment one 2D image; yields :class:`Progress`, returns a :class:`SegmentationResult`.

    Raises:
        ValueError: bad image or prompts (raised before any model work).
    """
    prompts = clean_prompts(prompts)
    total = 3
    yield Progress(0, total, "encoding image")
    predictor.set_image(image)
    yield Progress(1, total, f"decoding {len(prompts)} prompt(s)")
    probabilities = predictor.predict(prompts)
    yield Progress(2, total, "post-processing")
    labels = labels_from_probabilities(probabilities, threshold, min_size)
    yield Progress(3, total, "done")
    return SegmentationResult([prompt_label(p) for p in prompts], probabilities, labels, threshold, min_size)


def run(
    generator: Generator[Progress, None, SegmentationResult],
    on_progress: Callable[[Progress], None] | None = None,
) -> SegmentationResult:
    """Drain a pipeline generator (optionally reporting progress) and return its result."""
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)


def segment(
    image: np.ndarray,
    prompts: Prompts,
    *,
    model=None,
    predictor: ClipSegPredictor | None = None,
    threshold: float | Sequence[float] = DEFAULT_THRESHOLD,
    min_size: int = 0,
    mode: str = "auto",
    rgb: bool | None = None,
    **options,
) -> np.ndarray:
    """Label image for ``prompts``: 0 = background, ``i + 1`` = ``prompts[i]``.

    Args:
        image: ``(Y, X)``, ``(Y, X, C)``, or a stack ``(..., Y, X[, C])``; numpy or lazy (dask, zarr).
        prompts: One text or VisualPrompt, or several (each one class). A VisualPrompt without an
            image refers to ``image`` (2D images only).
        model: A loaded model; ``None`` loads the default weights (``CIDAS/clipseg-rd64-refined``).
        predictor: Reuse a predictor (and its caches) instead of ``model``.
        threshold: Probability a pixel needs to be labelled (default 0.4; one per prompt allowed).
        min_size: Remove components smaller than this many pixels (per plane).
        mode: ``"auto"``, ``"whole"``, ``"tiled"`` or ``"both"`` (see :mod:`napari_clipseg.planes`).
        rgb: Whether the last axis is colour; ``None`` guesses (3 or 4 values in the last axis).
        **options: More :func:`napari_clipseg.planes.iter_segment_nd` options (overlap, channels, ...).

    Returns:
        Labels with the image's spatial shape, uint8 for fewer than 256 prompts.
    """
    from .planes import iter_segment_nd
    from .transforms import guess_rgb
    from .visual import VisualPrompt

    if predictor is None:
        if model is None:
            from .weights import load_model

            model = load_model()
        predictor = ClipSegPredictor(model)
    rgb = guess_rgb(np.shape(image)) if rgb is None else rgb
    if (np.ndim(image) - rgb) == 2:  # "this image" is well defined for a single plane
        prompts = [
            dataclasses.replace(p, image=image) if isinstance(p, VisualPrompt) and p.image is None else p
            for p in clean_prompts(prompts)
        ]
    generator = iter_segment_nd(
        image, prompts, predictor, rgb=rgb, mode=mode, threshold=threshold, min_size=min_size, **options
    )
    return run(generator).labels
