"""Exporting a project's verified images from the Annotate mode, never over what it did not write.

The annotator picks a folder in a folder dialog (which returns only folders that exist): the set
is written into it when it is new or empty, into a new ``<project>-training-set`` inside it when it
holds other files (:func:`~napari_clipseg.project.export.choose_export_folder`), and an earlier
export of this project is replaced only after asking. The writing runs in a worker thread; every
outcome is said.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..project.project import Project
    from .annotate_view import DiskSteps
    from .dialogs import Dialogs

TITLE = "Export the verified images to (a new training set is made inside a folder with other files)"


class ExportTrainingSet:
    """The Annotate mode's Export (see the module docstring).

    Args:
        dialogs: The widget's modal questions (a folder, "replace?").
        parent: The Qt widget the dialogs belong to.
        disk: Runs the writing in a worker thread (one disk step at a time).
        say: ``(message, level)``: the Annotate mode's status box and a notification.
    """

    def __init__(
        self, dialogs: Dialogs, parent: Callable[[], Any], disk: DiskSteps, say: Callable[[str, str], None]
    ) -> None:
        self._dialogs, self._parent, self._disk, self._say = dialogs, parent, disk, say

    def run(self, project: Project) -> None:
        from ..project.export import choose_export_folder

        if self._disk.busy:
            return
        chosen = self._dialogs.choose_folder(self._parent(), TITLE, str(project.folder.root.parent))
        if not chosen:
            return
        try:
            out, earlier = choose_export_folder(project, chosen)
        except (OSError, ValueError) as e:
            self._say(f"Export failed: {e}", "error")
            return
        verified = project.status()["verified"]
        question = f"{out} holds an earlier export of this project. Replace it with the {verified} verified images?"
        if earlier and not self._dialogs.confirm(self._parent(), question):
            self._say("Export cancelled: nothing was changed.", "info")
            return
        self._disk.run(
            lambda: project.export(out, coco=True, instances=True, overwrite=earlier),
            lambda written: self._say(
                f"Exported {verified} verified images to {written} (a folder per image, and coco.json).", "info"
            ),
            failed="Export failed: ",
        )
