"""How a decoder trains (torch-free, so the command line checks its arguments before any heavy import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..constants import DEFAULT_THRESHOLD


@dataclass(frozen=True)
class FineTuneSettings:
    """How to train (every field is recorded with the decoder)."""

    #: Passes over the training examples (each pass: one step per ``batch_size`` of them).
    epochs: int = 120
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    #: Examples per optimiser step (decoded in one call).
    batch_size: int = 4
    #: Optimiser steps of a bounded Learn (the annotation project's; ``epochs`` there asks for passes instead).
    steps: int = 48
    #: At most this many optimiser steps in fine-tuning from files (its passes stop there too), so
    #: its time is bounded whatever the number of images, as a project's Learn is.
    max_steps: int = 240
    #: Largest gradient norm (steadies the first steps from a decoder that never saw these images).
    clip_norm: float = 1.0
    holdout: float = 0.25
    patience: int = 24
    seed: int = 0
    augment: bool = True
    ignore_value: int | None = None
    dice_weight: float = 1.0
    threshold: float = DEFAULT_THRESHOLD
    force: bool = False

    def __post_init__(self) -> None:
        check_positive(
            epochs=self.epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            steps=self.steps,
            max_steps=self.max_steps,
        )
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout must lie in (0, 1); got {self.holdout}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive; got {self.learning_rate}")


def check_positive(**counts: Any) -> None:
    """Refuse a count below 1 (ValueError naming it), before any model work."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1; got {value!r}")


def threshold_text(threshold: Any) -> str:
    """A threshold (or one per class) as people read it: ``0.40`` or ``0.30, 0.50``."""
    return ", ".join(f"{t:.2f}" for t in threshold) if isinstance(threshold, tuple | list) else f"{threshold:.2f}"
