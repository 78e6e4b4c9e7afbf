"""The one orchestrator of a segmentation run: every entry point (``segment()``, the CLI, the widget) drives it.

:func:`iter_segment` takes an image of any dimensionality (numpy, dask, zarr, or a multiscale
list of them) and :class:`~napari_clipseg.segmentation.options.SegmentOptions`; it yields
:class:`~napari_clipseg.segmentation.results.Progress` between steps and *returns* a
:class:`~napari_clipseg.segmentation.results.SegmentationResult`. A caller stops it between steps to cancel, so
a cancelled run never produces a partial result.

Every 2D plane is read in one of three modes:

* ``"whole"``: the plane resized to the model input (what CLIPSeg was trained on), through the
  same :func:`~napari_clipseg.segmentation.transforms.to_model_input` as ``ClipSegPredictor.set_image``;
* ``"tiled"``: overlapping native-resolution tiles (see :mod:`~napari_clipseg.segmentation.tiling`), batched
  through the backbone and blended, so small structures keep their pixels;
* ``"both"``: the average of the two logits, so large objects are not cut by tiles.

``"auto"`` uses ``"whole"`` up to :data:`~napari_clipseg.constants.AUTO_WHOLE_MAX_SIDE` pixels and
``"both"`` above. Planes and tiles are read one batch at a time (lazy arrays are never loaded
whole), intensities are scaled with one range for the whole image, and the predictor's feature
cache (keyed by pixel content) lets new prompts on the same data re-run only the decoder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..constants import AUTO_WHOLE_MAX_SIDE, DEFAULT_HUB_ID, DEFAULT_THRESHOLD, INPUT_SIZE, MODES
from ..errors import PlaneError
from .model_spec import ModelSpec
from .options import SegmentOptions, check_distinct
from .postprocess import label_dtype
from .predictor import ClipSegPredictor
from .prompts import Prompts, clean_prompts, prompt_label
from .refiner import refiner_of
from .results import Progress, SegmentationResult, relay, run
from .tiling import Box, Stitcher, tile_boxes
from .transforms import MIN_SIDE, check_dtype, guess_rgb, intensity_range
from .visual import VisualPrompt

#: Probability maps larger than this many values are kept as float16.
COMPACT_ABOVE = 32_000_000


def choose_mode(shape: tuple[int, int], mode: str = "auto") -> str:
    """The mode ``"auto"`` stands for on a plane of ``shape``, else ``mode`` (validated)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "whole" if max(shape) <= AUTO_WHOLE_MAX_SIDE else "both"


@dataclass(frozen=True)
class Geometry:
    """How an nD input splits into 2D planes.

    Attributes:
        data: The input with any channel axis moved last (lazily).
        rgb: Whether the last axis of ``data`` holds channels.
        spatial: Shape without the channel axis: the labels' shape.
        planes: Indices of the leading axes to segment (``[()]`` for a single plane).
    """

    data: Any
    rgb: bool
    spatial: tuple[int, ...]
    planes: list[tuple[int, ...]]

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.spatial[-2], self.spatial[-1]


def plan_planes(image: Any, options: SegmentOptions) -> Geometry:
    """Split ``image`` into planes as ``options`` say (pyramid level, channel axis, planes).

    Raises:
        ValueError, TypeError: the image or the options do not fit it (before any model work).
    """
    data = image[options.pyramid_level] if isinstance(image, list | tuple) else image
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    check_dtype(np.dtype(data.dtype))
    rgb = guess_rgb(tuple(data.shape)) if options.rgb is None else options.rgb
    if options.channel_axis is not None:
        if rgb or not -data.ndim <= options.channel_axis < data.ndim:
            raise ValueError(f"channel_axis {options.channel_axis} does not fit data of shape {data.shape} (rgb={rgb})")
        data, rgb = np.moveaxis(data, options.channel_axis, -1), True
    spatial = tuple(int(s) for s in (data.shape[:-1] if rgb else data.shape))
    if len(spatial) < 2:
        raise ValueError(f"need at least 2 spatial axes (Y, X); got shape {tuple(data.shape)}")
    if min(spatial[-2:]) < MIN_SIDE:
        raise ValueError(
            f"image planes are {spatial[-2]}x{spatial[-1]} pixels; CLIPSeg needs at least {MIN_SIDE}x{MIN_SIDE}"
            + (" (if the last axis holds channels, say so: rgb=True or channel_axis)" if spatial[-1] < MIN_SIDE else "")
        )
    if options.channels is not None:
        n = int(data.shape[-1]) if rgb else 1
        if any(c >= n for c in options.channels):
            raise ValueError(
                f"channels {options.channels} ask for channel {max(options.channels)}, but the image has {n}"
            )
    leading = spatial[:-2]
    planes = list(np.ndindex(*leading)) if options.planes is None else list(options.planes)
    for index in planes:
        if len(index) != len(leading) or any(i >= n for i, n in zip(index, leading, strict=False)):
            raise ValueError(f"plane {index} does not exist in an image with leading axes {leading}")
    return Geometry(data, rgb, spatial, planes)


