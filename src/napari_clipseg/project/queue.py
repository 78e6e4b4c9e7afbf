"""The review queue: pre-labelled images, most in need of a look first (:mod:`.score`).

Scores are kept with each image's entry (computed when its pre-label is taken in, at the threshold
of the decoder that made it), so ordering the queue is a pass over entries in memory.
"""

from __future__ import annotations

import numpy as np

from ..io.outputs import read_output
from .reconcile import DAMAGE
from .score import review_score
from .state import ImageEntry, ProjectState

#: Review scores closer than this are the same need of review.
TIE = 0.005


def _rank(score: float) -> int:
    return round(score / TIE)


class ReviewQueue:
    """The order in which the pre-labelled images of ``state`` are reviewed."""

    def __init__(self, state: ProjectState) -> None:
        self.state = state

    def scores(self) -> list[tuple[str, float]]:
        """Pre-labelled images still to review, highest score first (scores within :data:`TIE` of
        each other tie, and ties go in file order: with the base model nearly every score is the same,
        and the annotator then meets the folder as it is, not in the order of rounding noise)."""
        scored = [(entry.name, self.score_of(entry)) for entry in self.state.in_state("pre-labelled")]
        return sorted(scored, key=lambda pair: -_rank(pair[1]))

    def top(self, after: str | None = None) -> str | None:
        """The first image of the queue other than ``after`` (a pass in memory)."""
        best, best_rank = None, -1
        for entry in self.state.in_state("pre-labelled"):
            rank = _rank(self.score_of(entry))
            if entry.name != after and rank > best_rank:
                best, best_rank = entry.name, rank
        return best

    def score_of(self, entry: ImageEntry) -> float:
        """The review score of a pre-labelled entry, computed once when unknown (0 when its
        pre-label cannot be read: the project makes it again when it is asked for)."""
        if entry.score is not None or entry.state != "pre-labelled":
            return float(entry.score or 0.0)
        try:
            probabilities = np.asarray(read_output(self.state.folder.prelabels / entry.name, "probabilities"))
        except DAMAGE:
            return 0.0
        score = review_score(probabilities, self.state.threshold_of(entry.decoder))
        self.state.rescore(entry.name, score)
        return score
