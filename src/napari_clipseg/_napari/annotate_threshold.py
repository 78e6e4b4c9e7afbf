"""The Annotate mode's threshold: the decoder in use's, set by the annotator.

Moving the slider (on release) sets the threshold of the decoder in use in the project
(:meth:`~napari_clipseg.project.project.Project.set_threshold`): the waiting pre-labels are shown,
scored and recorded at it from then on, and the labels on screen follow at once when nobody has
touched them. A decoder with a pixel refiner keeps 0.5 (its maps are calibrated) and a project
with one threshold per class keeps its own: the slider says so and is disabled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import FloatSlider

from .dock_text import threshold_label

if TYPE_CHECKING:
    from ..project.project import Project
    from .annotate_view import AnnotateLayers


class ThresholdControl:
    """The slider and what it does (see the module docstring).

    Args:
        project: The open project (None: none).
        current: The image on screen (None: none).
        layers: The Annotate mode's layers (the labels on screen, untouched or not).
        say: ``(message, level)``: the Annotate mode's status box and a notification.
    """

    def __init__(
        self,
        project: Callable[[], Project | None],
        current: Callable[[], str | None],
        layers: AnnotateLayers,
        say: Callable[[str, str], None],
    ) -> None:
        self._project, self._current, self._layers, self._say = project, current, layers, say
        self.slider = FloatSlider(
            label=threshold_label(0.4), min=0.01, max=0.99, step=0.01, readout=False, tracking=False, enabled=False
        )
        self._showing = False
        self.slider.changed.connect(self._set)

    def show(self, project: Project | None) -> None:
        """The threshold of ``project``'s decoder in use (disabled where it cannot change)."""
        threshold = project.threshold if project is not None else None
        fixed = _refined(project) or not isinstance(threshold, float)
        self._showing = True
        try:
            if isinstance(threshold, float):
                self.slider.value = threshold
                self.slider.label = threshold_label(threshold)
        finally:
            self._showing = False
        self.slider.enabled = project is not None and not fixed
        self.slider.tooltip = (
            "The decoder in use has a pixel refiner: its maps are calibrated (0.5)"
            if _refined(project)
            else "One threshold per class: set with the Python API"
            if project is not None and fixed
            else "The threshold of the decoder in use: the pre-labels follow (on release)"
        )

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


def _refined(project: Project | None) -> bool:
    """Whether the decoder in use keeps a pixel refiner."""
    if project is None or project.decoder is None:
        return False
    return any(Path(d["folder"]).name == project.decoder.name and d.get("refiner") for d in project.decoders)
