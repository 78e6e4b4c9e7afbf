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


class ReviewQueue:
    """The order in which the pre-labelled images of ``state`` are reviewed."""

    def __init__(self, state: ProjectState) -> None:
        self.state = state

    def scores(self) -> list[tuple[str, float]]:
        """Pre-labelled images still to review, highest score first (ties: file order)."""
        scored = [(entry.name, self.score_of(entry)) for entry in self.state.in_state("pre-labelled")]
        return sorted(scored, key=lambda pair: -pair[1])

    def top(self, after: str | None = None) -> str | None:
        """The first image of the queue other than ``after`` (a pass in memory)."""
        best, best_score = None, -1.0
        for entry in self.state.in_state("pre-labelled"):
            score = self.score_of(entry)
            if entry.name != after and score > best_score:
                best, best_score = entry.name, score
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
