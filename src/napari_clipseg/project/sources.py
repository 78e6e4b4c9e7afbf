"""The images under a project: each one's content pinned, so labels are never paired with other pixels.

A project pairs an annotator's labels with the pixels they were drawn on, but the images are the
user's files: they may be rewritten, replaced, renamed, moved or removed while the project lives.
Each image's entry keeps a :class:`Pin` (the file's size and modification time, and a digest of
its bytes) taken when its first pre-label is taken in, and the path relative to the project
folder. :func:`compare` tells, with one ``stat`` in the common case, whether the file still holds
those bytes; the digest decides only when size or time moved (a copy or a touch is the same image).

What each case does (docs/annotation-loop.md, "Images that change under a project"):

- **changed, pre-labelled**: its pre-label (the project's own output) is removed; it is
  pre-labelled again and queued by its new score.
- **changed, verified**: its verified labels are moved, whole, to ``outdated/<name>.<time>/``
  (never deleted), and it is pre-labelled again: the annotator reviews it anew.
- **changed, new or skipped**: the new content is pinned; nothing was paired with the old pixels.
- **missing** (removed, renamed, its folder moved): its state and labels stay; it is left out of
  the queue, learning and export, and named. It is found again by content: at its path relative
  to the project (project and images moved together), or when the images are given again
  (a moved folder, a renamed file); or it is dropped (:meth:`Project.drop`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Where verified labels of an image that changed (or was dropped) are kept.
OUTDATED = "outdated"


@dataclass(frozen=True)
class Pin:
    """What an image file held when the project took it in."""

    bytes: int
    mtime_ns: int
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "mtime_ns": self.mtime_ns, "digest": self.digest}

    @classmethod
    def from_dict(cls, data: Any) -> Pin | None:
        """The pin in ``data`` (a manifest entry's or a record's ``source``); None when absent or malformed."""
        try:
            return cls(int(data["bytes"]), int(data["mtime_ns"]), str(data["digest"]))
        except (KeyError, TypeError, ValueError):
            return None


def pin(path: str | os.PathLike, stop: Any = None) -> Pin:
    """The pin of the image at ``path`` now."""
    from ..io.inputs import content_digest, fingerprint

    quick = fingerprint(path)
    return Pin(quick["bytes"], quick["mtime_ns"], content_digest(path, stop))


def compare(path: str | os.PathLike, pinned: Pin) -> tuple[str, Pin]:
    """``("same" | "changed" | "missing", the pin now)``: one ``stat`` when size and time are those
    pinned; the digest otherwise (a touched or copied file holding the same bytes is the same)."""
    from ..io.inputs import fingerprint

    if not os.path.exists(path):
        return "missing", pinned
    quick = fingerprint(path)
    if (quick["bytes"], quick["mtime_ns"]) == (pinned.bytes, pinned.mtime_ns):
        return "same", pinned
    now = pin(path)
    return ("same" if now.digest == pinned.digest else "changed"), now


def relative_to(path: str | os.PathLike, root: Path) -> str | None:
    """``path`` relative to the project folder (``../images/a.tif``), None on another drive."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), root.resolve())).as_posix()
    except ValueError:
        return None


