"""The images under a project: each one's content pinned, so labels are never paired with other pixels.

A project pairs an annotator's labels with the pixels they were drawn on, but the images are the
user's files: they may be rewritten, replaced, renamed, moved or removed while the project lives.
Each image's entry keeps a :class:`~.pins.Pin` (the file's size and modification time, and a digest of
its bytes) taken when its first pre-label is taken in, and the path relative to the project
folder. :func:`~.pins.compare` tells, with one ``stat`` in the common case, whether the file still
holds those bytes. :class:`Sources` acts on what it finds, through the state's transactions.

What each case does (docs/annotation-loop.md, "Images that change under a project"):

- **changed, pre-labelled**: its pre-label (the project's own output) is removed; it is
  pre-labelled again and queued by its new score.
- **changed, verified**: its verified labels are moved, whole, to ``outdated/<name>.<time>/``
  (never deleted), and it is pre-labelled again: the annotator reviews it anew.
- **changed, new or skipped**: the new content is pinned; nothing was paired with the old pixels.
- **missing** (removed, renamed, its folder moved): its state and labels stay; it is left out of
  the queue, learning and export, and named. It is found again by content: at its path relative
  to the project (project and images moved together), or when the images are given again
  (a moved folder, a renamed file); or it is dropped (:meth:`Sources.drop`).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from .pins import Pin, compare, pin, relative_to
from .state import ImageEntry, ProjectState

logger = logging.getLogger(__name__)


class Sources:
    """The image files under a project's state: checked, followed, dropped (module docstring).

    Attributes:
        notices: What was found about images that changed, moved or went missing, in words.
    """

    def __init__(self, state: ProjectState) -> None:
        self.state = state
        self.notices: list[str] = []

    def check_all(self) -> list[str]:
        """Every image against its pin (at open); returns what was done, in words (each also
        logged as a warning and kept in :attr:`notices`)."""
        said = []
        with self.state.held():
            for entry in self.state.entries():
                notice = self.settle(entry)
                if notice:
                    logger.warning("%s", notice)
                    said.append(notice)
        self.notices += said
        return said

    def still_there(self, name: str) -> bool:
        """Whether the file of ``name`` still holds the pixels its labels were made on (one
        ``stat``); if not, it is settled now, said in :attr:`notices`, and False."""
        with self.state.lock:
            entry = self.state.entry(name)
            compared = compare(entry.path, entry.source) if entry.source is not None else None
            if compared is None or compared[0] == "same":
                return True
            self.notices.append(self.settle(entry, compared) or f"{name} changed on disk")
        return False

    def settle(self, entry: ImageEntry, compared: tuple[str, Pin] | None = None) -> str | None:
        """Check one image against its pin and act; returns what was done, in words, when it is
        worth saying. ``compared``: :func:`~.pins.compare`'s answer when the caller has it. A
        read-only state changes no file: a changed image is only left out of the loop there."""
        state, root = self.state, self.state.folder.root
        if not Path(entry.path).exists():
            moved = self._found_beside(entry)
            if moved is None:
                state.settle_source(entry.name, missing=True)
                return (
                    f"{entry.name}: its image {entry.path} is gone (moved, renamed or removed); it waits, left out "
                    "of the queue, learning and export: give its folder again (images=..., --images), or drop it"
                )
            entry = entry.replace(path=str(moved), relative=None)
        if entry.source is None:  # a manifest rebuilt (its verified record has the pin), or made before pins
            recorded = self._verified_pin(entry.name) if entry.state == "verified" else None
            if recorded is None:  # made before pins: its content now is its content
                source = pin(entry.path) if entry.state in ("pre-labelled", "verified") else None
                state.settle_source(entry.name, path=entry.path, source=source, missing=False)
                return None
            entry = entry.replace(source=recorded)
        relative = entry.relative or relative_to(entry.path, root)
        status, now = compared or compare(entry.path, entry.source)
        if status == "same":
            state.settle_source(entry.name, path=entry.path, source=now, relative=relative, missing=False)
            return None
        if state.read_only:
            state.settle_source(entry.name, missing=True)
            return (
                f"{entry.name}: its image {entry.path} holds other pixels than when it was labelled; "
                "open it for writing to re-queue it"
            )
        state.settle_source(entry.name, path=entry.path)
        return self._rewritten(entry, now, relative)

    def drop(self, name: str) -> None:
        """Take ``name`` out for good: its pre-label removed, its verified labels (if any) kept in
        ``outdated/``, never added again when its folder is searched anew."""
        folder = self.state.folder
        with self.state.lock:
            self.state.entry(name)  # a KeyError naming the images when there is no such image
            if (folder.verified / name).exists():
                folder.put_aside(folder.verified / name, name, f"{name} was dropped from the project")
            shutil.rmtree(folder.prelabels / name, ignore_errors=True)
            self.state.drop(name)

    def _rewritten(self, entry: ImageEntry, now: Pin, relative: str | None) -> str | None:
        """An image whose file holds other bytes: its pre-label removed, its verified labels put
        aside (kept), and back to new; returns what was done, in words."""
        folder, said = self.state.folder, None
        if entry.state == "verified":
            why = (
                f"{entry.name}: its image {entry.path} was rewritten with other pixels after these labels were verified"
            )
            aside = folder.put_aside(folder.verified / entry.name, entry.name, why)
            said = f"{entry.name} changed on disk after it was verified: labels kept in {aside}; it is labelled anew"
        elif entry.state == "pre-labelled":
            said = f"{entry.name} changed on disk: it is pre-labelled again"
        shutil.rmtree(folder.prelabels / entry.name, ignore_errors=True)
        self.state.requeue(entry.name, now, relative)
        return said

    def _found_beside(self, entry: ImageEntry) -> Path | None:
        """The image at its path relative to the project folder, when it holds the pinned bytes
        (the project and its images moved together)."""
        if entry.relative is None or entry.source is None:
            return None
        candidate = self.state.folder.root / entry.relative
        if candidate.exists() and compare(candidate, entry.source)[0] == "same":
            return Path(os.path.abspath(candidate))
        return None

    def _verified_pin(self, name: str) -> Pin | None:
        """The pin the verified record of ``name`` keeps (``image.source``); None for older records."""
        from ..io.outputs import output_record

        try:
            record = output_record(self.state.folder.verified / name) or {}
        except Exception:  # noqa: BLE001 - a damaged record is the state's to say
            return None
        return Pin.from_dict((record.get("image") or {}).get("source"))
