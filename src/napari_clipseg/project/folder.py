"""An annotation project's folder: where each piece of state lives, the lock, and the manifest.

The folder is the truth. An image is *verified* when ``verified/<name>/`` is a complete output
folder (labels and record, written at once), *pre-labelled* when ``prelabels/<name>/`` is one
(labels, probabilities and record, from the dataset machinery), *skipped* when the manifest says
so, and *new* otherwise. The manifest (``project.json``) holds what the files cannot say: the
images, prompts, model, options, skipped names, learnt decoders and the queue's scores. Every
write is atomic (a temporary file renamed into place), so a crash, a kill or a full disk leaves
the previous state; a manifest that is lost or damaged is rebuilt from what was given to open the
project and the files. A lock (``filelock``, the operating system's advisory lock) keeps a second
window or process from opening the folder for writing.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..errors import ProjectError, ProjectLockedError

logger = logging.getLogger(__name__)

SCHEMA = "napari-clipseg.project"
SCHEMA_VERSION = 2  # 2: one entry per image (generation, decoder, score); 1 is read too
MANIFEST_NAME = "project.json"
LOCK_NAME = ".lock"

#: Image states, in the order an image moves through them.
STATES = ("new", "pre-labelled", "verified", "skipped")


class ProjectFolder:
    """Paths of a project folder, its lock and its manifest (no model, no images read here)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._lock: Any = None

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def prelabels(self) -> Path:
        return self.root / "prelabels"

    @property
    def verified(self) -> Path:
        return self.root / "verified"

    @property
    def decoders(self) -> Path:
        return self.root / "decoders"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    def lock(self) -> None:
        """Take the folder for this process, or refuse at once if another holder has it.

        Raises:
            ProjectLockedError: another window or process holds the folder.
        """
        from filelock import FileLock, Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / LOCK_NAME), timeout=0, is_singleton=False)
        try:
            lock.acquire()
        except Timeout:
            raise ProjectLockedError(
                f"{self.root} is open in another napari window or process; close it there, or open it read-only"
            ) from None
        self._lock = lock

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def locked(self) -> bool:
        return self._lock is not None

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when it is missing or damaged (logged: it is rebuilt from the files)."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning(
                "ignoring the damaged manifest %s (%s): rebuilding it from the folder", self.manifest_path, e
            )
            return None
        if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
            logger.warning("ignoring %s: not a napari-clipseg project manifest; rebuilding it", self.manifest_path)
            return None
        if not isinstance(manifest.get("schema_version"), int) or manifest["schema_version"] > SCHEMA_VERSION:
            raise ProjectError(
                f"{self.manifest_path} was written by a newer napari-clipseg (schema {manifest.get('schema_version')})"
            )
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest atomically (the old one stays if this fails)."""
        full = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            **manifest,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(self.manifest_path, full, overwrite=True)
