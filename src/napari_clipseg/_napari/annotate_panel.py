"""The dock's "Annotate a folder" mode: one :class:`~napari_clipseg.project.project.Project`, image by image.

Open (or create) a project from an image folder and the dock's prompts and model; every image is
pre-labelled in the background, then shown in the queue's order in two layers that are replaced
in place (never piled up): ``annotate: image`` and ``annotate: labels``. Moving on (Next, PageDown)
stores the labels on screen as verified (an untouched pre-label is accepted as it is); Previous
(PageUp) goes back; Skip leaves an image out. Learn fine-tunes the decoder on the verified images
in the background, then re-predicts the images not verified yet, never the one on screen, while
the annotator keeps working. Export writes the verified set as training data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container, Label, LineEdit, ProgressBar, PushButton

from .dock_text import DOCK_WIDTH
from .job_control import JobControl
from .jobs import JobError

if TYPE_CHECKING:
    import napari

    from ..project.project import Project
    from ..segmentation.model_spec import ModelSpec
    from .dialogs import Dialogs

IMAGE_LAYER, LABELS_LAYER = "annotate: image", "annotate: labels"
KEYS = {"next": "PageDown", "previous": "PageUp"}


def _show_text(label: Label, text: str) -> None:
    """Set a wrapped label with all the lines it needs (a scrolling dock does not stretch it by itself)."""
    label.value, label.tooltip = text, text
    native = label.native
    native.setMinimumHeight(native.heightForWidth(max(native.width(), DOCK_WIDTH - 20)))


def _reported(job: Callable[[], Any]) -> Callable[[], Any]:
    """``job`` whose failures leave the worker as a :class:`JobError` (superqt only warns about a
    RuntimeError, such as a refused training, and the job would never finish)."""

    def run() -> Any:
        try:
            return (yield from job())
        except Exception as e:
            raise JobError(str(e)) from e

    return run


class _Stopper:
    """What JobControl asks to stop: the project's running pre-labelling or learning."""

    def __init__(self, panel: AnnotatePanel) -> None:
        self._panel = panel

    def request_stop(self) -> None:
        if self._panel.project is not None:
            self._panel.project.stop.set()


