"""The state as the folder has it: built at open, and a pre-label on disk taken in.

An image is *verified* when ``verified/<name>/`` holds its record **and** its labels,
*pre-labelled* when ``prelabels/<name>/`` holds a record, *skipped* when the manifest says so,
*new* otherwise. What the manifest remembers of a pre-label (generation, the decoder that made it,
its review score) is trusted only while the record's modification time is the one it saw; a
record written since (by a process killed before it saved the manifest) is read again.

What the folder needs repaired (a damaged pre-label: made again; a verified folder whose labels
are gone: its record kept in ``outdated/``) is repaired by a writable opening; a read-only one
changes nothing on disk and says what it would repair (:attr:`Reconciled.repairs`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RecordError
from ..io.outputs import output_record, read_output
from ..io.records import RECORD_NAME
from .folder import VERIFIED_LABELS, ProjectFolder
from .manifest import Manifest
from .pins import pin, relative_to
from .score import review_score
from .state import ImageEntry, ProjectState, record_time

logger = logging.getLogger(__name__)

#: What a pre-label that cannot be read raises on the way (a damaged record, a truncated array, a
#: pickled file that numpy refuses to read).
DAMAGE = (RecordError, OSError, ValueError, EOFError, KeyError)


@dataclass
class Reconciled:
    """The state loaded, and what a read-only opening left as it found it (in words)."""

    state: ProjectState
    repairs: list[str] = field(default_factory=list)


def prelabelled(state: ProjectState, entry: ImageEntry) -> ImageEntry:
    """``entry`` with the pre-label on disk read: the decoder that made it, its record's time, a new
    generation when that record is not the one the entry saw, and its review score at that
    decoder's threshold; its first pre-label pins the image's pixels (:mod:`.pins`).

    Raises:
        One of :data:`DAMAGE`: the pre-label cannot be read.
    """
    folder = state.folder.prelabels / entry.name
    stamp = record_time(folder / RECORD_NAME)
    record = output_record(folder) or {}
    decoder = ((record.get("model") or {}).get("decoder") or {}).get("name")
    probabilities = np.asarray(read_output(folder, "probabilities"))
    generation = entry.generation + (stamp != entry.prelabel_stamp)
    score = review_score(probabilities, state.threshold_of(decoder))
    entry = entry.replace(
        state="pre-labelled", generation=generation, decoder=decoder, prelabel_stamp=stamp, score=score
    )
    if entry.source is None:
        entry = entry.replace(source=pin(entry.path), relative=relative_to(entry.path, state.folder.root))
    return entry


def _verified(folder: ProjectFolder, entry: ImageEntry, read_only: bool, repairs: list[str]) -> ImageEntry | None:
    """The verified entry, when its record and labels are there; a record without its labels is
    put aside (a writable opening) and the image is labelled again."""
    place = folder.verified / entry.name
    stamp = record_time(place / RECORD_NAME)
    if stamp is None:
        return None
    if (place / VERIFIED_LABELS).exists():
        return entry.replace(state="verified", skipped=False, verified_at=stamp)
    said = f"{entry.name}: its verified labels ({place / VERIFIED_LABELS}) are gone: it is labelled again"
    if read_only:
        repairs.append(f"{said} (when the project is opened for writing)")
    else:
        aside = folder.put_aside(
            place, entry.name, f"{entry.name}: {VERIFIED_LABELS} was gone; its record is kept here"
        )
        logger.warning("%s; its record is kept in %s", said, aside)
    return None


def reconcile(state: ProjectState, entry: ImageEntry, repairs: list[str]) -> ImageEntry:
    """The entry as the folder has it now (see the module docstring)."""
    folder = state.folder
    verified = _verified(folder, entry, state.read_only, repairs)
    if verified is not None:
        return verified
    entry = entry.replace(state="new", verified_at=None, changed=None)
    if entry.skipped:
        return entry.replace(state="skipped")
    stamp = record_time(folder.prelabels / entry.name / RECORD_NAME)
    if stamp is None:
        return entry.replace(prelabel_stamp=None, score=None)
    if stamp == entry.prelabel_stamp and entry.score is not None:
        return entry.replace(state="pre-labelled")
    try:
        return prelabelled(state, entry)
    except DAMAGE as e:
        said = f"the pre-label of {entry.name} cannot be read ({e}): it is made again"
        if state.read_only:
            repairs.append(f"{said} when the project is opened for writing")
        else:
            logger.warning("%s", said)
            shutil.rmtree(folder.prelabels / entry.name, ignore_errors=True)
        return entry.replace(prelabel_stamp=None, score=None)


def load_state(folder: ProjectFolder, data: dict[str, Any], manifest: Manifest, *, read_only: bool) -> Reconciled:
    """The state of the project in ``folder`` from its ``project.json`` content ``data`` (new or
    read; schema 1 or 2) and its typed ``manifest``."""
    skipped = set(data.get("skipped", []))  # schema 1 kept skipped names in a list
    raw = [ImageEntry.from_dict(e) for e in data.get("images", [])]
    state = ProjectState(folder, manifest, [], read_only=read_only)
    repairs: list[str] = []
    entries = []
    for entry in raw:
        entry = entry.replace(skipped=True) if entry.name in skipped else entry
        entries.append(reconcile(state, entry, repairs))
    return Reconciled(ProjectState(folder, manifest, entries, read_only=read_only), repairs)
