"""An annotation project's folder: where each piece of state lives, the lock, and the manifest.

The folder is the truth. An image is *verified* when ``verified/<name>/`` is a complete output
folder (labels and record, written at once), *pre-labelled* when ``prelabels/<name>/`` is one
(labels, probabilities and record, from the dataset machinery), *skipped* when the manifest says
so, and *new* otherwise (:mod:`.reconcile`). The manifest (``project.json``) holds what the files
cannot say: the images, prompts, model, options, skipped names, learnt decoders and the queue's
scores (:mod:`.manifest`). Every write is atomic (a temporary file renamed into place), so a crash,
a kill or a full disk leaves the previous state; a manifest that is lost or damaged is rebuilt
from what was given to open the project and the files, and only when they agree (:mod:`.open`).
A lock (``filelock``, the operating system's advisory lock) keeps a second window or process from
opening the folder for writing.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path, PureWindowsPath
from typing import Any

from ..atomic import flush_folder, write_json
from ..errors import ProjectError, ProjectLockedError

logger = logging.getLogger(__name__)

SCHEMA = "napari-clipseg.project"
SCHEMA_VERSION = 2  # 2: one entry per image (generation, decoder, score); 1 is read too
MANIFEST_NAME = "project.json"
LOCK_NAME = ".lock"
#: Where verified labels of an image that changed (or was dropped) are kept.
OUTDATED = "outdated"
#: The file of a verified image's labels (beside its record).
VERIFIED_LABELS = "labels.tif"

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

    @property
    def outdated(self) -> Path:
        """Where verified labels that no longer fit their image (or were dropped) are kept."""
        return self.root / OUTDATED

    def put_aside(self, folder: Path, name: str, why: str) -> Path:
        """Move ``folder`` (an image's verified labels) to ``outdated/<name>.<time>/`` with a note
        saying why; returns where it went. Nothing is deleted."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.outdated / f"{name}.{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder, target)
        (target / "WHY.txt").write_text(why + "\n", encoding="utf-8")
        return target

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
                f"{self.root} is open in another napari window or process (or already open here: close that "
                "project first); close it there, or open it read-only"
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
        """The manifest, or None when there is none.

        Raises:
            DamagedManifest: it cannot be read, is not a project manifest, or its fields are wrong
                (the message says how to rebuild it).
            ProjectError: written by a newer napari-clipseg.
        """
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise DamagedManifest(self.manifest_path, f"it cannot be read ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
            raise DamagedManifest(self.manifest_path, "it is not a napari-clipseg project manifest")
        version = manifest.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise DamagedManifest(self.manifest_path, f"schema_version is {version!r}, not a number")
        if version > SCHEMA_VERSION:
            raise ProjectError(f"{self.manifest_path} was written by a newer napari-clipseg (schema {version})")
        check_manifest(manifest, self.manifest_path)
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest atomically (the old one stays if this fails) and durably (flushed)."""
        kept = {k: v for k, v in manifest.items() if k not in ("schema", "schema_version", "saved")}
        full = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            **kept,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(self.manifest_path, full, overwrite=True, durable=True)


#: What each field of the manifest must be (the types JSON gives them).
FIELDS = {
    "prompts": (list,),
    "model": (dict,),
    "options": (dict,),
    "images": (list,),
    "skipped": (list,),
    "dropped": (list,),
    "decoders": (list,),
    "decoder": (str, type(None)),
    "threshold": (int, float, list, type(None)),
    "store_bytes": (int, type(None)),
    "learnt_at": (int, type(None)),
    "learns": (list, type(None)),
}


class DamagedManifest(ProjectError):
    """``project.json`` cannot be trusted; the message says what is wrong and how to rebuild it."""

    def __init__(self, path: Path, why: str) -> None:
        self.path, self.why = path, why
        super().__init__(
            f"{path} is damaged: {why}. Fix it, or rebuild it from the folder by opening the project with the "
            "images, prompts and model it was made with (open_project(images, folder, prompts=..., model=...), "
            "or 'napari-clipseg project prelabel FOLDER --images ... -p ... -m ...')"
        )


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Refuse a manifest whose fields have the wrong types or whose image names could write outside
    their folder or into another image's (DamagedManifest naming the field)."""
    for key in ("prompts", "model", "options"):
        if key not in manifest:
            raise DamagedManifest(path, f"it has no {key!r}")
    for key, kinds in FIELDS.items():
        if key in manifest and not isinstance(manifest[key], kinds):
            raise DamagedManifest(path, f"{key!r} is {type(manifest[key]).__name__}")
    for entry in manifest.get("images", []):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not isinstance(entry.get("path"), str)
        ):
            raise DamagedManifest(path, f"an image entry is {entry!r} (it needs a name and a path)")
    check_names([entry["name"] for entry in manifest.get("images", [])], str(path))


def check_names(names: list[str], where: str) -> None:
    """Every image name is a plain relative path (no ``..``, no root, no backslash), and no name's
    folder holds another's (``a`` and ``a/b`` would nest: verifying ``a`` would replace ``a/b``'s).

    Raises:
        ProjectError: naming the image(s) and what to do.
    """
    seen = set(names)
    for name in names:
        parts = name.split("/")
        rooted = name.startswith("/") or bool(PureWindowsPath(name).drive)
        if not name or rooted or "\\" in name or any(part in ("", ".", "..") for part in parts):
            raise ProjectError(f"{where}: the image name {name!r} is not a plain relative name; it is refused")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in seen:
                raise ProjectError(
                    f"{where}: the images {parent!r} and {name!r} would share a folder ({parent}/ would hold "
                    f"{name}'s labels): rename the file {parent} or the folder {parent}/"
                )


def recover_staging(folder: ProjectFolder) -> list[str]:
    """Put back what a kill during a verify left aside, then empty the staging folder.

    Re-verifying an image moves its verified folder aside (``.staging/old-*``) before the new one
    is renamed in; a kill between the two leaves the image with no verified folder. Such a folder,
    whose record names an image whose verified folder is missing, is moved back. Returns the
    names recovered."""
    import shutil

    from ..io.outputs import output_record

    recovered = []
    for aside in sorted(folder.staging.glob("old-*")) if folder.staging.is_dir() else []:
        try:
            name = ((output_record(aside) or {}).get("project") or {}).get("name")
        except Exception:  # noqa: BLE001 - not a complete folder: nothing to recover
            name = None
        if isinstance(name, str) and not (folder.verified / name).exists():
            try:
                check_names([name], str(aside))
            except ProjectError:
                continue
            (folder.verified / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(aside, folder.verified / name)
            flush_folder((folder.verified / name).parent)
            logger.warning("recovered the verified labels of %s from %s (a verify was interrupted)", name, aside)
            recovered.append(name)
    shutil.rmtree(folder.staging, ignore_errors=True)
    return recovered
