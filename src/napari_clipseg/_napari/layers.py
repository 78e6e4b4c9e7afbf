"""napari layer helpers for the widget: which data and plane to segment, output layers, class tables."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..io.records import class_names

if TYPE_CHECKING:
    import napari

META_KEY = "clipseg"
PROBABILITY_KEY = "clipseg_probability"
#: Marks a derived result layer (``"instances"``); class layers have no such key.
KIND_KEY = "clipseg_kind"
#: What the plugin last wrote into a result layer: the regions and a checksum of their content.
WRITTEN_KEY = "clipseg_written"


def layer_data(layer: Any, level: int = 0) -> Any:
    """The layer's array (level ``level`` of a multiscale layer, clipped); lazy arrays stay lazy."""
    return layer.data[min(level, len(layer.data) - 1)] if layer.multiscale else layer.data


def level_kwargs(layer: Any, level: int) -> dict[str, Any]:
    """:func:`spatial_kwargs` for results computed on pyramid ``level`` of a multiscale layer.

    Pixels of level ``k`` are ``downsample_factors[k]`` times larger; their centres sit
    ``(factor - 1) / 2`` level-0 pixels from the level-0 origin.
    """
    kwargs = spatial_kwargs(layer)
    if not layer.multiscale or level == 0:
        return kwargs
    level = min(level, len(layer.data) - 1)
    factors = np.asarray(layer.downsample_factors[level], float)[: layer.ndim]
    scale = np.asarray(layer.scale, float)
    kwargs["scale"] = scale * factors
    kwargs["translate"] = np.asarray(layer.translate, float) + (factors - 1) / 2 * scale
    return kwargs


def spatial_shape(layer: Any, level: int = 0) -> tuple[int, ...]:
    """Shape of the layer's data (at pyramid ``level``) without its RGB axis: the Labels' shape."""
    shape = layer_data(layer, level).shape
    return tuple(shape[:-1] if layer.rgb else shape)


