"""The options of a segmentation run: one frozen, validated object for the API, CLI, widget and settings.

:class:`SegmentOptions` is checked once, when it is made, with a message that names the option and
the fix; everything downstream (``pipeline``, records, saved settings) can trust it. It imports
neither torch nor napari, so the CLI validates its arguments before loading anything heavy.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..constants import DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP, DEFAULT_THRESHOLD, INPUT_SIZE, MODES

__all__ = [
    "MODES",
    "SegmentOptions",
    "check_distinct",
    "check_min_size",
    "check_threshold",
    "parse_channels",
    "split_prompts",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_threshold(threshold: Any, n_prompts: int | None = None) -> float | tuple[float, ...]:
    """A threshold (or one per prompt) as floats, each finite and in [0, 1].

    Args:
        n_prompts: When given, a sequence must hold one threshold, or exactly one per prompt.

    Raises:
        TypeError: not a number or a sequence of numbers.
        ValueError: NaN, infinite, outside [0, 1], an empty sequence, or the wrong count.
    """
    values = threshold if isinstance(threshold, Sequence) and not isinstance(threshold, str) else None
    items = list(values) if values is not None else [threshold]
    if not items:
        raise ValueError("threshold: give one value, or one per prompt")
    for item in items:
        if not _is_real(item):
            raise TypeError(f"threshold must be a number in [0, 1] (or one per prompt); got {item!r}")
        if not (math.isfinite(float(item)) and 0.0 <= float(item) <= 1.0):
            raise ValueError(f"threshold must lie in [0, 1]; got {item!r}")
    if values is not None and n_prompts is not None and len(items) not in (1, n_prompts):
        raise ValueError(
            f"got {len(items)} thresholds for {n_prompts} prompts: give one threshold, or exactly one per prompt"
        )
    return tuple(float(v) for v in items) if values is not None else float(items[0])


def check_distinct(names: Sequence[str]) -> None:
    """Raise ValueError when a class name is given twice (one class would stay empty)."""
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if twice:
        raise ValueError(f"'{twice[0]}' is given more than once: each class needs its own name")


def check_min_size(min_size: int) -> int:
    """``min_size`` as an int >= 0.

    Raises:
        TypeError: not a whole number (e.g. the text ``"10"``).
        ValueError: negative.
    """
    if not _is_int(min_size):
        raise TypeError(f"min_size must be a whole number of pixels; got {min_size!r}")
    if min_size < 0:
        raise ValueError(f"min_size must be at least 0; got {min_size}")
    return int(min_size)


def split_prompts(text: str) -> list[str]:
    """Prompts typed as one text: one per line or comma-separated; blanks are dropped.

    >>> split_prompts("nucleus, cell membrane\nmitochondria")
    ['nucleus', 'cell membrane', 'mitochondria']
    """
    return [p.strip() for line in text.splitlines() for p in line.split(",") if p.strip()]


def parse_channels(text: str) -> tuple[int, int, int] | None:
    """``"0, 2, -1"`` -> ``(0, 2, -1)``; empty -> None (automatic).

    Raises:
        ValueError: not three integers.
    """
    if not text.strip():
        return None
    try:
        channels = tuple(int(c) for c in text.replace(";", ",").split(","))
    except ValueError:
        channels = ()
    if len(channels) != 3:
        raise ValueError(f"channels must be three indices for R, G, B (-1 = empty), e.g. '0, 1, -1'; got {text!r}")
    return channels  # type: ignore[return-value]


@dataclass(frozen=True)
class SegmentOptions:
    """How an image is read, run through the model, and turned into labels.

    Attributes:
        mode: ``"whole"`` (the plane resized to 352, as CLIPSeg was trained), ``"tiled"``
            (native-resolution tiles, blended), ``"both"`` (the average of the two logits), or
            ``"auto"``: whole up to :data:`~napari_clipseg.constants.AUTO_WHOLE_MAX_SIDE` px, both above.
        overlap: Pixels shared by neighbouring tiles, in ``[0, 352)`` (in pixels the model reads).
        scale: The scale tiles are read at, in ``(0, 1]``: 1 reads native-resolution tiles of
            352 image pixels; 0.5 reads tiles of 704 image pixels shrunk to 352 (a quarter of the
            tiles, less detail). ``"whole"`` squeezes the whole plane into one frame whatever it is.
        batch_size: Planes or tiles per image-tower pass.
        rgb: Whether the last axis holds colour channels; None: yes for 3 or 4 values there.
        channels: Three channel indices that become R, G, B (-1: an empty channel); None: automatic.
        channel_axis: An axis holding channels (e.g. 0 for ``(C, Y, X)``), combined as colours.
        intensity: ``(low, high)`` values mapped to 0 and 1 for every plane; None: automatic
            (uint8 / 255, floats in [0, 1] as they are, else percentiles of the whole image).
        planes: Indices of the leading (non-spatial) axes to segment; None: every plane.
        pyramid_level: Level of a multiscale input (a list of arrays, finest first) to segment.
        threshold: Probability a pixel needs to be labelled, one value or one per prompt.
        min_size: Connected components smaller than this many pixels (per plane) are removed.
    """

    mode: str = "auto"
    overlap: int = DEFAULT_OVERLAP
    scale: float = 1.0
    batch_size: int = DEFAULT_BATCH_SIZE
    rgb: bool | None = None
    channels: tuple[int, int, int] | None = None
    channel_axis: int | None = None
    intensity: tuple[float, float] | None = None
    planes: tuple[tuple[int, ...], ...] | None = None
    pyramid_level: int = 0
    threshold: float | tuple[float, ...] = DEFAULT_THRESHOLD
    min_size: int = 0

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        self._check_int("overlap", 0, INPUT_SIZE - 1)
        if not _is_real(self.scale) or not (math.isfinite(float(self.scale)) and 0.0 < float(self.scale) <= 1.0):
            raise ValueError(f"scale must lie in (0, 1] (1: native-resolution tiles, 0.5: half); got {self.scale!r}")
        set_("scale", float(self.scale))
        self._check_int("batch_size", 1, None)
        self._check_int("pyramid_level", 0, None)
        set_("min_size", check_min_size(self.min_size))
        if self.rgb is not None and not isinstance(self.rgb, bool):
            raise TypeError(f"rgb must be True, False or None (guess); got {self.rgb!r}")
        if self.channel_axis is not None and not _is_int(self.channel_axis):
            raise TypeError(f"channel_axis must be an axis index or None; got {self.channel_axis!r}")
        set_("channels", self._checked_channels())
        set_("intensity", self._checked_intensity())
        set_("planes", self._checked_planes())
        set_("threshold", check_threshold(self.threshold))

    def _check_int(self, name: str, low: int, high: int | None) -> None:
        value = getattr(self, name)
        if not _is_int(value):
            raise TypeError(f"{name} must be a whole number; got {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f"in [{low}, {high}]" if high is not None else f"at least {low}"
            raise ValueError(f"{name} must be {bounds}; got {value}")
        object.__setattr__(self, name, int(value))

    def _checked_channels(self) -> tuple[int, int, int] | None:
        if self.channels is None:
            return None
        channels = tuple(self.channels)
        if len(channels) != 3 or not all(_is_int(c) and c >= -1 for c in channels):
            raise ValueError(f"channels must be three indices >= -1 for R, G, B (-1 = empty); got {self.channels!r}")
        return tuple(int(c) for c in channels)  # type: ignore[return-value]

    def _checked_intensity(self) -> tuple[float, float] | None:
        if self.intensity is None:
            return None
        values = tuple(self.intensity)
        if len(values) != 2 or not all(_is_real(v) and math.isfinite(float(v)) for v in values):
            raise ValueError(f"intensity must be two finite numbers (low, high); got {self.intensity!r}")
        low, high = float(values[0]), float(values[1])
        if high <= low:
            raise ValueError(f"intensity (low, high) needs high > low; got {self.intensity!r}")
        return low, high

    def _checked_planes(self) -> tuple[tuple[int, ...], ...] | None:
        if self.planes is None:
            return None
        planes = tuple(tuple(p) if isinstance(p, Sequence) else (p,) for p in self.planes)
        if not planes or not all(_is_int(i) and i >= 0 for p in planes for i in p):
            raise ValueError(f"planes must be a non-empty list of index tuples (>= 0); got {self.planes!r}")
        return tuple(tuple(int(i) for i in p) for p in planes)

    def replace(self, **changes: Any) -> SegmentOptions:
        """A copy with ``changes`` (validated); unknown names raise TypeError listing the valid ones."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            valid = ", ".join(f.name for f in dataclasses.fields(self))
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; valid options: {valid}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""

        def plain(value: Any) -> Any:
            return [plain(v) for v in value] if isinstance(value, tuple) else value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SegmentOptions:
        """Inverse of :meth:`to_dict`; unknown keys raise TypeError, bad values ValueError/TypeError."""
        return cls().replace(**dict(values))

    @property
    def tile_size(self) -> int:
        """Image pixels across one tile: the model's input size at native scale, more below it."""
        return max(INPUT_SIZE, round(INPUT_SIZE / self.scale))

    @property
    def tile_overlap(self) -> int:
        """Image pixels neighbouring tiles share (``overlap`` at the tiles' scale)."""
        return min(round(self.overlap * self.tile_size / INPUT_SIZE), self.tile_size - 1)

    def thresholds_for(self, n_prompts: int) -> float | tuple[float, ...]:
        """The threshold, checked against the number of prompts.

        Raises:
            ValueError: one threshold per prompt was given, but not as many as there are prompts.
        """
        return check_threshold(self.threshold, n_prompts)
