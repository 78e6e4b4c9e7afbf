"""The layers a widget writes: class labels (and instances) per run, probability maps, live relabelling.

A run updates the newest result layer made for the same image and prompts that nobody changed;
a layer whose content differs from what the plugin last wrote (a checksum over the regions it
wrote, plus napari's paint events) is never written to again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels

from ..io.records import class_names
from ..segmentation.options import SegmentOptions
from ..segmentation.postprocess import InstanceSettings
from ..segmentation.results import SegmentationResult
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
        boxes: ``(y0, y1, x0, x1)`` regions to segment (in plane pixels), or None for whole planes.
    """

    image_name: str
    prompts: list
    names: list[str]
    data: Any
    options: SegmentOptions
    spatial_shape: tuple[int, ...]
    layer_kwargs: dict[str, Any]
    example: dict[str, Any] | None = None
    boxes: list[tuple[float, float, float, float]] | None = None


@dataclass(frozen=True)
class Piece:
    """A result and where it goes in the layer: ``data[(*offset, *plane)] = result.labels[plane]``."""

    result: SegmentationResult
    offset: tuple = ()

    def regions(self) -> list[tuple]:
        return [(*self.offset, *plane) for plane in self.result.planes]

    def write(self, data: Any, labels: np.ndarray | None = None) -> None:
        labels = self.result.labels if labels is None else labels
        for plane in self.result.planes:
            data[(*self.offset, *plane)] = labels[plane]


