"""Widget controls for stacks, large images and channels (how the image is read and tiled)."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, LineEdit, SpinBox

from .planes import MODES
from .tiling import DEFAULT_OVERLAP
from .transforms import parse_channels

REGIONS = ("current plane", "whole stack")


class OptionsPanel(Container):
    """Region (plane or stack), tiling mode and overlap, channel choice, intensity range."""

    def __init__(self) -> None:
        super().__init__(labels=True)
        self.region = ComboBox(
            label="Region",
            choices=list(REGIONS),
            value=REGIONS[0],
            tooltip="For stacks and time series: the plane shown, or every plane",
        )
        self.tiling = ComboBox(
            label="Tiling",
            choices=list(MODES),
            value="auto",
            tooltip="whole: resize to 352; tiled: native-resolution tiles; both: average; "
            "auto: whole up to 704 px, both above",
        )
        self.overlap = SpinBox(label="Tile overlap (px)", min=0, max=300, value=DEFAULT_OVERLAP)
        self.channels = LineEdit(
            label="Channels → RGB",
            value="",
            tooltip="Empty: automatic. Else three channel indices, -1 for an empty one",
        )
        self.contrast = CheckBox(text="Scale intensities by the layer's contrast limits", value=False)
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
        self.extend(
            [self.region, self.tiling, self.overlap, self.channels, self.channel_axis, self.contrast, self.level]
        )

    def restore(self, settings: Any) -> None:
        """Take saved values (invalid ones, e.g. from an older version, are ignored)."""
        if settings.region in REGIONS:
            self.region.value = settings.region
        if settings.tiling in MODES:
            self.tiling.value = settings.tiling
        self.overlap.value = min(max(settings.overlap, self.overlap.min), self.overlap.max)

    def read(self, layer: Any) -> dict[str, Any]:
        """Pipeline options for ``layer`` (raises ValueError for unusable channel text)."""
        options = {
            "mode": self.tiling.value,
            "overlap": int(self.overlap.value),
            "channels": parse_channels(self.channels.value),
        }
        if self.channel_axis.value >= 0 and not layer.rgb:
            if self.channel_axis.value >= layer.ndim - 2:
                raise ValueError(
                    f"Channel axis {self.channel_axis.value} must be one of the {layer.ndim - 2} leading "
                    f"axes of '{layer.name}' (not Y or X)"
                )
            options["channel_axis"] = int(self.channel_axis.value)
        if self.contrast.value:
            options["value_range"] = tuple(float(v) for v in layer.contrast_limits)
        return options
