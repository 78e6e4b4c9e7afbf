"""The dock's "Annotate a folder" mode: one :class:`~napari_clipseg.project.project.Project`, image by image.

Open (or create) a project from an image folder and the dock's prompts and model; every image is
pre-labelled in the background, then shown in the queue's order in two layers that are replaced
in place (never piled up): ``annotate: image`` and ``annotate: labels``. Moving on (Next, PageDown)
stores the labels on screen as verified (an untouched pre-label is accepted as it is); Previous
(PageUp) goes back; Skip leaves an image out. Storing and reading images happen in a worker
thread, so a click never waits for the disk. With "Learn as I go" (on by default) every verified
image starts a Learn in the background (a few seconds: warm-started, bounded in steps, kept only
when better), then the images not verified yet are re-predicted by the decoder alone, never the
one on screen, while the annotator keeps working; Learn does the same on request. Export writes
the verified set as training data, never over what it did not write. Every outcome (a Learn kept
or refused, an export, a warning at opening, an error) is said in this mode's own status box,
whole, at a fixed height, and as a napari notification.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, Container, Label, LineEdit, ProgressBar, PushButton, TextEdit

from .annotate_decoder import DecoderControls
from .annotate_export import ExportTrainingSet
from .annotate_learn import LearnAsYouGo
from .annotate_view import (
    LABELS_LAYER,
    AnnotateLayers,
    DiskSteps,
    ProjectStopper,
    View,
    counts_text,
    read_view,
)
from .dock_fit import fixed_text_box, show_text
from .dock_text import KEYS
from .job_control import JobControl, JobSlot
from .jobs import reported

if TYPE_CHECKING:
    import napari

    from ..project.project import Project
    from ..segmentation.model_spec import ModelSpec
    from ..segmentation.options import SegmentOptions
    from .dialogs import Dialogs


class AnnotatePanel(Container):
    """The "Annotate a folder" controls (see the module docstring).

    Args:
        viewer: The napari viewer.
        model: The dock's model spec (used when a project is created).
        prompts: The dock's prompts text (the classes of a new project).
        dialogs: The widget's modal questions.
        notify: ``(message, level)``: a napari notification (this mode's status box says it too).
        loader: ``loader(spec, stop)`` loads the project's model (the dock's, so both modes share one).
        slot: The dock's job slot (one job at a time in both modes).
        options: The dock's options for a folder's files (a new project is made with them).
        use_decoder: ``(folder, threshold)``: the Segment mode runs the project's decoder in use.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        model: Callable[[], ModelSpec],
        prompts: Callable[[], str],
        dialogs: Dialogs,
        notify: Callable[[str, str], None],
        loader: Callable[..., Any] | None = None,
        slot: JobSlot | None = None,
        options: Callable[[], SegmentOptions] | None = None,
        use_decoder: Callable[[str, Any], None] | None = None,
    ) -> None:
        super().__init__(labels=False)
        self._viewer, self._model, self._prompts, self._dialogs = viewer, model, prompts, dialogs
        self._notify, self._options, self._use_decoder = notify, options, use_decoder
        self._loader = loader
        self.project: Project | None = None
        self.current: str | None = None
        self._history: list[str] = []
        self._counted = 0.0
        self._disk = DiskSteps(lambda text: self._say(text, "error"), lambda: self._set_status("Saving…"))
        self._layers = AnnotateLayers(viewer)
        self._export = ExportTrainingSet(dialogs, lambda: self.native, self._disk, self._say)
        self.decoders = DecoderControls(
            lambda: self.project, lambda: self.current, self._layers, self._say, self._after_decoder_change
        )
        self._verified_text = ""
        self._create()
        stopper, buttons = ProjectStopper(lambda: self.project), (self.learn_btn, self.cancel_btn)
        self._jobs = JobControl(stopper, buttons, self.progress, self._say, self._set_status, lambda: "cpu", slot)
        self._learning = LearnAsYouGo(
            self._jobs, lambda: self.project, self._say, self._set_status, self._after_learn, self._renewed
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
        self.skip_btn = PushButton(text="Skip", tooltip=f"Leave this image out, not verified ({KEYS['skip']})")
        self.next_btn = PushButton(text="Next ▶", tooltip=f"Verify the labels on screen and go on ({KEYS['next']})")
        self.learn_btn = PushButton(
            text="Learn", tooltip=f"Learn from the verified images, re-predict the others ({KEYS['learn']})"
        )
        self.auto_learn = CheckBox(
            value=True,
            text="Learn as I go",
            tooltip="After every verified image, learn in the background and re-predict the images still waiting",
        )
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1, value=0)
        self.status = TextEdit(value="")
        self.export_btn = PushButton(text="Export training set…")
        paths = Container(labels=True, widgets=[self.images, self.folder])
        self.extend(
            [
                paths,
                row(widgets=[self.browse_images, self.browse_folder]),
                self.open_btn,
                self.counts,
                self.image_name,
                self.decoders.widgets,
                row(widgets=[self.previous_btn, self.skip_btn, self.next_btn]),
                row(widgets=[self.learn_btn, self.cancel_btn]),
                self.auto_learn,
                self.progress,
                self.status,
                self.export_btn,
            ]
        )
        for label in (self.counts, self.image_name):
            label.native.setWordWrap(True)
        fixed_text_box(self.status, lines=4)  # whole messages, and the Export button never moves
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
        self.auto_learn.changed.connect(self._set_auto_learn)
        self.export_btn.changed.connect(self.export)
        actions = {"next": self.next, "previous": self.previous, "skip": self.skip, "learn": self.learn}
        for name, action in {**actions, "labels": self._layers.toggle_labels}.items():
            self._viewer.bind_key(KEYS[name], lambda _viewer, action=action: action(), overwrite=True)
        self.native.destroyed.connect(self.close)

    @property
    def is_running(self) -> bool:
        return self._jobs.is_running

    # --- opening --------------------------------------------------------------------------------

    def open(self, _value: Any = None) -> None:
        """Open the project in the Project folder (created from Images and the dock's prompts if new),
        then pre-label what needs it in the background."""
        from ..errors import ProjectError
        from ..project.folder import MANIFEST_NAME
        from ..project.open import open_project

        if self._jobs.refuse_while_running():
            return
        images, folder = self.images.value.strip(), self.folder.value.strip()
        if not folder:
            self._say("Choose a project folder (and the images folder for a new project).", "warning")
            return
        self.close()
        try:
            new = not (Path(folder) / MANIFEST_NAME).is_file()
            options = self._options() if new and self._options is not None else None
            self.project = open_project(images or None, folder, self._prompts() or None, self._model(), options=options)
        except (ProjectError, OSError, ValueError) as e:
            self._say(str(e), "error")
            return
        self.project.auto_learn = 1 if self.auto_learn.value else 0
        for notice in self.project.notices[:3]:  # images that changed or went missing since the last session
            self._say(notice, "warning")
        self.project.model.loader = self._loader
        self._history, self.current = [], None
        self._enable_loop(True)
        self._after_learn()
        self.prelabel_in_background(then_show=True)

    def close(self, *_: Any) -> None:
        """Give the project folder back (another window may open it then)."""
        if self.project is not None:
            self.project.close()
            self.project = None

    def prelabel_in_background(self, then_show: bool = False) -> None:
        project = self.project
        job = reported(partial(project.iter_prelabel, exclude=[self.current] if self.current else []))
        self._jobs.start(
            job, lambda _report: self._prelabelled(then_show), "Cancelled: pre-labels made so far are kept."
        )
        self._show_counts()

    def _prelabelled(self, then_show: bool) -> None:
        self._show_counts()
        failed = self.project.failed() if self.project is not None else {}
        if failed:
            names = ", ".join(sorted(failed)[:3]) + (" …" if len(failed) > 3 else "")
            first = next(iter(failed.values()))
            self._say(f"{len(failed)} image(s) could not be pre-labelled ({names}): {first}", "warning")
        if then_show and self.current is None:
            self._disk.run(self._next_view, self._arrive)
        self._learning.if_due()

    # --- the loop -------------------------------------------------------------------------------

    def next(self, _value: Any = None) -> None:
        """Verify the labels on screen (as they are) and show the next image of the queue."""
        labels = self._labels_on_screen()
        if labels is None:
            return
        name = self.current
        self._disk.run(lambda: (self._verify(name, labels), self._next_view())[1], self._arrive)

    def previous(self, _value: Any = None) -> None:
        """Verify what is on screen, then show the image before it (its verified labels if it has them)."""
        if len(self._history) < 2:
            return
        labels = self._labels_on_screen()
        if labels is None:
            return
        name, back = self.current, self._history[-2]

        def step() -> Any:
            self._verify(name, labels)
            self.project.on_screen = back
            return read_view(self.project, back)

        self._disk.run(step, partial(self._arrive, back_in_history=True))

    def skip(self, _value: Any = None) -> None:
        if self.project is None or self.current is None or self._disk.busy:
            return
        name = self.current

        def step() -> Any:
            self.project.skip(name)
            return self._next_view()

        self._disk.run(step, self._arrive)

    def _labels_on_screen(self) -> np.ndarray | None:
        """A copy of the labels on screen (None, said, when there is nothing to verify or a step runs)."""
        if self.project is None or self.current is None or self._disk.busy:
            return None
        layer = self._layer(LABELS_LAYER)
        if layer is None:
            self._say("The labels layer of this image was removed: nothing to verify.", "warning")
            return None
        return np.array(layer.data, copy=True)

    def _verify(self, name: str, labels: np.ndarray) -> None:
        """Store ``labels`` as verified (worker thread; a refusal is said as an error)."""
        changed = self.project.verify(name, labels)
        self._verified_text = f"Verified {name} ({changed} pixels changed)."

    def _store_current(self) -> bool:
        """Verify what is on screen now, here (before a Learn on request)."""
        from ..errors import ProjectError

        labels = self._labels_on_screen()
        if labels is None:
            return False
        try:
            self._verify(self.current, labels)
        except (ProjectError, OSError) as e:
            self._say(str(e), "error")
            return False
        self._set_status(self._verified_text)
        return True

    def _next_view(self) -> View | None:
        """The next image of the queue, read after it is marked on screen (no re-prediction replaces it then)."""
        name = self.project.top(self.current)
        self.project.on_screen = name
        return read_view(self.project, name)

    def _arrive(self, view: View | None, back_in_history: bool = False) -> None:
        """Show what :func:`read_view` read (main thread); then a Learn, when one is due."""
        self._set_status(self._verified_text or "Ready.")  # never a stale "Saving…"
        self._verified_text = ""
        if back_in_history and self._history:
            self._history.pop()
            if self._history:
                self._history.pop()
        self._show_view(view)
        self._learning.if_due()

    def _show_view(self, view: View | None) -> None:
        self.current = view.name if view is not None else None
        if self.project is not None:
            self.project.on_screen = self.current
        self._show_counts()
        if view is None:
            waiting = self.project.status()["new"] if self.project else 0
            text = "Waiting for pre-labels…" if waiting and self.is_running else "Every image is verified or skipped."
            show_text(self.image_name, text)
            return
        self._history.append(view.name)
        self._layers.show(view, self.project.folder.root)
        shown = "" if view.verified else f", score {view.score:.3f}"
        show_text(self.image_name, f"{view.name} ({'verified' if view.verified else 'pre-labelled'}{shown})")

    def _after_learn(self) -> None:
        """The counts, and the Segment mode on the project's decoder in use (one model, one decoder)."""
        self._show_counts()
        self.decoders.show(self.project)
        if self.project is not None and self._use_decoder is not None:
            self._use_decoder(self.project.current_spec().decoder or "", self.project.threshold)

    def _after_decoder_change(self) -> None:
        self._after_learn()
        self.prelabel_in_background()

    def _renewed(self, snapshot: Any) -> None:
        """After a kept Learn: the new pre-label of the image on screen replaces labels nobody touched."""
        if self.project is not None and snapshot.name == self.current and self._layers.untouched():
            self._layers.replace_labels(self.project.show(snapshot))

    def _layer(self, name: str) -> Any:
        return self._layers.layer(name)

    # --- learning and export --------------------------------------------------------------------

    def learn(self, _value: Any = None) -> None:
        """Learn from the verified images in the background, then re-predict the others."""
        if self.project is None or self._jobs.refuse_while_running():
            return
        if self.current is not None and self.project.state(self.current) != "verified" and not self._store_current():
            return
        self._learning.start()

    def _set_auto_learn(self, on: bool) -> None:
        if self.project is not None:
            self.project.auto_learn = 1 if on else 0
            self._learning.if_due()

    def export(self, _value: Any = None) -> None:
        if self.project is not None:
            self._export.run(self.project)

    def cancel(self, _value: Any = None) -> None:
        self._jobs.cancel()

    # --- small helpers --------------------------------------------------------------------------

    def _show_counts(self) -> None:
        self._counted = time.monotonic()
        show_text(self.counts, counts_text(self.project, self.is_running))

    def _say(self, message: str, level: str = "info") -> None:
        """``message`` in this mode's status box and as a napari notification."""
        self._set_status(message)
        self._notify(message, level)

    def _set_status(self, text: str) -> None:
        """The status box (whole, scrolling beyond its fixed height); the counts follow at most once a second."""
        self.status.value, self.status.tooltip = text, text
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
