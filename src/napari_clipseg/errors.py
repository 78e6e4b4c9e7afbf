"""The typed errors of the package (weights, runs, records); each message says what to do.

Torch-free, so the CLI can catch them before anything heavy is imported.
"""

from __future__ import annotations

from typing import Any


class WeightsError(RuntimeError):
    """Weights could not be loaded; the message says why and what to do."""


class WeightsUnavailableError(WeightsError):
    """The weights are not on disk and could not be downloaded."""


class CorruptWeightsError(WeightsError):
    """A weights file cannot be read (truncated, damaged, or not a weights file)."""


class UnsafeWeightsError(WeightsError):
    """A file holds pickled code, which is never executed."""


class ArchitectureMismatchError(WeightsError):
    """A checkpoint does not fit the architecture it is loaded into."""


class PlaneError(RuntimeError):
    """A plane or tile of a run failed; the message names it, the cause is chained."""


class RecordError(ValueError):
    """A provenance record (or its file) does not follow the schema; the message names the problem."""


class DecoderMismatchError(WeightsError):
    """A fine-tuned decoder was made for other base weights (or another architecture)."""


class RunCancelled(Exception):
    """A run was stopped on request (``ClipSegPredictor.stop``) between two steps of the model."""


class UsageError(ValueError):
    """Command-line arguments that cannot work together or at all (the CLI exits with code 2)."""


class ProjectError(ValueError):
    """An annotation project that cannot be opened or used as asked (the message says why)."""


class ProjectLockedError(ProjectError):
    """The project folder is open in another window or process (open it read-only, or close it there)."""


class ProjectMismatchError(ProjectError):
    """A project reopened with other prompts, another model or other options than it was made with."""


def check_stop(stop: Any, what: str = "model loading") -> None:
    """Raise :class:`RunCancelled` if ``stop`` (a ``threading.Event`` or None) is set: the one
    check every long step makes between its pieces (tensors, blocks, timings)."""
    if stop is not None and stop.is_set():
        raise RunCancelled(f"{what} stopped on request")


def is_cancellation(error: BaseException | None) -> bool:
    """Whether ``error`` is, or was caused by, a stop the user asked for (:class:`RunCancelled`),
    however many layers (PlaneError, a worker's JobError) wrap it."""
    while error is not None:
        if isinstance(error, RunCancelled):
            return True
        error = error.__cause__
    return False
