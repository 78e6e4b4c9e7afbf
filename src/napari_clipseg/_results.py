"""The layers a widget writes: one Labels layer per run, probability maps, and live relabelling.

An untouched result layer is updated in place when the same prompts run again; a layer the user
has painted on is never written to again (a new layer is added instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels

from . import _layers
from .pipeline import SegmentationResult

if TYPE_CHECKING:
    import napari

_COLORMAPS = ("magenta", "green", "cyan", "yellow", "red", "blue")


@dataclass(frozen=True)
class RunContext:
    """What a run needs to place its result, captured when Run is pressed."""

    image_name: str
    prompts: list  # texts and VisualPrompts, in label order
    names: list[str]  # their class names
    data: Any  # the image layer's array (may be lazy: read in the worker)
    rgb: bool
    spatial_shape: tuple[int, ...]
    planes: list[tuple[int, ...]] | None  # leading-axis indices to segment; None = every plane
    options: dict[str, Any]  # planes.iter_segment_nd options (mode, overlap, channels, value_range)
    spatial: dict[str, Any]  # the image's scale, translation, ... for output layers
    record: dict[str, Any]  # extra provenance (e.g. the visual example used)


class ResultLayers:
    """Creates and updates the output layers of one widget in one viewer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        #: (result, labels layer, context) of the last run, for relabelling and probability maps.
        self.last: tuple[SegmentationResult, Labels, RunContext] | None = None

    @property
    def last_layer(self) -> Labels | None:
        """The last run's Labels layer, if the user has not deleted it."""
        if self.last is None or self.last[1] not in self._viewer.layers:
            return None
        return self.last[1]

    def add(self, result: SegmentationResult, meta: dict, context: RunContext, *, probabilities: bool) -> tuple:
        """Show a run's result; returns ``(labels layer, note for the user)``."""
        layer, note = self._write_labels(result, context, meta)
        self.last = (result, layer, context)
        if probabilities:
            self.show_probabilities()
        return layer, note

    def _write_labels(self, result: SegmentationResult, context: RunContext, meta: dict) -> tuple[Labels, str]:
        name, labels = _layers.output_name(context.names), result.labels
        existing = self._viewer.layers[name] if name in self._viewer.layers else None  # noqa: SIM401 (no .get)
        reusable = (
            isinstance(existing, Labels)
            and _layers.clipseg_meta(existing) is not None
            and not _layers.is_edited(existing)
            and existing.data.shape == context.spatial_shape
        )
        record = {_layers.META_KEY: {**meta, "edited": False}}
        if reusable:
            for index in _planes(result):
                existing.data[index] = labels[index]
            existing.metadata.update(record)
            existing.features = _layers.class_features(context.names)
            existing.refresh()
            return existing, ""
        layer = self._viewer.add_labels(
            labels,
            name=name,
            metadata=record,
            features=_layers.class_features(context.names),
            **context.spatial,
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
        result = self.last[0]
        labels = result.relabel(threshold, min_size)
        for index in _planes(result):
            layer.data[index] = labels[index]
        layer.refresh()
        _layers.clipseg_meta(layer).update(threshold=result.threshold, min_size=result.min_size)
        return None

    def show_probabilities(self) -> None:
        """One Image layer per prompt of the last run (``clipseg p: <prompt>``), updated in place."""
        if self.last_layer is None:
            return
        result, _, context = self.last
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
                **context.spatial,
            )


def _planes(result: SegmentationResult) -> list[tuple[int, ...]]:
    """The planes a run segmented (the rest of an existing layer is left as it was)."""
    return result.metadata.get("planes", [()])
