"""Widget controls for segmenting by example (visual prompts), and turning them into a VisualPrompt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FloatSlider, LineEdit, PushButton, SpinBox
from napari.layers import Labels, Shapes

from ..segmentation.visual import DEFAULT_MODE, RECIPES, VisualPrompt
from . import layers as _layers

if TYPE_CHECKING:
    import napari


class ExamplePanel(Container):
    """Pick a support region (Shapes: each shape one example; Labels: one value) on an image."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.pinned_index: tuple[int, ...] | None = None  # plane of a pinned result, else the current plane
        self.support = ComboBox(
            label="Layer",
            choices=self._support_choices,
            nullable=True,
            value=None,
            tooltip="A Shapes layer (each shape one example) or a Labels layer",
        )
        self.label_value = SpinBox(label="Label", min=1, max=2**31 - 1, value=1, visible=False)
        self.example_image = ComboBox(
            label="On image",
            choices=self._image_choices,
            nullable=True,
            value=None,
            tooltip="The image the example is drawn on (empty: the image being segmented)",
        )
        self.class_name = LineEdit(label="Name", value="example")
        self.visual_weight = FloatSlider(  # no readout box: the value is in the label (the dock is narrow)
            label="Weight 1.00",
            min=0.0,
            max=1.0,
            step=0.05,
            value=1.0,
            readout=False,
            tooltip="1: the example alone; lower values mix in the name as a text prompt",
        )
        self.visual_weight.changed.connect(lambda value: setattr(self.visual_weight, "label", f"Weight {value:.2f}"))
        self.engineering = ComboBox(
            label="Recipe",
            choices=list(RECIPES),
            value=DEFAULT_MODE,
            tooltip="Visual prompt engineering (paper Table 2); the default is the paper's best",
        )
        self.use_result = PushButton(text="Use result", tooltip="Use the result (as corrected) as the example")
        self.extend(
            [
                self.support,
                self.label_value,
                self.example_image,
                self.class_name,
                self.visual_weight,
                self.engineering,
                self.use_result,
            ]
        )
        self.support.changed.connect(self._on_layer)
        layers = viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.moved):
            event.connect(self.reset_choices)

    def _support_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Shapes | Labels)]

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if _layers.is_input_image(layer)]

    def _on_layer(self, layer: Any) -> None:
        self.label_value.visible = isinstance(layer, Labels)
        self.pinned_index = None

    def pin(self, labels: Labels, value: int, image: Any, index: tuple[int, ...]) -> int:
        """Use ``labels == value`` on plane ``index`` of ``image`` as the example (a refined result),
        named after that label's class; returns the label value used (at least 1)."""
        value = max(1, int(value))
        self.reset_choices()
        self.support.value = labels  # resets the pin, so pin after it
        self.label_value.value = value
        self.example_image.value = image
        self.pinned_index = index
        names = _layers.layer_class_names(labels)
        self.class_name.value = names[value - 1] if value <= len(names) else f"label {value}"
        return value

    def pin_source(self, source: tuple[Labels, Any, tuple[int, ...]] | None) -> tuple[str, str]:
        """:meth:`pin` the selected label of a result ``(labels, image, plane)`` (None: there is
        none); what to tell the user, and its level."""
        if source is None:
            return "Run once (or select a Labels layer) first: its selected label becomes the example.", "warning"
        layer, image, index = source
        value = self.pin(layer, int(layer.selected_label), image, index)
        where = f" (plane {list(index)})" if index else ""
        return f"Example: label {value} of '{layer.name}'{where}. Pick the next plane or image and press Run.", "info"

    @property
    def active(self) -> bool:
        return self.support.value is not None

    def build(self, target: Any) -> VisualPrompt | None:
        """The VisualPrompt for the current settings (None when no example layer is chosen).

        Raises:
            ValueError: the example does not fit its image, or has no usable region.
        """
        support = self.support.value
        if support is None:
            return None
        image = self.example_image.value or target
        pinned = self.pinned_index
        index = pinned if pinned is not None else _layers.current_index(image, self._viewer.dims.current_step)
        if isinstance(support, Shapes) and len(support.data) == 0:
            raise ValueError(f"Shapes layer '{support.name}' has no shapes: draw around an example first")
        _layers.check_aligned(support, image, "the example")
        masks = _layers.support_masks(support, self.label_value.value, _layers.spatial_shape(image), index)
        if not masks or not any(m.any() for m in masks):
            raise ValueError(f"the example in '{support.name}' is empty on this plane: mark an example first")
        name = self.class_name.value.strip() or "example"
        weight = float(self.visual_weight.value)
        return VisualPrompt(
            masks,
            image=_layers.image_plane_at(image, index),
            text=name if weight < 1 else None,
            weight=weight,
            mode=self.engineering.value,
            name=name,
        )
