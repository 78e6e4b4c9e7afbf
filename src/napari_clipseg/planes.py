"""Stacks, time series and large planes: per-plane and per-tile segmentation with bounded memory.

Every 2D plane of an nD image is segmented in one of three modes:

* ``"whole"``: the plane resized to the model input (what CLIPSeg was trained on);
* ``"tiled"``: overlapping native-resolution tiles (see :mod:`tiling`), batched through the
  backbone and blended, so small structures keep their pixels;
* ``"both"``: the average of the two logits, so large objects are not cut by tiles.

``"auto"`` uses ``"whole"`` up to twice the input size and ``"both"`` above. Planes and tiles
are read one batch at a time (dask/zarr arrays are never loaded whole), intensities are scaled
with one range for the whole image, and prompt-independent features go to a :class:`FeatureCache`
so new prompts on the same data re-run only the decoder.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Generator, Hashable
from typing import Any

import numpy as np
import torch

from .constants import DEFAULT_THRESHOLD, INPUT_SIZE
from .modeling import ImageFeatures
from .pipeline import Progress, SegmentationResult
from .predictor import ClipSegPredictor
from .prompts import Prompts, clean_prompts, prompt_label
from .tiling import DEFAULT_OVERLAP, Box, Stitcher, tile_boxes
from .transforms import intensity_range

MODES = ("auto", "whole", "tiled", "both")
#: Probability maps larger than this many values are kept as float16.
COMPACT_ABOVE = 32_000_000


class PlaneError(RuntimeError):
    """A plane or tile failed; the message names it, the cause is chained."""


class FeatureCache:
    """LRU cache of image features (planes, tiles) bounded by memory.

    Attributes:
        hits, misses: Lookups served from the cache / computed.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, ImageFeatures] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    @staticmethod
    def _size(features: ImageFeatures) -> int:
        return sum(r.numel() * r.element_size() for r in features.reduced)

    def get(self, key: Hashable) -> ImageFeatures | None:
        features = self._items.get(key)
        if features is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return features

    def put(self, key: Hashable, features: ImageFeatures) -> None:
        if key in self._items:
            return
        self._items[key] = features
        self._bytes += self._size(features)
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= self._size(old)


