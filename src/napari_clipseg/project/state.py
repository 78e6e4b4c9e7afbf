"""A project's state in memory: the manifest's fields and one frozen entry per image.

The folder is the truth (:mod:`.folder`); this is its index, so that no click reads every record.
:func:`load_state` builds it once, at open, from ``project.json`` and the folder: an image is
*verified* when ``verified/<name>/`` holds its record, *pre-labelled* when ``prelabels/<name>/``
does, *skipped* when the manifest says so, *new* otherwise. What the manifest remembers about a
pre-label (generation, the decoder that made it, its review score) is trusted only while the
record's modification time is the one it saw; a record written since (by a process that was
killed before it saved the manifest) is read again. After that, only the writes that change the
state change it: :meth:`ProjectState.put` replaces one entry and keeps the counts, so
``status()``, ``queue()`` and ``next()`` cost a pass over entries in memory, never a file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.records import RECORD_NAME
from .folder import STATES, ProjectFolder
from .sources import Pin, pin, relative_to

logger = logging.getLogger(__name__)

Threshold = float | tuple[float, ...]


@dataclass(frozen=True)
class ImageEntry:
    """One image of a project.

    Attributes:
        name: Its name in the project (its output folders are named so).
        path: The image file (or zarr folder).
        state: One of :data:`~.folder.STATES`.
        skipped: Left out by the annotator (until it is verified).
        generation: How many pre-labels were made for it in this project (0: none yet); a
            re-prediction makes a new generation.
        decoder: The name of the project decoder that made its current pre-label (None: the base's).
        score: Its review score (:mod:`.score`) at ``score_threshold``; None when not scored yet.
        score_threshold: The threshold the score was computed at.
        stamp: Modification time (ns) of the pre-label's record when the entry was made.
        changed: Pixels the annotator changed (verified images).
        source: What the image file held when its first pre-label was taken in (:mod:`.sources`).
        relative: Its path relative to the project folder (found there when both moved together).
        missing: Its file is gone (this session): left out of the queue, learning and export.
    """

    name: str
    path: str
    state: str = "new"
    skipped: bool = False
    generation: int = 0
    decoder: str | None = None
    score: float | None = None
    score_threshold: Threshold | None = None
    stamp: int | None = None
    changed: int | None = None
    source: Pin | None = None
    relative: str | None = None
    missing: bool = False

    def replace(self, **changes: Any) -> ImageEntry:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """What ``project.json`` keeps of it (the state itself is read from the folder)."""
        out = {"name": self.name, "path": self.path}
        optional = {
            "skipped": self.skipped or None,
            "generation": self.generation or None,
            "decoder": self.decoder,
            "score": self.score,
            "score_threshold": list(self.score_threshold)
            if isinstance(self.score_threshold, tuple)
            else self.score_threshold,
            "stamp": self.stamp,
            "source": self.source.to_dict() if self.source is not None else None,
            "relative": self.relative,
        }
        return {**out, **{k: v for k, v in optional.items() if v is not None}}

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> ImageEntry:
        threshold = entry.get("score_threshold")
        return cls(
            name=str(entry["name"]),
            path=str(entry["path"]),
            skipped=bool(entry.get("skipped", False)),
            generation=int(entry.get("generation") or 0),
            decoder=entry.get("decoder"),
            score=float(entry["score"]) if entry.get("score") is not None else None,
            score_threshold=tuple(threshold) if isinstance(threshold, list) else threshold,
            stamp=int(entry["stamp"]) if entry.get("stamp") is not None else None,
            source=Pin.from_dict(entry.get("source")),
            relative=entry.get("relative") if isinstance(entry.get("relative"), str) else None,
        )


@dataclass(frozen=True)
class ShownPrelabel:
    """The pre-label an annotator was given: its generation, labels and the model that made it."""

    generation: int
    labels: np.ndarray
    model: dict[str, Any] | None


@dataclass
class ProjectState:
    """The manifest's fields (``manifest``: prompts, model, options, decoders, the current decoder
    and threshold, ...) and the images' entries, in file order; see the module docstring."""

    manifest: dict[str, Any]
    entries: dict[str, ImageEntry] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.counts = Counter(entry.state for entry in self.entries.values())

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str) -> ImageEntry:
        try:
            return self.entries[name]
        except KeyError:
            example = ", ".join(list(self.entries)[:3])
            raise KeyError(f"no image named {name!r} in this project (e.g. {example})") from None

    def put(self, entry: ImageEntry) -> None:
        """Replace (or add) one entry, keeping the counts."""
        old = self.entries.get(entry.name)
        if old is not None:
            self.counts[old.state] -= 1
        self.entries[entry.name] = entry
        self.counts[entry.state] += 1

    def remove(self, name: str) -> ImageEntry:
        """Take one entry out, keeping the counts."""
        entry = self.entries.pop(name)
        self.counts[entry.state] -= 1
        return entry

    def status(self) -> dict[str, int]:
        return {state: self.counts.get(state, 0) for state in STATES}

    def in_state(self, state: str) -> Iterable[ImageEntry]:
        """The entries in ``state`` whose image is there (a missing one waits, left out of the loop)."""
        return (entry for entry in self.entries.values() if entry.state == state and not entry.missing)

    def missing(self) -> list[str]:
        return [entry.name for entry in self.entries.values() if entry.missing]

    @property
    def threshold(self) -> Threshold | None:
        value = self.manifest.get("threshold")
        return tuple(value) if isinstance(value, list) else value

    def to_manifest(self) -> dict[str, Any]:
        """The ``project.json`` content (without the schema header)."""
        manifest = {k: v for k, v in self.manifest.items() if k not in ("images", "skipped", "scores")}
        return {**manifest, "images": [entry.to_dict() for entry in self.entries.values()]}