def current_index(layer: Any, current_step: tuple[int, ...], level: int = 0) -> tuple[int, ...]:
    """Indices of the leading (non-plane) axes of ``layer`` (at pyramid ``level``) at ``current_step``."""
    shape = spatial_shape(layer, level)
    n_leading = len(shape) - 2
    step = tuple(current_step)[-len(shape) :] if current_step else ()
    if layer.multiscale and level:
        factors = layer.downsample_factors[min(level, len(layer.data) - 1)]
        step = tuple(int(i // f) for i, f in zip(step, factors, strict=False))
    return tuple(min(max(int(i), 0), s - 1) for i, s in zip(step[:n_leading], shape[:n_leading], strict=False))


@dataclass(frozen=True)
class ImageRead:
    """What a run reads from an Image layer, and where its results go.

    Attributes:
        data: The array at the chosen pyramid level (lazy data stays lazy).
        index: Leading-axis indices of the plane on screen (channel axis removed).
        spatial_shape: Shape of the result layers (no RGB or channel axis).
        layer_kwargs: Scale, translation, ... for the result layers.
    """

    data: Any
    index: tuple[int, ...]
    spatial_shape: tuple[int, ...]
    layer_kwargs: dict[str, Any]


def read_image(layer: Any, current_step: tuple[int, ...], level: int, channel_axis: int | None) -> ImageRead:
    """The data, current plane and output geometry of ``layer`` (a channel axis is dropped from the outputs)."""
    index = current_index(layer, current_step, level)
    shape = spatial_shape(layer, level)
    kwargs = level_kwargs(layer, level)
    if channel_axis is not None:  # the channels become colours: the results lack that axis
        shape = shape[:channel_axis] + shape[channel_axis + 1 :]
        index = index[:channel_axis] + index[channel_axis + 1 :]
        kwargs = without_axis(kwargs, channel_axis)
    return ImageRead(layer_data(layer, level), index, shape, kwargs)


def image_plane_at(layer: Any, index: tuple[int, ...]) -> np.ndarray:
    """The 2D data of ``layer`` at leading indices ``index`` (finest level of multiscale data)."""
    data = layer_data(layer)
    return np.asarray(data[index] if index else data)


def without_axis(kwargs: dict[str, Any], axis: int) -> dict[str, Any]:
    """Layer kwargs for results that lack ``axis`` (a channel axis): per-axis entries lose it; rotation,
    shear and affine, which mix axes, are left at napari's defaults."""
    out = {}
    for name in ("scale", "translate", "units", "axis_labels"):
        if name in kwargs:
            values = list(kwargs[name])
            del values[axis]
            out[name] = values
    return out


def spatial_kwargs(layer: napari.layers.Layer) -> dict[str, Any]:
    """Scale, translation, rotation, shear, affine, units and axis labels to copy to outputs."""
    kwargs: dict[str, Any] = {
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine.affine_matrix,
    }
    for name in ("units", "axis_labels"):
        if hasattr(layer, name):
            kwargs[name] = getattr(layer, name)
    return kwargs


def output_name(prompts: list[str], kind: str = "") -> str:
    return f"clipseg{' ' + kind if kind else ''}: {', '.join(prompts)}"


def canvas_for(request: Any, dtype: Any) -> Any:
    """An all-background array for a run's results: the full spatial shape, sparse for box runs on
    lazy or huge images (see :func:`napari_clipseg.segmentation.regions.labels_canvas`)."""
    from ..segmentation.regions import labels_canvas

    if request.boxes is None:
        return np.zeros(request.spatial_shape, dtype)
    return labels_canvas(request.spatial_shape, dtype, lazy=not isinstance(request.data, np.ndarray))


def instance_features(classes: Sequence[int], names: list[str]) -> pd.DataFrame:
    """One row per instance id (0 = background): its class value and name."""
    values = [0, *classes]
    return pd.DataFrame(
        {
            "index": np.arange(len(values)),
            "class_value": values,
            "class": ["background", *(names[c - 1] for c in classes)],
        }
    )


def layer_class_names(layer: Any) -> list[str]:
    """Class names of a Labels layer: from its CLIPSeg record, else ``label 1`` .. ``label N``."""
    record = clipseg_meta(layer)
    if record is not None:
        return class_names(record)
    return [f"label {v}" for v in range(1, int(np.max(layer.data, initial=0)) + 1)]


def class_features(prompts: list[str]) -> pd.DataFrame:
    """One row per label value (0 = background), as napari's Labels ``features`` expects."""
    return pd.DataFrame({"index": np.arange(len(prompts) + 1), "class": ["background", *prompts]})


def class_table_text(prompts: list[str]) -> str:
    return "  ".join(f"{i + 1} = {p}" for i, p in enumerate(prompts))


def clipseg_meta(layer: napari.layers.Layer) -> dict[str, Any] | None:
    """The plugin's provenance record (see :mod:`napari_clipseg.io.records`) on a layer it made, else None."""
    meta = layer.metadata.get(META_KEY)
    return meta if isinstance(meta, dict) else None


def _mark_edited(layer: Any) -> None:
    meta = clipseg_meta(layer)
    if meta is not None and not meta.get("edited"):
        layer.metadata[META_KEY] = {**meta, "edited": True}  # a copy: a derived layer may share the dict


def mark_edits(layer: napari.layers.Labels) -> None:
    """Flag the layer as edited as soon as the user paints, fills or erases on it (anywhere)."""
    layer.events.paint.connect(lambda event=None: _mark_edited(layer))


def checksum(data: Any, regions: Sequence[tuple]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for region in regions:
        digest.update(np.ascontiguousarray(np.asarray(data[region])).data)
    return digest.hexdigest()


def remember_written(layer: Any, regions: list[tuple]) -> None:
    """Record what the plugin just wrote, so a later change by anyone is noticed (:func:`is_edited`)."""
    parts = [checksum(layer.data, [region]) for region in regions]  # which plane changed, for learning
    layer.metadata[WRITTEN_KEY] = {"regions": regions, "checksum": checksum(layer.data, regions), "parts": parts}


def changed_since_written(data: Any, metadata: dict[str, Any]) -> bool:
    """Whether ``data`` differs from what the plugin (or its reader) last put there."""
    written = metadata.get(WRITTEN_KEY)
    return written is not None and checksum(data, written["regions"]) != written["checksum"]


def changed_regions(layer: Any) -> list[tuple]:
    """The written regions (planes) whose content someone changed since the plugin wrote them."""
    written = layer.metadata.get(WRITTEN_KEY)
    if written is None:
        return []
    parts = written.get("parts") or [None] * len(written["regions"])
    return [r for r, c in zip(written["regions"], parts, strict=True) if c is None or checksum(layer.data, [r]) != c]


def is_edited(layer: napari.layers.Layer) -> bool:
    """Whether someone changed a result layer since the plugin wrote it: painted on it (napari's
    events), or changed its data in any other way (scripts, other plugins, undo), which the
    checksum of the written regions shows. A changed layer is marked ``edited`` in its record."""
    meta = clipseg_meta(layer)
    if meta is None:
        return False
    if meta.get("edited"):
        return True
    if changed_since_written(layer.data, layer.metadata):
        _mark_edited(layer)
        return True
    return False


def is_input_image(layer: Any) -> bool:
    """An Image layer the user can segment: not one of our probability maps."""
    from napari.layers import Image

    return isinstance(layer, Image) and PROBABILITY_KEY not in layer.metadata


def support_masks(layer: Any, value: int, spatial_shape: tuple[int, ...], index: tuple[int, ...]) -> list[np.ndarray]:
    """Support regions of the plane ``index`` of an image of ``spatial_shape``, as 2D bool masks.

    Shapes: one mask per shape (empty ones, e.g. on other planes, are dropped). Labels: the pixels
    equal to ``value``.

    Raises:
        ValueError: the layer does not match the image (shape or transform), or is of another type.
    """
    from napari.layers import Labels, Shapes

    if isinstance(layer, Labels):
        if tuple(layer.data.shape) != tuple(spatial_shape):
            raise ValueError(f"Labels layer '{layer.name}' is {layer.data.shape}, its image is {spatial_shape}")
        return [np.asarray(layer.data[index] if index else layer.data) == value]
    if isinstance(layer, Shapes):
        if len(layer.data) == 0:
            raise ValueError(f"Shapes layer '{layer.name}' has no shapes: draw around an example first")
        masks = np.asarray(layer.to_masks(mask_shape=spatial_shape[-layer.ndim :]))
        masks = masks[(slice(None), *index[len(index) - (layer.ndim - 2) :])] if layer.ndim > 2 else masks
        return [m for m in masks if m.any()]
    raise ValueError(f"'{layer.name}' is a {type(layer).__name__} layer; use a Shapes or Labels layer as the example")


def check_aligned(layer: Any, image: Any, what: str) -> None:
    """Raise ValueError unless ``layer`` maps to the world as ``image`` does (``what`` is drawn on it)."""
    if not same_transform(layer, image):
        raise ValueError(
            f"'{layer.name}' and '{image.name}' are not aligned (scale, translation, rotation): "
            f"draw {what} on a layer with the image's transform"
        )


def same_transform(a: Any, b: Any) -> bool:
    """Whether two layers map data to world identically (so their data coordinates agree)."""
    return (
        a.ndim == b.ndim
        and np.allclose(a.affine.affine_matrix, b.affine.affine_matrix)
        and all(np.allclose(getattr(a, n), getattr(b, n)) for n in ("scale", "translate", "rotate", "shear"))
    )


def boxes_from_shapes(shapes: Any, image: Any, index: tuple[int, ...], level: int = 0) -> list[tuple[float, ...]]:
    """``(y0, y1, x0, x1)`` in pixels of ``image`` (at pyramid ``level``) of each shape's bounding box
    on plane ``index`` (shapes of a 2D layer apply to every plane).

    Raises:
        ValueError: the layer is not aligned with the image, or has no shape on this plane.
    """
    if not (shapes.ndim == 2 and image.ndim > 2):  # 2D boxes on a stack apply to every plane
        check_aligned(shapes, image, "the boxes")
    factors = np.ones(2)
    if image.multiscale and level:
        factors = np.asarray(image.downsample_factors[min(level, len(image.data) - 1)], float)[-2:]
    boxes = []
    for vertices in shapes.data:
        vertices = np.asarray(vertices, float)
        leading = vertices[:, :-2]
        if leading.size and index and not np.allclose(leading.round(), np.asarray(index, float)[-leading.shape[1] :]):
            continue  # a shape drawn on another plane
        (y0, x0), (y1, x1) = vertices[:, -2:].min(axis=0) / factors, vertices[:, -2:].max(axis=0) / factors
        boxes.append((y0, y1, x0, x1))
    if not boxes:
        raise ValueError(f"'{shapes.name}' has no box on this plane: draw a rectangle around the region to segment")
    return boxes


def image_change_note(viewer: Any, request: Any) -> str:
    """What to tell the user when a run's image was closed or replaced while the run worked."""
    layers = viewer.layers
    image = layers[request.image_name] if request.image_name in layers else None  # noqa: SIM401 (no .get)
    if image is None:
        return f" '{request.image_name}' was closed during the run; the result is for its data at Run."
    if layer_data(image, request.options.pyramid_level) is not request.data:
        return f" '{request.image_name}' changed during the run; the result is for its data at Run: run again."
    return ""
