"""A project's verified images as a training set: one folder per image, plus one COCO file.

``out/<name>/`` holds the image file as it was (copied), ``labels.tif`` (value ``i`` = class ``i``),
one mask per class, ``instances.tif`` when asked, and ``clipseg.json`` (the record, with the
project's entry: changed pixels, the decoder the pre-label came from). The whole set is written
beside ``out`` and renamed into place at the end, so an interrupted export leaves nothing.

An export never destroys what it did not write: ``out`` may be new or an empty folder; a folder
that holds an earlier export of this project (recognised by the :data:`MARK` file it wrote, listing
what it wrote, and nothing else beside it) is replaced only with ``overwrite``; any other folder is
refused, ``overwrite`` or not. :func:`choose_export_folder` turns a folder a person picked into
one an export may write (a new ``<project>-training-set`` inside a folder that holds other files).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Protocol

import numpy as np

from ..atomic import swap_in_folder
from ..errors import RecordError
from ..io.inputs import InputFile
from ..io.masks import export_masks
from ..io.records import RECORD_NAME, read_record
from ..segmentation.postprocess import InstanceSettings
from .folder import ProjectFolder

logger = logging.getLogger(__name__)

COCO_NAME = "coco.json"
#: What an export writes into its set to recognise it later: the project, and the entries it wrote.
MARK = ".napari-clipseg-export.json"


class VerifiedSet(Protocol):
    """What an export reads of a project (a :class:`~.project.Project` is one)."""

    folder: ProjectFolder
    names: list[str]
    items: list[InputFile]
    classes: list[str]

    def state(self, name: str) -> str: ...
    def missing(self) -> list[str]: ...
    def still_there(self, name: str) -> bool: ...
    def verified_labels(self, name: str) -> np.ndarray: ...
    def item(self, name: str) -> InputFile: ...


def _copy_image(source: Path, folder: Path) -> str:
    """The image file (or zarr folder) as ``image<suffix>`` beside its labels; returns that name."""
    lower = source.name.lower()
    suffix = next((s for s in (".ome.tiff", ".ome.tif", ".ome.zarr") if lower.endswith(s)), source.suffix)
    (shutil.copytree if source.is_dir() else shutil.copy2)(source, folder / f"image{suffix}")
    return f"image{suffix}"


def _check_target(project: VerifiedSet, out: Path) -> None:
    """Refuse a training-set folder that is, holds or lies in the project, or holds the images
    (an export with ``overwrite`` replaces its folder: it must never take the user's work with it).

    Raises:
        ValueError: naming what the folder would replace.
    """
    target, root = out.resolve(), project.folder.root.resolve()
    if target == root or root in target.parents or target in root.parents:
        raise ValueError(f"{out} is, holds or lies in the project folder {root}: export to a folder outside it")
    for item in project.items:
        image = Path(item.path).resolve()
        if target == image or target in image.parents:
            raise ValueError(f"{out} holds the project's images (e.g. {item.path}): export to another folder")


def _not_written(project: VerifiedSet, out: Path) -> list[str]:
    """The entries of the folder ``out`` that no export of this project wrote (all of them when its
    :data:`MARK` is missing, damaged or another project's)."""
    entries = sorted(entry.name for entry in out.iterdir())
    try:
        mark = json.loads((out / MARK).read_text(encoding="utf-8"))
        ours = mark["project"] == str(project.folder.root.resolve())
        written = {*mark["entries"], MARK} if ours else set()
    except (OSError, ValueError, TypeError, KeyError):
        written = set()
    return [entry for entry in entries if entry not in written]


def is_earlier_export(project: VerifiedSet, out: Path) -> bool:
    """Whether the folder ``out`` holds an export of this project and nothing it did not write."""
    return (out / MARK).is_file() and not _not_written(project, out)


def _check_contents(project: VerifiedSet, out: Path, overwrite: bool) -> None:
    """Refuse a folder with anything an export did not write; ask for ``overwrite`` before an earlier one.

    Raises:
        ValueError: ``out`` is a file, or holds other files (named), whatever ``overwrite`` says.
        FileExistsError: ``out`` holds an earlier export of this project and ``overwrite`` is False.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out} is a file: export to a new or empty folder")
    if not any(out.iterdir()):
        return
    other = _not_written(project, out)
    if other:
        raise ValueError(
            f"{out} holds files this project's export did not write ({', '.join(other[:3])}"
            f"{' …' if len(other) > 3 else ''}): export to a new or empty folder; nothing was changed"
        )
    if not overwrite:
        raise FileExistsError(f"{out} holds an earlier export of this project: allow replacing it, or choose another")


def choose_export_folder(project: VerifiedSet, chosen: str | os.PathLike) -> tuple[Path, bool]:
    """The folder to export to when a person picked ``chosen``, and whether it holds an earlier
    export of this project (to replace, after asking): ``chosen`` itself when it is new, empty or
    such an export; else a new ``<project>-training-set`` folder inside it (numbered when taken)."""
    chosen = Path(chosen)
    stem = project.folder.root.name.removesuffix("-clipseg-project")
    candidates = [chosen] + [chosen / f"{stem}-training-set{f'-{n}' if n > 1 else ''}" for n in range(1, 1000)]
    for folder in candidates:
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            return folder, False
        if folder.is_dir() and is_earlier_export(project, folder):
            return folder, True
    raise ValueError(f"{chosen} holds 1,000 training sets already: choose another folder")


def _exportable(project: VerifiedSet) -> list[str]:
    """The verified images whose files are still those verified (the others are left out, said).

    Raises:
        ValueError: none is.
    """
    verified = [name for name in project.names if project.state(name) == "verified"]
    gone = set(project.missing())
    names = [name for name in verified if name not in gone and project.still_there(name)]
    left_out = sorted(set(verified) - set(names))
    if left_out:  # gone or rewritten since they were verified: never exported with other pixels
        logger.warning(
            "left out of the export, their images are gone or changed since they were verified: %s", ", ".join(left_out)
        )
    if not names:
        raise ValueError(
            "no image of the project is verified yet: nothing to export"
            if not verified
            else f"every verified image is gone or changed on disk ({', '.join(left_out[:3])}): nothing to export"
        )
    return names


def _mark(project: VerifiedSet, stage: Path) -> None:
    """Write the :data:`MARK` of a finished set: this project, and every entry the export wrote."""
    mark = {"project": str(project.folder.root.resolve()), "entries": sorted(p.name for p in stage.iterdir())}
    (stage / MARK).write_text(json.dumps(mark, indent=1), encoding="utf-8")


def _tidy(out: Path) -> None:
    """Undo what a killed export left beside ``out``: a set moved aside for ``overwrite`` whose
    replacement never arrived is put back, and half-written sets are removed."""
    asides = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if asides and not out.exists():
        os.replace(asides.pop(), out)
        logger.warning("put back %s: an export that was replacing it was interrupted", out)
    for leftover in [*asides, *out.parent.glob(f".{out.name}.partial-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def export_project(
    project: VerifiedSet,
    out: str | os.PathLike,
    *,
    coco: bool = False,
    instances: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write the verified images of ``project`` (a :class:`~.project.Project`) as a training set in
    ``out`` (see the module docstring).

    Raises:
        FileExistsError: ``out`` holds an earlier export of this project and ``overwrite`` is False.
        ValueError: ``out`` holds anything else, or no image is verified yet (nothing is written).
    """
    out = Path(out)
    _check_target(project, out)
    if out.parent.is_dir():
        _tidy(out)
    _check_contents(project, out, overwrite)
    names = _exportable(project)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        coco_items = []
        for name in names:
            try:
                labels = project.verified_labels(name)
                record = read_record(project.folder.verified / name / RECORD_NAME)
            except (RecordError, OSError, ValueError) as e:  # damaged by hand or by the disk: said, never guessed
                logger.warning("left out of the export: the verified labels of %s cannot be read (%s)", name, e)
                continue
            objects = InstanceSettings().apply(labels) if instances or coco else None
            pair = (objects.ids, objects.classes) if objects is not None and instances else None
            export_masks(stage / name, labels, project.classes, record, instances=pair)
            copied = _copy_image(Path(project.item(name).path), stage / name)
            if objects is not None:  # COCO's file_name: the image file a reader opens, from the set's folder
                coco_items.append((f"{name}/{copied}", objects.ids, list(objects.classes), None))
        if coco:
            from ..io.coco import build_coco, write_coco

            write_coco(stage / COCO_NAME, build_coco(coco_items, project.classes))
        _mark(project, stage)
        _check_contents(project, out, overwrite)  # again: nothing put there meanwhile is taken with it
        swap_in_folder(stage, out, out.parent / f".{out.name}.old-{uuid.uuid4().hex}", durable=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out