class AnnotatePanel(Container):
    """The "Annotate a folder" controls (see the module docstring).

    Args:
        viewer: The napari viewer.
        model: The dock's model spec (used when a project is created).
        prompts: The dock's prompts text (the classes of a new project).
        dialogs: The widget's modal questions.
        say: ``(message, level)``: the dock's status and napari notifications.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        model: Callable[[], ModelSpec],
        prompts: Callable[[], str],
        dialogs: Dialogs,
        say: Callable[[str, str], None],
    ) -> None:
        super().__init__(labels=False)
        self._viewer, self._model, self._prompts, self._dialogs, self._say = viewer, model, prompts, dialogs, say
        self.project: Project | None = None
        self.current: str | None = None
        self._history: list[str] = []
        self._counted = 0.0
        self._create()
        self._jobs = JobControl(
            _Stopper(self), (self.learn_btn, self.cancel_btn), self.progress, say, self._set_status, lambda: "cpu"
        )
        self._connect()

    def _create(self) -> None:
        row = partial(Container, layout="horizontal", labels=False)
        self.images = LineEdit(label="Images", tooltip="The folder of images to annotate (files and subfolders)")
        self.folder = LineEdit(label="Project", tooltip="Where the project keeps its state (created if new)")
        self.browse_images, self.browse_folder = PushButton(text="Images…"), PushButton(text="Project…")
        self.open_btn = PushButton(text="Open project")
        self.counts = Label(value="No project open.")
        self.image_name = Label(value="")
        self.previous_btn = PushButton(text="◀", tooltip=f"Previous image ({KEYS['previous']})")
        self.skip_btn = PushButton(text="Skip", tooltip="Leave this image out (it is not verified)")
        self.next_btn = PushButton(text="Next ▶", tooltip=f"Verify the labels on screen and go on ({KEYS['next']})")
        self.learn_btn = PushButton(text="Learn", tooltip="Fine-tune on the verified images, re-predict the others")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1, value=0)
        self.status = Label(value="")
        self.export_btn = PushButton(text="Export training set…")
        paths = Container(labels=True, widgets=[self.images, self.folder])
        self.extend(
            [
                paths,
                row(widgets=[self.browse_images, self.browse_folder]),
                self.open_btn,
                self.counts,
                self.image_name,
                row(widgets=[self.previous_btn, self.skip_btn, self.next_btn]),
                row(widgets=[self.learn_btn, self.cancel_btn]),
                self.progress,
                self.status,
                self.export_btn,
            ]
        )
        for label in (self.counts, self.image_name, self.status):
            label.native.setWordWrap(True)
        for part in [self, *self]:  # compact, like the rest of the dock
            if isinstance(part, Container):
                part.margins = (0, 0, 0, 0)
        self._enable_loop(False)

    def _connect(self) -> None:
        self.browse_images.changed.connect(partial(self._browse, self.images, "Images to annotate"))
        self.browse_folder.changed.connect(partial(self._browse, self.folder, "Project folder"))
        self.images.changed.connect(self._suggest_folder)
        self.open_btn.changed.connect(self.open)
        self.next_btn.changed.connect(self.next)
        self.previous_btn.changed.connect(self.previous)
        self.skip_btn.changed.connect(self.skip)
        self.learn_btn.changed.connect(self.learn)
        self.cancel_btn.changed.connect(self.cancel)
        self.export_btn.changed.connect(self.export)
        self._viewer.bind_key(KEYS["next"], lambda _viewer: self.next(), overwrite=True)
        self._viewer.bind_key(KEYS["previous"], lambda _viewer: self.previous(), overwrite=True)
        self.native.destroyed.connect(self.close)

    @property
    def is_running(self) -> bool:
        return self._jobs.is_running

    # --- opening --------------------------------------------------------------------------------

    def open(self, _value: Any = None) -> None:
        """Open the project in the Project folder (created from Images and the dock's prompts if new),
        then pre-label what needs it in the background."""
        from ..errors import ProjectError
        from ..project.open import open_project

        if self._jobs.refuse_while_running():
            return
        images, folder = self.images.value.strip(), self.folder.value.strip()
        if not folder:
            self._say("Choose a project folder (and the images folder for a new project).", "warning")
            return
        self.close()
        try:
            self.project = open_project(images or None, folder, self._prompts() or None, self._model())
        except (ProjectError, OSError, ValueError) as e:
            self._say(str(e), "error")
            return
        self._history, self.current = [], None
        self._enable_loop(True)
        self.prelabel_in_background(then_show=True)

    def close(self, *_: Any) -> None:
        """Give the project folder back (another window may open it then)."""
        if self.project is not None:
            self.project.close()
            self.project = None

    def prelabel_in_background(self, then_show: bool = False) -> None:
        project = self.project
        job = partial(project.iter_prelabel, exclude=[self.current] if self.current else [])
        self._jobs.start(
            job, lambda _report: self._prelabelled(then_show), "Cancelled: pre-labels made so far are kept."
        )
        self._show_counts()

    def _prelabelled(self, then_show: bool) -> None:
        self._show_counts()
        if then_show and self.current is None:
            self._go_to(self._next_name())

    # --- the loop -------------------------------------------------------------------------------

    def next(self, _value: Any = None) -> None:
        """Verify the labels on screen (as they are) and show the next image of the queue."""
        if self.project is None or self.current is None:
            return
        if not self._store_current():
            return
        self._go_to(self._next_name())

    def previous(self, _value: Any = None) -> None:
        """Verify what is on screen, then show the image before it (its verified labels if it has them)."""
        if self.project is None or len(self._history) < 2:
            return
        if not self._store_current():
            return
        self._history.pop()
        self._go_to(self._history.pop())

    def skip(self, _value: Any = None) -> None:
        if self.project is None or self.current is None:
            return
        self.project.skip(self.current)
        self._go_to(self._next_name())

    def _store_current(self) -> bool:
        from ..errors import ProjectError

        layer = self._layer(LABELS_LAYER)
        if layer is None:
            self._say("The labels layer of this image was removed: nothing to verify.", "warning")
            return False
        try:
            changed = self.project.verify(self.current, np.asarray(layer.data))
        except (ProjectError, OSError) as e:
            self._say(str(e), "error")
            return False
        self._set_status(f"Verified {self.current} ({changed} pixels changed).")
        return True

    def _next_name(self) -> str | None:
        return next((name for name, _ in self.project.queue() if name != self.current), None)

    def _go_to(self, name: str | None) -> None:
        self.current = name
        self._show_counts()
        if name is None:
            waiting = self.project.status()["new"] if self.project else 0
            text = "Waiting for pre-labels…" if waiting and self.is_running else "Every image is verified or skipped."
            _show_text(self.image_name, text)
            return
        self._history.append(name)
        self._show(name)

    def _show(self, name: str) -> None:
        from ..io.inputs import open_image

        project = self.project
        image = np.asarray(open_image(project.item(name).path).data)
        verified = project.state(name) == "verified"
        labels = project.verified_labels(name) if verified else project.prelabels(name)
        self._put(IMAGE_LAYER, image, "image", rgb=image.ndim == labels.ndim + 1 and image.shape[-1] in (3, 4))
        layer = self._put(LABELS_LAYER, labels.astype(np.uint8), "labels")
        layer.metadata["clipseg-project"] = {"folder": str(project.folder.root), "name": name}
        self._viewer.layers.selection.active = layer
        layer.mode = "paint"
        layer.selected_label = 1
        score = "" if verified else f", score {project.score(name):.3f}"
        _show_text(self.image_name, f"{name} ({'verified' if verified else 'pre-labelled'}{score})")

    def _layer(self, name: str) -> Any:
        return next((layer for layer in self._viewer.layers if layer.name == name), None)

    def _put(self, name: str, data: np.ndarray, kind: str, rgb: bool = False) -> Any:
        """Show ``data`` in the layer ``name``, replacing its data in place (a new layer only once)."""
        layer = self._layer(name)
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

    # --- learning and export --------------------------------------------------------------------

    def learn(self, _value: Any = None) -> None:
        """Learn from the verified images in the background, then re-predict the others."""
        if self.project is None or self._jobs.refuse_while_running():
            return
        if self.current is not None and not self._store_current():
            return
        self._jobs.start(_reported(self.project.iter_learn), self._learnt, "Cancelled: the decoder stays as it was.")

    def _learnt(self, result: Any) -> None:
        self._say(
            f"Learnt from {len(result.training) + len(result.held_out)} images: held-out IoU "
            f"{result.base_iou:.2f} -> {result.iou:.2f}, threshold {result.threshold:.2f}. Re-predicting the others…",
            "info",
        )
        self.prelabel_in_background()

    def export(self, _value: Any = None) -> None:
        if self.project is None:
            return
        start = str(self.project.folder.root.parent)
        out = self._dialogs.choose_folder(self.native, "Export the verified images to (a new folder)", start)
        if not out:
            return
        overwrite = Path(out).exists() and any(Path(out).iterdir())
        if overwrite and not self._dialogs.confirm(self.native, f"Replace everything in {out}?"):
            return
        try:
            written = self.project.export(out, coco=True, instances=True, overwrite=overwrite)
        except (OSError, ValueError) as e:
            self._say(str(e), "error")
            return
        self._say(f"Exported {self.project.status()['verified']} verified images to {written}.", "info")

    def cancel(self, _value: Any = None) -> None:
        self._jobs.cancel()

    # --- small helpers --------------------------------------------------------------------------

    def _show_counts(self) -> None:
        self._counted = time.monotonic()
        if self.project is None:
            _show_text(self.counts, "No project open.")
            return
        counts, total = self.project.status(), len(self.project.names)
        text = f"Verified {counts['verified']} of {total}"
        if counts["new"] and self.is_running:
            text += f", {counts['new']} being pre-labelled"
        if counts["skipped"]:
            text += f", {counts['skipped']} skipped"
        _show_text(self.counts, text + ".")

    def _set_status(self, text: str) -> None:
        """The status line; the counts follow at most once a second (they read the project folder)."""
        _show_text(self.status, text)
        if time.monotonic() - self._counted >= 1.0:
            self._show_counts()

    def _enable_loop(self, enabled: bool) -> None:
        for button in (self.previous_btn, self.skip_btn, self.next_btn, self.learn_btn, self.export_btn):
            button.enabled = enabled

    def _browse(self, field: LineEdit, title: str, _value: Any = None) -> None:
        chosen = self._dialogs.choose_folder(self.native, title, field.value or str(Path.home()))
        if chosen:
            field.value = chosen

    def _suggest_folder(self, images: str) -> None:
        if images.strip() and not self.folder.value.strip():
            path = Path(images.strip())
            self.folder.value = str(path.parent / f"{path.name}-clipseg-project")
