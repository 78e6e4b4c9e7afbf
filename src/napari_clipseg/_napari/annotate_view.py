"""What the Annotate mode shows, and the disk work behind a click, kept off the main thread.

:func:`read_view` reads what showing an image needs (the image, its pre-labels or verified
labels, its score) in a worker thread; :class:`AnnotateLayers` puts it into the two layers on the
main thread, replacing their data in place; :class:`DiskSteps` runs one such step at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .job_control import SYNC
from .layers import checksum

if TYPE_CHECKING:
    import napari

    from ..project.project import Project

IMAGE_LAYER, LABELS_LAYER = "annotate: image", "annotate: labels"


@dataclass(frozen=True)
class View:
    """One image as the Annotate mode shows it."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    verified: bool
    score: float | None


def counts_text(project: Project | None, running: bool) -> str:
    """The counts line: verified of all, and what is being pre-labelled, skipped, gone or failed."""
    if project is None:
        return "No project open."
    counts, total = project.status(), len(project.names)
    text = f"Verified {counts['verified']} of {total}"
    if counts["new"] and running:
        text += f", {counts['new']} being pre-labelled"
    if counts["skipped"]:
        text += f", {counts['skipped']} skipped"
    missing = project.missing()
    if missing:
        text += f", {len(missing)} gone ({', '.join(missing[:2])}{' …' if len(missing) > 2 else ''})"
    failed = project.failed()
    if failed:
        text += f", {len(failed)} failed ({', '.join(sorted(failed)[:2])}{' …' if len(failed) > 2 else ''})"
    return text + "."


def read_view(project: Project, name: str | None) -> View | None:
    """What showing ``name`` needs, read from the folder (a worker thread)."""
    from ..io.inputs import open_image

    if name is None:
        return None
    image = np.asarray(open_image(project.item(name).path).data)
    verified = project.state(name) == "verified"
    labels = project.verified_labels(name) if verified else project.prelabels(name)
    return View(name, image, labels, verified, None if verified else project.score(name))


class AnnotateLayers:
    """The two layers of the Annotate mode, replaced in place (a new layer only once); they know
    whether the annotator has touched the labels shown (:func:`~.layers.checksum`, as the Segment mode keeps)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self._shown_sum: str | None = None

    def untouched(self) -> bool:
        """Whether the labels on screen are still those shown (not painted, not replaced)."""
        layer = self.layer(LABELS_LAYER)
        return layer is not None and self._shown_sum == checksum(layer.data, [()])

    def toggle_labels(self) -> None:
        """Hide or show the labels on screen (to look at the image under them)."""
        layer = self.layer(LABELS_LAYER)
        if layer is not None:
            layer.visible = not layer.visible

    def replace_labels(self, labels: np.ndarray) -> None:
        """New labels for the image on screen, in place (the layer, its mode and selection stay)."""
        layer = self.layer(LABELS_LAYER)
        layer.data = labels.astype(np.uint8)
        self._shown_sum = checksum(layer.data, [()])

    def layer(self, name: str) -> Any:
        return next((layer for layer in self._viewer.layers if layer.name == name), None)

    def show(self, view: View, project_folder: Path) -> None:
        old = self.layer(IMAGE_LAYER)
        reshaped = old is not None and tuple(old.data.shape) != tuple(view.image.shape)
        rgb = view.image.ndim == view.labels.ndim + 1 and view.image.shape[-1] in (3, 4)
        self._put(IMAGE_LAYER, view.image, "image", rgb=rgb)
        layer = self._put(LABELS_LAYER, view.labels.astype(np.uint8), "labels")
        self._shown_sum = checksum(layer.data, [()])
        layer.metadata["clipseg-project"] = {"folder": str(project_folder), "name": view.name}
        self._viewer.layers.selection.active = layer
        layer.mode = "paint"
        layer.selected_label = 1
        if reshaped:
            self._viewer.reset_view()  # another shape: the whole image on screen

    def _put(self, name: str, data: np.ndarray, kind: str, rgb: bool = False) -> Any:
        layer = self.layer(name)
        if layer is not None and (kind == "labels" or layer.rgb == rgb):
            layer.data = data
            if kind == "image":
                layer.reset_contrast_limits()
            return layer
        if layer is not None:
            self._viewer.layers.remove(layer)  # an RGB image after a grey one: a new image layer
        if kind == "labels":
            return self._viewer.add_labels(data, name=name)
        return self._viewer.add_image(data, name=name, rgb=rgb)


class DiskSteps:
    """Runs one step of disk work (verify, read the next image) at a time in a worker thread.

    Args:
        error: Says a step's failure (its message).
        started: Called when a step starts (the status line).
    """

    def __init__(self, error: Callable[[str], None], started: Callable[[], None]) -> None:
        self._error, self._started = error, started
        self._worker: Any = None

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def run(self, step: Callable[[], Any], done: Callable[[Any], None], failed: str = "") -> None:
        """``step()`` in a worker thread, then ``done(result)`` on the main thread (ignored while
        busy); a failure is said after ``failed``."""
        from ..errors import ProjectError

        if self._worker is not None:
            return
        if SYNC:
            try:
                result = step()
            except (ProjectError, OSError, ValueError) as e:
                self._error(f"{failed}{e}")
                return
            done(result)
            return
        from napari.qt.threading import create_worker

        worker = create_worker(step, _ignore_errors=True)
        # free before its result is shown: a click on what it shows (Next) is never dropped
        worker.returned.connect(lambda result: (self._finished(worker), done(result)))
        worker.errored.connect(lambda e: (self._finished(worker), self._error(f"{failed}{e}")))
        worker.finished.connect(lambda: self._finished(worker))
        self._worker = worker
        self._started()
        worker.start()

    def _finished(self, worker: Any) -> None:
        if self._worker is worker:  # not a step started since
            self._worker = None


class ProjectStopper:
    """What JobControl asks to stop: the open project's running pre-labelling or learning."""

    def __init__(self, project: Callable[[], Project | None]) -> None:
        self._project = project

    def request_stop(self) -> None:
        project = self._project()
        if project is not None:
            project.stop.set()
