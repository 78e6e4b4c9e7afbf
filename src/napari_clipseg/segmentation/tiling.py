"""Overlapping tiles over a 2D image, blending weights, and stitching.

Box convention (the only one in this package): ``(y0, y1, x0, x1)``, half-open, in pixels of the
full image, so ``image[y0:y1, x0:x1]`` is the tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import DEFAULT_OVERLAP, INPUT_SIZE

Box = tuple[int, int, int, int]

#: Default overlap between neighbouring tiles: 1/8 of the tile (44 px at 352).


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: step ``tile - overlap``, the last tile flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def tile_boxes(shape: tuple[int, int], tile: int = INPUT_SIZE, overlap: int = DEFAULT_OVERLAP) -> list[Box]:
    """Boxes of ``tile`` x ``tile`` (smaller only where the image is) covering ``shape``.

    Neighbouring tiles overlap by at least ``overlap`` pixels (more for the last row/column,
    which is moved back to end flush with the image).

    Raises:
        ValueError: ``overlap`` not in ``[0, tile)``.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must lie in [0, {tile}); got {overlap}")
    height, width = shape
    return [
        (y, min(y + tile, height), x, min(x + tile, width))
        for y in _starts(height, tile, overlap)
        for x in _starts(width, tile, overlap)
    ]


def blend_weights(height: int, width: int, ramp: int) -> np.ndarray:
    """``(height, width)`` float32 weights: 1 inside, falling linearly over ``ramp`` px to the edges.

    Strictly positive everywhere, so a pixel covered by one tile only is taken from it as is,
    and stitching any field the tiles agree on reproduces it exactly.
    """

    def axis(n: int) -> np.ndarray:
        if ramp <= 0:
            return np.ones(n, np.float32)
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]) + 1  # 1 at the border
        return np.minimum(distance / (ramp + 1), 1.0).astype(np.float32)

    return axis(height)[:, None] * axis(width)[None, :]


@dataclass
class Stitcher:
    """Weighted accumulation of per-tile maps ``(C, h, w)`` into ``(C, H, W)``."""

    channels: int
    shape: tuple[int, int]
    ramp: int = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        self._sum = np.zeros((self.channels, *self.shape), np.float32)
        self._weight = np.zeros(self.shape, np.float32)

    def add(self, box: Box, values: np.ndarray) -> None:
        y0, y1, x0, x1 = box
        w = blend_weights(y1 - y0, x1 - x0, self.ramp)
        self._sum[:, y0:y1, x0:x1] += values * w
        self._weight[y0:y1, x0:x1] += w

    def result(self) -> np.ndarray:
        """The stitched maps; raises if a pixel was never covered."""
        if not np.all(self._weight > 0):
            raise RuntimeError("stitching incomplete: some pixels are covered by no tile")
        return self._sum / self._weight