@dataclass
class LastRun:
    """The latest result shown, for relabelling, probability maps and "use result as example"."""

    pieces: list[Piece]
    layer: Labels
    request: RunRequest
    instances: Labels | None = None
    instance_settings: InstanceSettings | None = None

    @property
    def result(self) -> SegmentationResult:
        """The (first) result; whole-plane runs have exactly one."""
        return self.pieces[0].result


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

    def example_source(self, active: Any, image: Any, current_step: tuple) -> tuple | None:
        """``(labels layer, its image, plane index)`` to take an example from: the selected Labels
        layer, else the last result (on the image and plane it was made for); None if neither."""
        layer = active if isinstance(active, Labels) else self.last_layer
        if layer is None:
            return None
        index = _layers.current_index(image, current_step) if image is not None else ()
        if self.last is not None and layer is self.last_layer:
            name, planes = self.last.request.image_name, self.last.request.options.planes
            image = self._viewer.layers[name] if name in self._viewer.layers else image  # noqa: SIM401
            index = index if planes is None else planes[0]
        return layer, image, index

    def counts_text(self) -> str:
        """Pixels per class of the last result as it is now (after any relabelling)."""
        pieces, names = self.last.pieces, self.last.request.names
        counts = [sum(int((p.result.labels == i + 1).sum()) for p in pieces) for i in range(len(names))]
        return ", ".join(f"{name} {count} px" for name, count in zip(names, counts, strict=True))

    # --- writing a run ---------------------------------------------------------------------------

    def add(
        self,
        pieces: list[Piece],
        record: dict,
        request: RunRequest,
        *,
        probabilities: bool,
        instances: InstanceSettings | None,
    ) -> tuple[Labels, str]:
        """Show a run's result; returns ``(labels layer, note for the user)``."""
        layer, note = self._class_layer(pieces, request, record)
        self.last = LastRun(pieces, layer, request)
        self.set_instances(instances)
        if probabilities:
            self.show_probabilities()
        return layer, note

    def _candidates(self, request: RunRequest) -> list[Labels]:
        """Result layers of the same image and classes, newest first."""

        def same_run(layer: Any) -> bool:
            record = _layers.clipseg_meta(layer)
            return (
                isinstance(layer, Labels)
                and record is not None
                and _layers.KIND_KEY not in layer.metadata
                and class_names(record) == request.names
                and record["image"].get("name") == request.image_name
            )

        return [layer for layer in reversed(list(self._viewer.layers)) if same_run(layer)]

    def _class_layer(self, pieces: list[Piece], request: RunRequest, record: dict) -> tuple[Labels, str]:
        candidates = self._candidates(request)
        fitting = [c for c in candidates if c.data.shape == request.spatial_shape]
        untouched = [c for c in fitting if not _layers.is_edited(c)]
        metadata = {_layers.META_KEY: record}
        if untouched:
            layer = untouched[0]
            self._write(layer, pieces, metadata)
            layer.features = _layers.class_features(request.names)
            return layer, ""
        dtype = pieces[0].result.labels.dtype
        canvas = _layers.canvas_for(request, dtype)
        layer = self._viewer.add_labels(
            canvas,
            name=_layers.output_name(request.names),
            metadata=metadata,
            features=_layers.class_features(request.names),
            **request.layer_kwargs,
        )
        self._write(layer, pieces, metadata)
        _layers.mark_edits(layer)
        if fitting:
            note = f" Your edits in '{fitting[0].name}' were kept; this run is a new layer."
        elif candidates:
            note = (
                f" '{candidates[0].name}' has another shape than '{request.image_name}' now; this run is a new layer."
            )
        else:
            note = ""
        return layer, note

    @staticmethod
    def _write(layer: Labels, pieces: list[Piece], metadata: dict | None = None, labels: list | None = None) -> None:
        for i, piece in enumerate(pieces):
            piece.write(layer.data, None if labels is None else labels[i])
        if metadata:
            layer.metadata.update(metadata)
        _layers.remember_written(layer, [r for p in pieces for r in p.regions()])
        layer.refresh()

    # --- live changes ----------------------------------------------------------------------------

    def relabel(self, threshold: float, min_size: int) -> str | None:
        """New labels for the last run from its cached probabilities (no model call).

        Returns a message when a layer was left alone because someone changed it.
        """
        last, layer = self.last, self.last_layer
        if layer is None:
            return None
        if _layers.is_edited(layer):
            return f"'{layer.name}' has your edits, so it is left alone: run again for a new layer."
        labels = [piece.result.relabel(threshold, min_size) for piece in last.pieces]
        self._write(layer, last.pieces, labels=labels)
        _layers.clipseg_meta(layer)["options"] = last.result.options.to_dict()
        return self._update_instances()

    def set_instances(self, settings: InstanceSettings | None) -> str | None:
        """Show (or stop updating) the instance layer of the last run."""
        if self.last is None:
            return None
        self.last.instance_settings = settings
        return self._update_instances()

    def _update_instances(self) -> str | None:
        last = self.last
        if last is None or last.instance_settings is None or self.last_layer is None:
            return None
        layer = last.instances if last.instances in self._viewer.layers else None
        if layer is not None and _layers.is_edited(layer):
            return f"'{layer.name}' has your edits, so it is left alone: run again for new instances."
        settings, ids, classes = last.instance_settings, [], []
        for piece in last.pieces:
            objects = settings.apply(piece.result.labels, piece.result.probabilities)
            shifted = np.where(objects.ids > 0, objects.ids.astype(np.int64) + len(classes), 0)
            ids.append(shifted.astype(np.uint32))
            classes += objects.classes
        features = _layers.instance_features(classes, last.request.names)
        if layer is None:
            canvas = _layers.canvas_for(last.request, np.uint32)
            layer = self._viewer.add_labels(
                canvas,
                name=_layers.output_name(last.request.names, "instances"),
                metadata={_layers.META_KEY: _layers.clipseg_meta(last.layer), _layers.KIND_KEY: "instances"},
                **last.request.layer_kwargs,
            )
            _layers.mark_edits(layer)
            last.instances = layer
        layer.features = features
        self._write(layer, last.pieces, labels=ids)
        return None

    def instances_for(self, layer: Labels) -> tuple[np.ndarray, list[int]] | None:
        """The instance ids and their class values shown for class layer ``layer``, if any."""
        last = self.last
        if last is None or layer is not last.layer or last.instances not in self._viewer.layers:
            return None
        features = last.instances.features
        return np.asarray(last.instances.data), [int(v) for v in features["class_value"][1:]]

    # --- probability maps ------------------------------------------------------------------------

    def show_probabilities(self) -> str | None:
        """One Image layer per prompt of the last run (``clipseg p: <prompt>``), updated in place."""
        if self.last_layer is None:
            return None
        if self.last.request.boxes is not None:
            return "Probability maps are shown for whole-plane runs, not for boxes."
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
        return None

    def hide_probabilities(self) -> None:
        """Remove the probability maps this plugin added (they are recomputed from the cache when shown)."""
        for layer in [layer for layer in self._viewer.layers if _layers.PROBABILITY_KEY in layer.metadata]:
            self._viewer.layers.remove(layer)
