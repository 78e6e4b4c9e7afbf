"""How much an annotator will likely change in a pre-label: the review queue's score.

Each pixel gets the label the plugin would give it (the most likely class if its probability
reaches the threshold, else background), and a confidence in that label: the class's probability
when it is labelled, one minus the highest probability when it is left as background. Read as
probabilities, ``1 - confidence`` is the chance that the pixel's label is wrong, so the mean over
the image is the *expected share of pixels an annotator changes*. The threshold moves the scale:
a probability is rescaled so that the threshold sits at 0.5 (what the annotator sees as the edge
is where the model is least sure). Pixels far from the threshold cost almost nothing; wide bands
of near-threshold probabilities (blurry edges, faint objects, a class the model cannot tell apart)
cost most. The score's rank correlation with the changed share is measured on held-out images
with ground truth in ``benchmarks/bench_loop.py`` (docs/annotation-loop.md).
"""

from __future__ import annotations

import numpy as np


def _centred(probabilities: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Probabilities mapped piecewise-linearly so that ``threshold`` becomes 0.5 (0 and 1 stay)."""
    t = np.clip(np.asarray(threshold, dtype=np.float32), 1e-3, 1 - 1e-3)
    below = 0.5 * probabilities / t
    above = 0.5 + 0.5 * (probabilities - t) / (1 - t)
    return np.where(probabilities < t, below, above)


def expected_changes(probabilities: np.ndarray, threshold: float | tuple[float, ...]) -> np.ndarray:
    """Per pixel, the chance that its label is changed: ``1 - confidence`` (see the module docstring).

    Args:
        probabilities: ``(P, ...)`` probabilities of the ``P`` classes.
        threshold: One threshold, or one per class.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    thresholds = np.asarray(threshold, dtype=np.float32).reshape((-1,) + (1,) * (probabilities.ndim - 1))
    centred = _centred(probabilities, thresholds)
    best = centred.max(axis=0)
    confidence = np.where(best >= 0.5, best, 1.0 - best)
    return 1.0 - confidence


def review_score(probabilities: np.ndarray, threshold: float | tuple[float, ...]) -> float:
    """The expected share of an image's pixels an annotator changes (higher: review it first)."""
    return float(expected_changes(probabilities, threshold).mean())