def choose_mode(shape: tuple[int, int], mode: str = "auto", tile: int = INPUT_SIZE) -> str:
    """The mode ``"auto"`` stands for on a plane of ``shape``, else ``mode`` (validated)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "whole" if max(shape) <= 2 * tile else "both"


def _encode(predictor: ClipSegPredictor, reads: list[tuple[Hashable, Any]], cache: FeatureCache | None, **kw):
    """Features for ``(key, read)`` pairs: cached ones from the cache, the rest in one batch."""
    found = {key: cache.get(key) for key, _ in reads} if cache is not None else {}
    missing = [(key, read) for key, read in reads if found.get(key) is None]
    if missing:
        for (key, _), features in zip(
            missing, predictor.encode([np.asarray(r) for _, r in missing], **kw), strict=True
        ):
            found[key] = features
            if cache is not None:
                cache.put(key, features)
    return [found[key] for key, _ in reads]


def _whole_read(plane: Any, key: Hashable, tile: int) -> tuple[Hashable, Any]:
    """Cache key and read of a plane for the whole-image pass.

    A strided read bounds what a large lazy plane loads; it is resized to the input anyway.
    """
    step = max(1, max(plane.shape[:2]) // (2 * tile))
    return (key, "whole"), plane[::step, ::step]


def iter_plane_logits(
    plane: Any,
    conditionals: torch.Tensor,
    predictor: ClipSegPredictor,
    *,
    mode: str,
    tile: int = INPUT_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    batch: int = 4,
    cache: FeatureCache | None = None,
    key: Hashable = None,
    **encode_kw: Any,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Logits ``(P, Y, X)`` of one 2D plane (numpy or lazy).

    Yields ``(passes done, passes in total)`` after each backbone batch, so callers can report
    progress and stop between batches.
    """
    shape = tuple(plane.shape[:2])
    parts = []
    boxes: list[Box] = tile_boxes(shape, tile, overlap) if mode in ("tiled", "both") else []
    total = -(-len(boxes) // batch) + (mode in ("whole", "both"))
    done = 0
    if boxes:
        stitcher = Stitcher(conditionals.shape[0], shape, ramp=overlap)
        for start in range(0, len(boxes), batch):
            chunk = boxes[start : start + batch]
            reads = [((key, "tile", b), plane[b[0] : b[1], b[2] : b[3]]) for b in chunk]
            try:
                for b, features in zip(chunk, _encode(predictor, reads, cache, **encode_kw), strict=True):
                    stitcher.add(b, predictor.decode(features, conditionals, (b[1] - b[0], b[3] - b[2])).numpy())
            except Exception as e:
                raise PlaneError(f"tiles {chunk[0]}..{chunk[-1]} (y0, y1, x0, x1) failed: {e}") from e
            done += 1
            yield done, total
        parts.append(stitcher.result())
    if mode in ("whole", "both"):
        (features,) = _encode(predictor, [_whole_read(plane, key, tile)], cache, **encode_kw)
        parts.append(predictor.decode(features, conditionals, shape).numpy())
        yield total, total
    return parts[0] if len(parts) == 1 else (parts[0] + parts[1]) / 2


def iter_segment_nd(
    data: Any,
    prompts: Prompts,
    predictor: ClipSegPredictor,
    *,
    rgb: bool = False,
    planes: list[tuple[int, ...]] | None = None,
    mode: str = "auto",
    tile: int = INPUT_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    batch: int = 4,
    threshold: float = DEFAULT_THRESHOLD,
    min_size: int = 0,
    channels: tuple[int, ...] | None = None,
    value_range: tuple[float, float] | str | None = "auto",
    cache: FeatureCache | None = None,
    cache_key: Hashable = None,
    channel_axis: int | None = None,
) -> Generator[Progress, None, SegmentationResult]:
    """Segment the 2D planes of an nD image (numpy, dask, zarr); returns full-shape results.

    Args:
        data: ``(..., Y, X)``, or ``(..., Y, X, C)`` with ``rgb=True``.
        channel_axis: An axis of ``data`` holding channels (e.g. 0 for ``(C, Y, X)``); it is moved
            last (lazily) and treated like colour, so results have the shape without it.
        planes: Indices of the leading axes to segment (default: all); the others stay 0.
        mode: ``"auto"``, ``"whole"``, ``"tiled"`` or ``"both"`` (module docstring).
        batch: Planes or tiles per backbone pass.
        value_range: Intensity range for all planes; ``"auto"``: percentiles of (a sample of) ``data``.
        cache, cache_key: Keep features for re-prompting; ``cache_key`` must identify ``data``.

    Returns:
        A :class:`SegmentationResult` whose labels have the spatial shape of ``data`` and whose
        probabilities are ``(P, *spatial)`` (float16 when large).
    """
    prompts = clean_prompts(prompts)
    if channel_axis is not None:
        if rgb or not -data.ndim <= channel_axis < data.ndim:
            raise ValueError(f"channel_axis {channel_axis} does not fit data of shape {data.shape} (rgb={rgb})")
        data, rgb = np.moveaxis(data, channel_axis, -1), True
    spatial = tuple(data.shape[:-1] if rgb else data.shape)
    if len(spatial) < 2:
        raise ValueError(f"need at least 2 spatial axes; got shape {data.shape}")
    leading, plane_shape = spatial[:-2], spatial[-2:]
    indices = list(np.ndindex(*leading)) if planes is None else [tuple(p) for p in planes]
    mode = choose_mode(plane_shape, mode, tile)
    if isinstance(value_range, str):
        value_range = intensity_range(data, predictor.percentiles)
    yield Progress(0, len(indices), f"encoding {len(prompts)} prompt(s)")
    conditionals = predictor.embed_prompts(prompts)
    n_values = len(prompts) * int(np.prod(spatial))
    probabilities = np.zeros((len(prompts), *spatial), np.float16 if n_values > COMPACT_ABOVE else np.float32)
    kw = {"value_range": value_range, "channels": channels}
    whole_batches = [indices[i : i + batch] for i in range(0, len(indices), batch)] if mode == "whole" else None
    done = 0
    for group in whole_batches or [[i] for i in indices]:
        try:
            if whole_batches:  # several planes per backbone pass
                reads = [_whole_read(data[index], (cache_key, index), tile) for index in group]
                for index, features in zip(group, _encode(predictor, reads, cache, **kw), strict=True):
                    logits = predictor.decode(features, conditionals, plane_shape)
                    probabilities[(slice(None), *index)] = torch.sigmoid(logits).numpy()
            else:
                (index,) = group
                plane = iter_plane_logits(
                    data[index],
                    conditionals,
                    predictor,
                    mode=mode,
                    tile=tile,
                    overlap=overlap,
                    batch=batch,
                    cache=cache,
                    key=(cache_key, index),
                    **kw,
                )
                logits = yield from _relay(done, len(indices), plane)
                probabilities[(slice(None), *index)] = torch.sigmoid(torch.from_numpy(logits)).numpy()
        except Exception as e:  # name the plane (and tile) that failed; the cause stays chained
            where = f"plane {group[0]}" + (f" to {group[-1]}" if len(group) > 1 else "") if leading else "image"
            raise PlaneError(f"{where}: {e}") from e
        done += len(group)
        yield Progress(done, len(indices), f"plane {done} of {len(indices)}" if leading else "decoded")
    names = [prompt_label(p) for p in prompts]
    result = SegmentationResult(names, probabilities, None, threshold, min_size, {"mode": mode, "planes": indices})
    result.relabel(threshold, min_size)
    return result


def _relay(
    planes_done: int, planes: int, generator: Generator[tuple[int, int], None, np.ndarray]
) -> Generator[Progress, None, np.ndarray]:
    """Report a plane's backbone passes: by pass for a single plane, else within the plane count."""
    while True:
        try:
            done, total = next(generator)
        except StopIteration as stop:
            return stop.value
        if planes == 1:
            yield Progress(done, total, f"tile batch {done} of {total}")
        else:
            yield Progress(planes_done, planes, f"plane {planes_done + 1} of {planes}: pass {done} of {total}")
