"""Widget controls for stacks, large images and channels (how the image is read and tiled)."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, SpinBox

from ..constants import AUTO_WHOLE_MAX_SIDE, INPUT_SIZE, MODES
from ..segmentation.options import SegmentOptions, parse_channels
from .settings import REGIONS, Settings


def _scale_box(value: float) -> FloatSpinBox:
    return FloatSpinBox(
        label="Read scale",
        tooltip="The scale tiles are read at: 1 = native resolution (most detail); 0.5 = half "
        "(a quarter of the tiles, about 4x faster on a large image). 'whole' squeezes the image into one frame",
        min=0.05,
        max=1.0,
        step=0.05,
        value=value,
    )


class OptionsPanel(Container):
    """Region (plane or stack), tiling mode and overlap, channel choice, intensity range, pyramid level."""

    def __init__(self, viewer: Any) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._create(SegmentOptions())
        self._lay_out(viewer)

    def _create(self, defaults: SegmentOptions) -> None:
        self.region = ComboBox(
            label="Region",
            choices=list(REGIONS),
            value=REGIONS[0],
            tooltip="The plane shown, every plane of a stack, or only inside the boxes of a Shapes layer "
            "(large images: one corner now, not the whole image)",
        )
        self.boxes = ComboBox(
            label="Boxes",
            choices=self._shapes_choices,
            nullable=True,
            value=None,
            visible=False,
            tooltip="A Shapes layer: each rectangle (or any shape's bounding box) is one region",
        )
        self.tiling = ComboBox(
            label="Tiling",
            choices=list(MODES),
            value=defaults.mode,
            tooltip=f"whole: resize to {INPUT_SIZE}; tiled: native-resolution tiles; both: average; "
            f"auto: whole up to {AUTO_WHOLE_MAX_SIDE} px, both above",
        )
        self.overlap = SpinBox(
            label="Overlap (px)",
            tooltip="Pixels shared by neighbouring tiles",
            min=0,
            max=INPUT_SIZE - 1,
            value=defaults.overlap,
        )
        self.scale = _scale_box(defaults.scale)
        self.channels = LineEdit(
            label="RGB channels",
            value="",
            tooltip="Empty: automatic. Else three channel indices, -1 for an empty one",
        )
        self.contrast = CheckBox(
            text="Use contrast limits",
            value=False,
            tooltip="Scale intensities by the layer's contrast limits (what you see) instead of percentiles",
        )
        self.level = SpinBox(
            label="Pyramid level",
            min=0,
            max=20,
            value=0,
            tooltip="For multiscale layers: 0 is the finest level; higher levels are faster",
        )
        self.channel_axis = SpinBox(
            label="Channel axis",
            min=-1,
            max=10,
            value=-1,
            tooltip="-1: none. Else the axis of a non-RGB layer that holds channels, "
            "e.g. 0 for (C, Y, X); its channels are then combined as colours",
        )

    def _lay_out(self, viewer: Any) -> None:
        self.extend(
            [
                self.region,
                self.boxes,
                self.tiling,
                self.overlap,
                self.scale,
                self.channels,
                self.channel_axis,
                self.contrast,
                self.level,
            ]
        )
        self.region.changed.connect(lambda region: setattr(self.boxes, "visible", region == REGIONS[2]))
        layers = viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.moved):
            event.connect(self.boxes.reset_choices)

    def _shapes_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Shapes

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Shapes)]

    def restore(self, settings: Settings) -> None:
        """Take saved values (already validated by ``load_settings``)."""
        self.region.value = settings.region
        self.boxes.visible = settings.region == REGIONS[2]
        self.tiling.value = settings.options.mode
        self.overlap.value = settings.options.overlap
        self.scale.value = settings.options.scale

    def level_for(self, layer: Any) -> int:
        """The pyramid level to read (0 for single-scale layers)."""
        return int(self.level.value) if layer.multiscale else 0

    def axis_for(self, layer: Any) -> int | None:
        """The chosen channel axis of ``layer``, or None.

        Raises:
            ValueError: the axis is Y or X (or beyond), naming the layer.
        """
        axis = int(self.channel_axis.value)
        if axis < 0 or layer.rgb:
            return None
        if axis >= layer.ndim - 2:
            raise ValueError(
                f"Channel axis {axis} must be one of the {layer.ndim - 2} leading axes of '{layer.name}' (not Y or X)"
            )
        return axis

    def base_options(self, threshold: float, min_size: int) -> SegmentOptions:
        """The options of every run (this panel's tiling, overlap and scale; the main controls'
        threshold and minimum size); :meth:`apply` adds a layer's, :meth:`folder_options` a folder's."""
        return SegmentOptions(
            mode=self.tiling.value,
            overlap=int(self.overlap.value),
            scale=float(self.scale.value),
            threshold=threshold,
            min_size=min_size,
        )

    def folder_options(self, options: SegmentOptions) -> SegmentOptions:
        """``options`` with this panel's channels and channel axis for a folder's files (a pre-label
        run, a new project; ValueError for unusable channel text)."""
        axis = int(self.channel_axis.value)
        return options.replace(channels=parse_channels(self.channels.value), channel_axis=axis if axis >= 0 else None)

    def apply(self, options: SegmentOptions, layer: Any) -> SegmentOptions:
        """``options`` with this panel's choices for ``layer`` (ValueError for unusable channel text)."""
        return options.replace(
            mode=self.tiling.value,
            overlap=int(self.overlap.value),
            scale=float(self.scale.value),
            channels=parse_channels(self.channels.value),
            channel_axis=self.axis_for(layer),
            intensity=tuple(float(v) for v in layer.contrast_limits) if self.contrast.value else None,
            pyramid_level=self.level_for(layer),
        )