def put_aside(folder: Path, root: Path, name: str, why: str) -> Path:
    """Move ``folder`` (an image's verified labels) to ``outdated/<name>.<time>/`` under ``root``,
    with a note saying why; returns where it went. Nothing is deleted."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = root / OUTDATED / f"{name}.{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(folder, target)
    (target / "WHY.txt").write_text(why + "\n", encoding="utf-8")
    return target


def verified_pin(folder: Any, name: str) -> Pin | None:
    """The pin the verified record of ``name`` keeps (``image.source``); None for older records."""
    from ..io.outputs import output_record

    try:
        record = output_record(folder.verified / name) or {}
    except Exception:  # noqa: BLE001 - a damaged record is the state's to say
        return None
    return Pin.from_dict((record.get("image") or {}).get("source"))


def _found_beside(entry: Any, root: Path) -> Path | None:
    """The image at its path relative to the project folder, when it holds the pinned bytes (the
    project and its images moved together)."""
    if entry.relative is None or entry.source is None:
        return None
    candidate = root / entry.relative
    if candidate.exists() and compare(candidate, entry.source)[0] == "same":
        return Path(os.path.abspath(candidate))
    return None


def settle(project: Any, entry: Any, compared: tuple[str, Pin] | None = None) -> str | None:
    """Check one image of ``project`` against its pin and act (see the module docstring); returns
    what was done, in words, when it is worth saying. ``compared``: :func:`compare`'s answer when
    the caller has it (the file is not hashed twice). Read-only projects change no file: a changed
    image is only marked missing from the loop there."""
    root = project.folder.root
    path = Path(entry.path)
    if not path.exists():
        moved = _found_beside(entry, root)
        if moved is None:
            project._state.put(entry.replace(missing=True))
            return (
                f"{entry.name}: its image {entry.path} is gone (moved, renamed or removed); it waits, left out of "
                "the queue, learning and export: give its folder again (images=..., --images), or drop it"
            )
        entry = entry.replace(path=str(moved), relative=None)
    if entry.source is None:  # a manifest rebuilt (its verified record has the pin), or made before pins
        recorded = verified_pin(project.folder, entry.name) if entry.state == "verified" else None
        if recorded is None:  # made before pins: its content now is its content
            if entry.state in ("pre-labelled", "verified"):
                entry = entry.replace(source=pin(entry.path))
            project._state.put(entry.replace(missing=False))
            return None
        entry = entry.replace(source=recorded)
    relative = entry.relative or relative_to(entry.path, root)
    status, now = compared or compare(entry.path, entry.source)
    if status == "same":
        project._state.put(entry.replace(source=now, relative=relative, missing=False))
        return None
    if project.read_only:
        project._state.put(entry.replace(missing=True))
        return (
            f"{entry.name}: its image {entry.path} holds other pixels than when it was labelled; open it to re-queue it"
        )
    return rewritten(project, entry.replace(relative=relative, missing=False), now)


def rewritten(project: Any, entry: Any, now: Pin) -> str | None:
    """An image whose file now holds other bytes: its pre-label removed, its verified labels put
    aside (kept), and back to ``new``; returns what was done, in words."""
    import shutil

    folder = project.folder
    said = None
    if entry.state == "verified":
        why = f"{entry.name}: its image {entry.path} was rewritten with other pixels after these labels were verified"
        aside = put_aside(folder.verified / entry.name, folder.root, entry.name, why)
        said = f"{entry.name} changed on disk after it was verified: labels kept in {aside}; it is labelled anew"
    elif entry.state == "pre-labelled":
        said = f"{entry.name} changed on disk: it is pre-labelled again"
    shutil.rmtree(folder.prelabels / entry.name, ignore_errors=True)
    new_state = "skipped" if entry.skipped else "new"
    project._state.put(entry.replace(state=new_state, source=now, stamp=None, score=None, changed=None))
    return said


def check_images(project: Any) -> list[str]:
    """Every image of ``project`` against its pin (at open); returns what was done, in words
    (each also logged as a warning)."""
    said = []
    for entry in list(project._state.entries.values()):
        notice = settle(project, entry)
        if notice:
            logger.warning("%s", notice)
            said.append(notice)
    return said


def still_there(project: Any, name: str) -> bool:
    """See :meth:`~.project.Project.still_there`."""
    with project._lock:
        entry = project._state.entry(name)
        compared = compare(entry.path, entry.source) if entry.source is not None else None
        if compared is None or compared[0] == "same":
            return True
        project.notices.append(settle(project, entry, compared) or f"{name} changed on disk")
        project._save()
    return False


def drop(project: Any, name: str) -> None:
    """See :meth:`~.project.Project.drop`."""
    import shutil

    with project._lock:
        project._state.entry(name)  # a KeyError naming the images when there is no such image
        verified = project.folder.verified / name
        if verified.exists():
            put_aside(verified, project.folder.root, name, f"{name} was dropped from the project")
        shutil.rmtree(project.folder.prelabels / name, ignore_errors=True)
        project._state.remove(name)
        dropped = project._state.manifest.setdefault("dropped", [])
        if name not in dropped:
            dropped.append(name)
        project._shown.pop(name, None)
        project._save()


def keep_if_damaged(folder: Path, root: Path, name: str) -> None:
    """Before verified labels are replaced: a folder whose record cannot be read (edited by hand,
    damaged by the disk) may still hold the only copy of the labels, so it is put aside, never deleted."""
    from ..errors import RecordError
    from ..io.outputs import output_record

    try:
        output_record(folder)
    except (RecordError, OSError):
        aside = put_aside(folder, root, name, f"{name}: its record could not be read when it was verified again")
        logger.warning("the verified folder of %s was damaged: kept in %s", name, aside)
