"""Errors raised while finding or reading weights; each message says what to do."""

from __future__ import annotations


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
