"""The accuracy guard for approximate paths (bfloat16, float16, int8): how far their probabilities
and labels are from the exact float32 path on the same model and images.

A path may be chosen by precision ``"auto"`` only when, on every image measured, its largest
probability difference and its share of pixels whose label changes at the default threshold stay
within :data:`LIMITS`. The exact path is always available, and is what the parity tests use.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .constants import DEFAULT_THRESHOLD
from .postprocess import labels_from_probabilities

#: Largest allowed probability difference, and share of pixels whose label may change.
LIMITS = {"max_abs": 0.02, "flipped": 0.005}


def guard_figures(
    reference: np.ndarray, candidate: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, float]:
    """Max and mean absolute probability difference, and the share of flipped labels.

    Args:
        reference: ``(P, Y, X)`` probabilities of the exact path.
        candidate: The same from the approximate path.
    """
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {reference.shape} and {candidate.shape}")
    difference = np.abs(reference - candidate)
    flipped = labels_from_probabilities(reference, threshold) != labels_from_probabilities(candidate, threshold)
    return {"max_abs": float(difference.max()), "mean_abs": float(difference.mean()), "flipped": float(flipped.mean())}


def passes(figures: Mapping[str, float], limits: Mapping[str, float] = LIMITS) -> bool:
    """Whether guard figures stay within the limits."""
    return all(figures[key] <= limit for key, limit in limits.items())
