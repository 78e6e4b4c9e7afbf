"""What an image file held when a project took it in: its size, time and a digest of its bytes.

:func:`compare` tells, with one ``stat`` in the common case, whether the file still holds those
bytes; the digest decides only when size or time moved (a copy or a touch is the same image).
What a project does when an image changed is :mod:`.sources`' job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
