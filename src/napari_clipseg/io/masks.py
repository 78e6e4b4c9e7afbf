"""Training masks from a label image: a multi-class labels file, one mask per class, and the record."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import json_writer, write_together
from .export import array_writer
from .records import RECORD_NAME, class_table, extend_record


def safe_name(text: str) -> str:
    """A file-name-safe version of a class name ("cell membrane" -> "cell_membrane")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("_") or "class"


def mask_names(class_names: Sequence[str], suffix: str) -> dict[int, str]:
    """File name of each class mask: ``{value: "NN_name{suffix}"}``."""
    return {i + 1: f"{i + 1:02d}_{safe_name(name)}{suffix}" for i, name in enumerate(class_names)}


def export_masks(
    folder: str | os.PathLike,
    labels: np.ndarray,
    class_names: Sequence[str],
    record: Mapping[str, Any],
    *,
    suffix: str = ".tif",
    overwrite: bool = False,
    instances: tuple[np.ndarray, Sequence[int]] | None = None,
) -> list[Path]:
    """Write a multi-class label image, one binary mask per class, optional instances, and the record.

    Files: ``labels{suffix}`` (value ``i + 1`` = ``class_names[i]``), ``{NN}_{name}{suffix}``
    (uint8, 255 inside), ``instances{suffix}`` when ``instances = (ids, classes)`` is given (ids
    1..N; object ``i`` has class value ``classes[i - 1]``, recorded as ``instance_classes``), and
    ``clipseg.json``: ``record`` with this folder's class table and file names. Nothing is written
    if any target exists and ``overwrite`` is False.

    All files are written together: an interruption or a full disk leaves none of them.

    Returns:
        The written paths, record last.
    """
    folder = Path(folder)
    labels = np.asarray(labels)
    masks = mask_names(class_names, suffix)
    targets = [folder / f"labels{suffix}", *(folder / m for m in masks.values()), folder / RECORD_NAME]
    if instances is not None:
        targets.insert(-1, folder / f"instances{suffix}")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} file(s) already exist, e.g. {existing[0]}; nothing was written")
    files = {"labels": targets[0].name, "masks": {str(v): n for v, n in masks.items()}}
    image = {**record.get("image", {}), "shape": list(labels.shape)}
    sections: dict[str, Any] = {"classes": class_table(class_names), "image": image, "files": files}
    writers = [array_writer(targets[0], labels)]
    writers += [array_writer(folder / name, (labels == value).astype(np.uint8) * 255) for value, name in masks.items()]
    if instances is not None:
        ids, classes = instances
        writers.append(array_writer(targets[-2], np.asarray(ids)))
        files["instances"] = targets[-2].name
        sections["instance_classes"] = [int(c) for c in classes]
    writers.append(json_writer(extend_record(record, **sections)))
    return write_together(list(zip(targets, writers, strict=True)), overwrite=overwrite)
