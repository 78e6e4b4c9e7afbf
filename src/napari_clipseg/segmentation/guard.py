"""The accuracy guard for approximate paths (int8, bfloat16, float16): how far their masks and
probabilities are from the exact float32 path on the same model and images.

A path may be chosen by precision ``"auto"`` only when, on every image measured, it stays within
:data:`LIMITS`:

* ``flipped``: the share of pixels whose mask changes, each prompt thresholded on its own at the
  default threshold (what an annotator would have to repaint);
* ``flipped_any_threshold``: the same at the worst threshold from 0.1 to 0.9 (the dock's slider);
* ``mean_abs``: the mean absolute probability difference (the probability map as a whole).

Reported but not limited: the maximum and the 99.9th percentile of the probability difference,
and the share of changed multi-class labels. The maximum sits on the one pixel where a steep edge
crosses; native bfloat16, the usual reduced precision, moves it by 0.04-0.14 on the guard model
(docs/performance.md), so a limit on it would measure edge steepness, not the path. Labels flip
between prompts whose maps coincide, which untrained prompts on a random model do everywhere.
The exact path is always available, and is what the parity tests use.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..constants import DEFAULT_THRESHOLD
from .postprocess import labels_from_probabilities

#: Limits a path must stay within, on every image, to be eligible for "auto".
LIMITS = {"flipped": 0.005, "flipped_any_threshold": 0.005, "mean_abs": 0.002}

#: The thresholds ``flipped_any_threshold`` looks at.
SLIDER_THRESHOLDS = tuple(np.round(np.arange(0.1, 0.91, 0.1), 2))


def _flipped(reference: np.ndarray, candidate: np.ndarray, threshold: float) -> float:
    return float(((reference >= threshold) != (candidate >= threshold)).mean())


def guard_figures(
    reference: np.ndarray, candidate: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, float]:
    """Mask and probability differences of ``candidate`` against ``reference``.

    Args:
        reference: ``(P, Y, X)`` probabilities of the exact path.
        candidate: The same from the approximate path.

    Returns:
        ``flipped``, ``flipped_any_threshold``, ``mean_abs`` (see the module docstring), and
        ``max_abs``, ``p999_abs`` and ``flipped_labels`` (changed labels of
        ``labels_from_probabilities``).
    """
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {reference.shape} and {candidate.shape}")
    difference = np.abs(reference - candidate)
    labels = labels_from_probabilities(reference, threshold) != labels_from_probabilities(candidate, threshold)
    return {
        "flipped": _flipped(reference, candidate, threshold),
        "flipped_any_threshold": max(_flipped(reference, candidate, t) for t in SLIDER_THRESHOLDS),
        "mean_abs": float(difference.mean()),
        "max_abs": float(difference.max()),
        "p999_abs": float(np.quantile(difference, 0.999)),
        "flipped_labels": float(labels.mean()),
    }


def passes(figures: Mapping[str, float], limits: Mapping[str, float] = LIMITS) -> bool:
    """Whether guard figures stay within the limits."""
    return all(figures[key] <= limit for key, limit in limits.items())
