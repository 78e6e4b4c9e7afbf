"""The Annotate mode's decoder and threshold: which of the project's decoders is in use, and its threshold.

The **Decoder** list holds the base model and every decoder the project learnt (with its held-out
IoU, and whether it keeps a pixel refiner); choosing one puts it in use
(:meth:`~napari_clipseg.project.project.Project.use_decoder`), the waiting images are re-predicted
with it, and the Segment mode runs it too (the dock's one model). Moving the threshold slider (on
release) sets the threshold of the decoder in use
(:meth:`~napari_clipseg.project.project.Project.set_threshold`): the waiting pre-labels are shown,
scored and recorded at it from then on, and the labels on screen follow at once when nobody has
touched them. A decoder with a pixel refiner keeps 0.5 (its maps are calibrated) and a project
with one threshold per class keeps its own: the slider says so and is disabled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, FloatSlider

from .dock_text import threshold_label

if TYPE_CHECKING:
    from ..project.project import Project
    from .annotate_view import AnnotateLayers


#: The base model's entry in the Decoder list (a combo box's value cannot be None).
BASE = ""


class DecoderControls:
    """The list and the slider, and what they do (see the module docstring).

    Args:
        project: The open project (None: none).
        current: The image on screen (None: none).
        layers: The Annotate mode's layers (the labels on screen, untouched or not).
        say: ``(message, level)``: the Annotate mode's status box and a notification.
        changed: Called after another decoder is put in use (re-predict; the Segment mode follows).
    """

    def __init__(
        self,
        project: Callable[[], Project | None],
        current: Callable[[], str | None],
        layers: AnnotateLayers,
        say: Callable[[str, str], None],
        changed: Callable[[], None],
    ) -> None:
        self._project, self._current, self._layers, self._say, self._changed = project, current, layers, say, changed
        # choices made anew from the project (napari resets every combo box when layers change)
        self.decoder = ComboBox(label="Decoder", choices=lambda _: _decoder_choices(self._project()), enabled=False)
        self.slider = FloatSlider(
            label=threshold_label(0.4), min=0.01, max=0.99, step=0.01, readout=False, tracking=False, enabled=False
        )
        self.widgets = Container(labels=True, widgets=[self.decoder, self.slider])
        self._showing = False
        self.decoder.changed.connect(self._use)
        self.slider.changed.connect(self._set)

    def show(self, project: Project | None) -> None:
        """``project``'s decoders, the one in use chosen, and its threshold (disabled where it cannot change)."""
        threshold = project.threshold if project is not None else None
        refined = project is not None and project.refined
        fixed = refined or not isinstance(threshold, float)
        self._showing = True
        try:
            self.decoder.reset_choices()
            self.decoder.value = project.decoder.name if project is not None and project.decoder else BASE
            if isinstance(threshold, float):
                self.slider.value = threshold
                self.slider.label = threshold_label(threshold)
        finally:
            self._showing = False
        self.decoder.enabled = project is not None and len(self.decoder.choices) > 1
        self.slider.enabled = project is not None and not fixed
        self.slider.tooltip = (
            "The decoder in use has a pixel refiner: its maps are calibrated (0.5)"
            if refined
            else "One threshold per class: set with the Python API"
            if project is not None and fixed
            else "The threshold of the decoder in use: the pre-labels follow (on release)"
        )

    def _use(self, choice: str) -> None:
        from ..errors import ProjectError

        project, name = self._project(), choice or None
        if self._showing or project is None or (project.decoder.name if project.decoder else None) == name:
            return
        try:
            project.use_decoder(name)
        except (ProjectError, OSError) as e:
            self._say(str(e), "error")
            return
        self.show(project)
        self._say(f"Decoder {name or 'of the base model'} in use: the waiting images are re-predicted with it.", "info")
        self._changed()

    def _set(self, value: float) -> None:
        from ..errors import ProjectError

        project = self._project()
        if self._showing or project is None:
            return
        self.slider.label = threshold_label(value)
        try:
            project.set_threshold(float(value))
        except (ProjectError, OSError, ValueError) as e:
            self._say(str(e), "error")
            return
        name = self._current()
        if name is not None and project.state(name) == "pre-labelled" and self._layers.untouched():
            self._layers.replace_labels(project.prelabels(name))  # a small read: the probabilities are kept
        self._say(f"Threshold {value:.2f} for the decoder in use: the waiting pre-labels follow.", "info")


def _decoder_choices(project: Project | None) -> list[tuple[str, str]]:
    """``(text, name)`` of the base model (:data:`BASE`) and every decoder the project learnt, newest last."""
    choices = [("base model", BASE)]
    for record in project.decoders if project is not None else []:
        iou = f" (IoU {record['iou']:.2f})" if isinstance(record.get("iou"), float) else ""
        name = Path(record["folder"]).name
        choices.append((f"{name}{iou}{' + refiner' if record.get('refiner') else ''}", name))
    return choices