def _bind_visual_prompts(prompts: list, geometry: Geometry) -> list:
    """Visual prompts without an image refer to the image being segmented (a single plane only)."""
    unbound = [p for p in prompts if isinstance(p, VisualPrompt) and p.image is None]
    if not unbound:
        return prompts
    if geometry.planes != [()]:
        raise ValueError(
            "a VisualPrompt on a stack needs image= (the plane its mask is drawn on), "
            "e.g. VisualPrompt(mask, image=stack[0])"
        )
    plane = np.asarray(geometry.data)
    return [dataclasses.replace(p, image=plane) if p in unbound else p for p in prompts]


def iter_plane_logits(
    plane: Any,
    conditionals: torch.Tensor,
    predictor: ClipSegPredictor,
    *,
    mode: str,
    overlap: int,
    batch_size: int,
    value_range: tuple[float, float] | None,
    channels: tuple[int, ...] | None,
    tile: int = INPUT_SIZE,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Logits ``(P, Y, X)`` of one 2D plane (numpy or lazy).

    Tiles are ``tile`` image pixels across (``overlap`` shared), each read at the model's input
    size: native resolution at 352, coarser above (``SegmentOptions.scale``).
    Yields ``(passes done, passes in total)`` after each backbone batch, so callers can report
    progress and stop between batches.
    """
    shape = tuple(plane.shape[:2])
    encode = {"value_range": value_range, "channels": channels}
    boxes: list[Box] = tile_boxes(shape, tile, overlap) if mode in ("tiled", "both") else []
    total = -(-len(boxes) // batch_size) + (mode in ("whole", "both"))
    parts = []
    if boxes:
        stitcher = Stitcher(conditionals.shape[0], shape, ramp=overlap)
        for done, start in enumerate(range(0, len(boxes), batch_size), start=1):
            chunk = boxes[start : start + batch_size]
            try:
                tiles = predictor.encode([plane[y0:y1, x0:x1] for y0, y1, x0, x1 in chunk], **encode)
                for (y0, y1, x0, x1), features in zip(chunk, tiles, strict=True):
                    stitcher.add((y0, y1, x0, x1), predictor.decode(features, conditionals, (y1 - y0, x1 - x0)).numpy())
            except Exception as e:
                raise PlaneError(f"tiles {chunk[0]}..{chunk[-1]} (y0, y1, x0, x1) failed: {e}") from e
            yield done, total
        parts.append(stitcher.result())
    if mode in ("whole", "both"):
        (features,) = predictor.encode([plane], **encode)
        parts.append(predictor.decode(features, conditionals, shape).numpy())
        yield total, total
    return parts[0] if len(parts) == 1 else (parts[0] + parts[1]) / 2


def _plane_progress(done: int, planes: int) -> Any:
    """Progress of a plane's backbone passes: by pass for a single plane, else within the plane count."""

    def convert(event: tuple[int, int]) -> Progress:
        passes, total = event
        if planes == 1:
            return Progress(passes, total, f"tile batch {passes} of {total}")
        return Progress(done, planes, f"plane {done + 1} of {planes}: pass {passes} of {total}")

    return convert


def _segment_planes(
    geometry: Geometry,
    conditionals: torch.Tensor,
    predictor: ClipSegPredictor,
    options: SegmentOptions,
    mode: str,
    value_range: tuple[float, float] | None,
    classes: list[str],
) -> Generator[Progress, None, np.ndarray]:
    """Probabilities ``(P, *spatial)`` of the planes to segment (the others hold 0), refined at
    the pixels when the model carries a refiner for ``classes``."""
    planes, data = geometry.planes, geometry.data
    n_values = conditionals.shape[0] * int(np.prod(geometry.spatial))
    probabilities = np.zeros(
        (conditionals.shape[0], *geometry.spatial), np.float16 if n_values > COMPACT_ABOVE else np.float32
    )
    batches = [planes[i : i + options.batch_size] for i in range(0, len(planes), options.batch_size)]
    groups = batches if mode == "whole" else [[index] for index in planes]
    refiner = refiner_of(predictor.model, classes)
    done = 0
    for group in groups:
        try:
            if mode == "whole":  # several planes per backbone pass
                features = predictor.encode(
                    [data[i] for i in group], value_range=value_range, channels=options.channels
                )
                logits = [predictor.decode(f, conditionals, geometry.plane_shape) for f in features]
            else:
                steps = iter_plane_logits(
                    data[group[0]],
                    conditionals,
                    predictor,
                    mode=mode,
                    overlap=options.tile_overlap,
                    batch_size=options.batch_size,
                    value_range=value_range,
                    channels=options.channels,
                    tile=options.tile_size,
                )
                logits = [torch.from_numpy((yield from relay(steps, _plane_progress(done, len(planes)))))]
        except Exception as e:  # name the plane (and tile) that failed; the cause stays chained
            where = f"plane {group[0]}" + (f" to {group[-1]}" if len(group) > 1 else "") if group[0] else "image"
            raise PlaneError(f"{where}: {e}") from e
        for index, plane_logits in zip(group, logits, strict=True):
            where = (slice(None), *index)
            probabilities[where] = torch.sigmoid(plane_logits).numpy()
            if refiner is not None:  # where, at the image's own pixels (:mod:`.refiner`)
                probabilities[where] = refiner.refine_plane(data[index], probabilities[where], value_range)
        done += len(group)
        yield Progress(done, len(planes), f"plane {done} of {len(planes)}" if group[0] else "decoded")
    return probabilities


def iter_segment(
    image: Any,
    prompts: Prompts,
    predictor: ClipSegPredictor,
    options: SegmentOptions | None = None,
) -> Generator[Progress, None, SegmentationResult]:
    """Segment the 2D planes of an image of any dimensionality; returns full-shape results.

    Args:
        image: ``(..., Y, X)``, or ``(..., Y, X, C)`` with colour channels (see ``options.rgb``);
            numpy or lazy (dask, zarr), or a multiscale list of them (``options.pyramid_level``).
        prompts: One text or :class:`~napari_clipseg.segmentation.visual.VisualPrompt`, or several (each one
            class). A VisualPrompt without an image refers to ``image`` (a single plane only).
        predictor: The predictor to run (its caches are reused).
        options: How to read, run and label (default :class:`SegmentOptions()`).

    Returns:
        A :class:`SegmentationResult` whose labels have the spatial shape of the image and whose
        probabilities are ``(P, *spatial)`` (float16 when large).

    Raises:
        ValueError, TypeError: bad image, prompts or options, before any model work.
        PlaneError: a plane or tile failed (named; the cause is chained).
    """
    options = options or SegmentOptions()
    geometry = plan_planes(image, options)
    prompts = _bind_visual_prompts(clean_prompts(prompts), geometry)
    names = [prompt_label(p) for p in prompts]
    check_distinct(names)
    threshold = options.thresholds_for(len(prompts))
    mode = choose_mode(geometry.plane_shape, options.mode)
    value_range = options.intensity or intensity_range(geometry.data, predictor.percentiles)
    yield Progress(0, len(geometry.planes), f"encoding {len(prompts)} prompt(s)")
    conditionals = predictor.embed_prompts(prompts)
    probabilities = yield from _segment_planes(geometry, conditionals, predictor, options, mode, value_range, names)
    labels = np.zeros(geometry.spatial, label_dtype(len(names)))
    result = SegmentationResult(names, probabilities, labels, options, mode, geometry.planes)
    result.relabel(threshold, options.min_size)
    return result


def segment(
    image: Any,
    prompts: Prompts,
    *,
    model: Any = None,
    predictor: ClipSegPredictor | None = None,
    options: SegmentOptions | None = None,
    **changes: Any,
) -> np.ndarray:
    """Label image for ``prompts``: 0 = background, ``i + 1`` = ``prompts[i]``.

    Args:
        image: ``(Y, X)``, ``(Y, X, C)``, or a stack ``(..., Y, X[, C])``; numpy or lazy (dask, zarr).
        prompts: One text or VisualPrompt, or several (each one class). A VisualPrompt without an
            image refers to ``image`` (2D images only).
        model: A loaded model; ``None`` loads the default weights (``CIDAS/clipseg-rd64-refined``).
        predictor: Reuse a predictor (and its caches) instead of ``model``.
        options: A :class:`SegmentOptions`; ``**changes`` override its fields, e.g.
            ``threshold=0.3, min_size=50, mode="tiled"``. Without options or a threshold, a
            fine-tuned decoder's own threshold (chosen on its held-out images) is used.

    Returns:
        Labels with the image's spatial shape, uint8 for fewer than 256 prompts.
    """
    if predictor is None:
        if model is None or isinstance(model, str | os.PathLike | ModelSpec):
            model = ModelSpec.of(model or DEFAULT_HUB_ID).load()
        # a one-off predictor: caching its features would only cost memory (it dies with this call)
        predictor = ClipSegPredictor(model, cache_bytes=0)
    if options is None and "threshold" not in changes:
        from ..modeling.decoder_files import decoder_threshold

        changes["threshold"] = decoder_threshold(predictor.model) or DEFAULT_THRESHOLD
    options = (options or SegmentOptions()).replace(**changes)
    return run(iter_segment(image, prompts, predictor, options)).labels


__all__ = ["COMPACT_ABOVE", "Geometry", "PlaneError", "choose_mode", "iter_segment", "plan_planes", "segment"]
