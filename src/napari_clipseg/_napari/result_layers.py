"""The layers a widget writes: one Labels layer per run, probability maps, and live relabelling.

An untouched result layer is updated in place when the same prompts run again; a layer the user
has painted on is never written to again (a new layer is added instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels

from ..options import SegmentOptions
from ..results import SegmentationResult
from . import layers as _layers

if TYPE_CHECKING:
    import napari

_COLORMAPS = ("magenta", "green", "cyan", "yellow", "red", "blue")


@dataclass(frozen=True)
class RunRequest:
    """What a run needs, captured when Run is pressed (the worker reads only this).

    Attributes:
        image_name: The Image layer segmented.
        prompts: Texts and VisualPrompts, in label order.
        names: Their class names.
        data: The image layer's array (may be lazy: read in the worker).
        options: Every run option (planes, channels, mode, threshold, ...).
        spatial_shape: Shape of the result layers.
        layer_kwargs: The image's scale, translation, ... for the result layers.
        example: How a visual example was given (for the record), or None.
    """

    image_name: str
    prompts: list
    names: list[str]
    data: Any
    options: SegmentOptions
    spatial_shape: tuple[int, ...]
    layer_kwargs: dict[str, Any]
    example: dict[str, Any] | None = None


@dataclass(frozen=True)
class LastRun:
    """The latest result shown, for relabelling, probability maps and "use result as example"."""

    result: SegmentationResult
    layer: Labels
    request: RunRequest


class ResultLayers:
    """Creates and updates the output layers of one widget in one viewer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.last: LastRun | None = None

    @property
    def last_layer(self) -> Labels | None:
        """The last run's Labels layer, if the user has not deleted it."""
        if self.last is None or self.last.layer not in self._viewer.layers:
            return None
        return self.last.layer

    def add(self, result: SegmentationResult, record: dict, request: RunRequest, *, probabilities: bool) -> tuple:
        """Show a run's result; returns ``(labels layer, note for the user)``."""
        layer, note = self._write_labels(result, request, record)
        self.last = LastRun(result, layer, request)
        if probabilities:
            self.show_probabilities()
        return layer, note

    def _write_labels(self, result: SegmentationResult, request: RunRequest, record: dict) -> tuple[Labels, str]:
        name, labels = _layers.output_name(request.names), result.labels
        existing = self._viewer.layers[name] if name in self._viewer.layers else None  # noqa: SIM401 (no .get)
        reusable = (
            isinstance(existing, Labels)
            and _layers.clipseg_meta(existing) is not None
            and not _layers.is_edited(existing)
            and existing.data.shape == request.spatial_shape
        )
        metadata = {_layers.META_KEY: record}
        if reusable:
            for index in result.planes:
                existing.data[index] = labels[index]
            existing.metadata.update(metadata)
            existing.features = _layers.class_features(request.names)
            existing.refresh()
            return existing, ""
        layer = self._viewer.add_labels(
            labels,
            name=name,
            metadata=metadata,
            features=_layers.class_features(request.names),
            **request.layer_kwargs,
        )
        _layers.mark_edits(layer)
        note = f" Your edits in '{existing.name}' were kept; this run is a new layer." if existing is not None else ""
        return layer, note

    def relabel(self, threshold: float, min_size: int) -> str | None:
        """New labels for the last run from its cached probabilities (no model call).

        Returns a message when the layer was left alone because the user edited it.
        """
        layer = self.last_layer
        if layer is None:
            return None
        if _layers.is_edited(layer):
            return f"'{layer.name}' has your edits, so it is left alone: run again for a new layer."
        result = self.last.result
        labels = result.relabel(threshold, min_size)
        for index in result.planes:
            layer.data[index] = labels[index]
        layer.refresh()
        _layers.clipseg_meta(layer)["options"] = result.options.to_dict()
        return None

    def show_probabilities(self) -> None:
        """One Image layer per prompt of the last run (``clipseg p: <prompt>``), updated in place."""
        if self.last_layer is None:
            return
        result, request = self.last.result, self.last.request
        for i, prompt in enumerate(result.prompts):
            name, data = f"clipseg p: {prompt}", result.probabilities[i]
            if name in self._viewer.layers and isinstance(self._viewer.layers[name], Image):
                self._viewer.layers[name].data = data
                continue
            self._viewer.add_image(
                data,
                name=name,
                metadata={_layers.PROBABILITY_KEY: prompt},
                colormap=_COLORMAPS[i % len(_COLORMAPS)],
                blending="additive",
                contrast_limits=(0.0, 1.0),
                opacity=0.6,
                **request.layer_kwargs,
            )
