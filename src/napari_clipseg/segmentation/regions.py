"""Segmenting inside boxes (regions of interest) of large or lazy images, without touching the rest.

Each box of each chosen plane is read as a crop (lazy data stays lazy until then) and run through
:func:`~napari_clipseg.segmentation.pipeline.iter_segment` with one intensity range for the whole image, so a
box looks the same as it would in a full run; large boxes are tiled at native resolution as any
image is (``mode="auto"``). Results stay per box: a 50k x 50k image never needs a full-size array
to hold them (see :func:`labels_canvas`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .options import SegmentOptions
from .pipeline import iter_segment, plan_planes
from .predictor import ClipSegPredictor
from .prompts import Prompts
from .results import Progress, SegmentationResult, relay
from .tiling import Box
from .transforms import MIN_SIDE, intensity_range

#: Images with more pixels than this get a chunked (sparse) labels canvas instead of a numpy array.
DENSE_CANVAS_MAX = 64_000_000


@dataclass(frozen=True)
class BoxResult:
    """The result of one box: ``plane`` (leading indices), ``box`` ``(y0, y1, x0, x1)`` in plane pixels."""

    plane: tuple[int, ...]
    box: Box
    result: SegmentationResult


def clip_boxes(boxes: Sequence[Sequence[float]], shape: tuple[int, int]) -> list[Box]:
    """Boxes ``(y0, y1, x0, x1)`` rounded outwards and clipped to a plane of ``shape``.

    Raises:
        ValueError: no box, a box that is not four finite numbers, or a box that is (after
            clipping) smaller than 16 px on a side.
    """
    if len(boxes) == 0:
        raise ValueError("draw at least one box (a rectangle in a Shapes layer) around the region to segment")
    clipped = []
    for corners in boxes:
        try:
            values = [float(v) for v in corners]
        except (TypeError, ValueError):
            values = []
        if len(values) != 4 or not all(np.isfinite(values)):
            raise ValueError(f"a box is four finite numbers (y0, y1, x0, x1); got {corners!r}")
        y0, y1, x0, x1 = values
        box = (
            max(0, int(np.floor(min(y0, y1)))),
            min(shape[0], int(np.ceil(max(y0, y1)))),
            max(0, int(np.floor(min(x0, x1)))),
            min(shape[1], int(np.ceil(max(x0, x1)))),
        )
        if box[1] - box[0] < MIN_SIDE or box[3] - box[2] < MIN_SIDE:
            raise ValueError(
                f"box (y {y0:.0f}-{y1:.0f}, x {x0:.0f}-{x1:.0f}) covers less than {MIN_SIDE}x{MIN_SIDE} pixels of the "
                f"{shape[0]}x{shape[1]} image: draw it larger, or inside the image"
            )
        clipped.append(box)
    return clipped


def iter_segment_boxes(
    image: Any,
    boxes: Sequence[Sequence[float]],
    prompts: Prompts,
    predictor: ClipSegPredictor,
    options: SegmentOptions | None = None,
) -> Generator[Progress, None, list[BoxResult]]:
    """Segment only inside ``boxes`` of each plane ``options`` selects; returns one result per box and plane.

    Args:
        boxes: ``(y0, y1, x0, x1)`` in plane pixels (floats are rounded outwards, then clipped).
        Other arguments as for :func:`~napari_clipseg.segmentation.pipeline.iter_segment`.
    """
    options = options or SegmentOptions()
    geometry = plan_planes(image, options)
    clipped = clip_boxes(boxes, geometry.plane_shape)
    intensity = options.intensity or intensity_range(geometry.data, predictor.percentiles)
    if intensity is not None and intensity[1] <= intensity[0]:  # a constant image: every crop maps to 0
        intensity = (intensity[0], intensity[0] + 1.0)
    crop_options = options.replace(
        rgb=geometry.rgb, channel_axis=None, planes=None, pyramid_level=0, intensity=intensity
    )
    jobs = [(plane, box) for plane in geometry.planes for box in clipped]
    results = []
    for done, (plane, (y0, y1, x0, x1)) in enumerate(jobs):
        crop = geometry.data[plane][y0:y1, x0:x1]

        def convert(event: Progress, done: int = done) -> Progress:
            return Progress(done, len(jobs), f"box {done + 1} of {len(jobs)}: {event.stage}")

        result = yield from relay(iter_segment(crop, prompts, predictor, crop_options), convert)
        results.append(BoxResult(plane, (y0, y1, x0, x1), result))
        yield Progress(done + 1, len(jobs), f"box {done + 1} of {len(jobs)} done")
    return results


def labels_canvas(shape: tuple[int, ...], dtype: np.dtype, lazy: bool) -> Any:
    """An all-background array of ``shape`` to place box results in.

    numpy for in-memory images of moderate size; a chunked in-memory zarr array (only the chunks
    written are stored, and napari can paint on it) for lazy or very large images.
    """
    if not lazy and int(np.prod(shape)) <= DENSE_CANVAS_MAX:
        return np.zeros(shape, dtype)
    import zarr

    chunks = (1,) * (len(shape) - 2) + (1024, 1024)
    return zarr.create_array(store=zarr.storage.MemoryStore(), shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
