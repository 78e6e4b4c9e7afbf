"""Training masks from a label image: a multi-class labels file, one mask per class, and the record."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .export import write_array
from .records import class_table, write_record

#: The record of an exported folder.
RECORD_NAME = "clipseg.json"


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
) -> list[Path]:
    """Write a multi-class label image, one binary mask per class, and the record.

    Files: ``labels{suffix}`` (value ``i + 1`` = ``class_names[i]``), ``{NN}_{name}{suffix}``
    (uint8, 255 inside), and ``clipseg.json``: ``record`` with this folder's class table and file
    names. Nothing is written if any target exists and ``overwrite`` is False.

    Returns:
        The written paths, record last.
    """
    folder = Path(folder)
    labels = np.asarray(labels)
    masks = mask_names(class_names, suffix)
    targets = [folder / f"labels{suffix}", *(folder / m for m in masks.values()), folder / RECORD_NAME]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} file(s) already exist, e.g. {existing[0]}; nothing was written")
    written = [write_array(targets[0], labels, overwrite=overwrite)]
    for value, name in masks.items():
        written.append(write_array(folder / name, (labels == value).astype(np.uint8) * 255, overwrite=overwrite))
    files = {"labels": targets[0].name, "masks": {str(v): n for v, n in masks.items()}}
    image = {**record.get("image", {}), "shape": list(labels.shape)}
    full = {**record, "classes": class_table(class_names), "image": image, "files": files}
    written.append(write_record(targets[-1], full, overwrite=overwrite))
    return written