def _stamp(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def prelabel_facts(folder: ProjectFolder, name: str) -> dict[str, Any]:
    """What the pre-label folder of ``name`` says about its making: the decoder's name (None: the
    base's) and its record's modification time."""
    from ..io.outputs import output_record

    record = output_record(folder.prelabels / name) or {}
    decoder = (record.get("model") or {}).get("decoder") or {}
    return {"decoder": decoder.get("name"), "stamp": _stamp(folder.prelabels / name / RECORD_NAME)}


def prelabelled(folder: ProjectFolder, entry: ImageEntry, on_score: Any) -> ImageEntry:
    """``entry`` with the pre-label on disk taken in: its decoder and record time, a new generation
    when the record is not the one the entry saw, and its review score (``on_score(name)``)."""
    facts = prelabel_facts(folder, entry.name)
    generation = entry.generation + (facts["stamp"] != entry.stamp)
    entry = entry.replace(state="pre-labelled", generation=generation, **facts)
    if entry.source is None:  # its first pre-label: pin the pixels it was made from (:mod:`.sources`)
        entry = entry.replace(source=pin(entry.path), relative=relative_to(entry.path, folder.root))
    return entry.replace(**on_score(entry.name))


def reconcile(folder: ProjectFolder, entry: ImageEntry, on_score: Any) -> ImageEntry:
    """The entry as the folder has it now (see the module docstring); ``on_score(name)`` scores a
    pre-label whose score is unknown or stale."""
    if _stamp(folder.verified / entry.name / RECORD_NAME) is not None:
        return entry.replace(state="verified", skipped=False)
    if entry.skipped:
        return entry.replace(state="skipped")
    stamp = _stamp(folder.prelabels / entry.name / RECORD_NAME)
    if stamp is None:
        return entry.replace(state="new", stamp=None, score=None)
    entry = entry.replace(state="pre-labelled")
    if stamp != entry.stamp or entry.score is None:
        try:
            entry = prelabelled(folder, entry, on_score)
        except Exception as e:  # noqa: BLE001 - a damaged pre-label (the project's own output) is made again
            logger.warning("the pre-label of %s cannot be read (%s): it is made again", entry.name, e)
            shutil.rmtree(folder.prelabels / entry.name, ignore_errors=True)
            return entry.replace(state="new", stamp=None, score=None)
    return entry


def load_state(folder: ProjectFolder, manifest: dict[str, Any], on_score: Any) -> ProjectState:
    """The state of the project in ``folder`` from its manifest (new or read; schema 1 or 2)."""
    skipped = set(manifest.get("skipped", []))  # schema 1 kept skipped names in a list
    entries = {}
    for raw in manifest.get("images", []):
        entry = ImageEntry.from_dict(raw)
        if entry.name in skipped:
            entry = entry.replace(skipped=True)
        entries[entry.name] = reconcile(folder, entry, on_score)
    return ProjectState(manifest, entries)


def checked_labels(name: str, labels: Any, shape: tuple[int, ...], classes: list[str]) -> np.ndarray:
    """An annotator's labels for ``name`` as stored (uint8, or uint16 past 255 classes).

    Raises:
        ProjectError: not integers, values outside ``0..len(classes)``, or another shape than ``shape``.
    """
    from ..errors import ProjectError

    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu":
        raise ProjectError(f"{name}: labels must be integers (0 = background); got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > len(classes)):
        raise ProjectError(
            f"{name}: label values must lie in 0..{len(classes)} ({', '.join(classes)}); "
            f"got {labels.min()}..{labels.max()}"
        )
    if tuple(labels.shape) != tuple(shape):
        raise ProjectError(f"{name}: labels of shape {labels.shape} do not fit the image ({shape})")
    return labels.astype(np.uint8 if len(classes) < 256 else np.uint16)
