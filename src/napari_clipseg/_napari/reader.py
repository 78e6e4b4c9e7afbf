"""npe2 reader: open napari-clipseg outputs as Labels layers that carry their record, to correct them.

It accepts a batch output folder (``clipseg.json`` inside: labels, and instances when present),
a labels file of such a folder or with a ``<file>.json`` sidecar (``segment``, the writer), and
the folder's ``labels.ome.zarr``. Anything else is declined (None), so napari's own readers open
it. Data is read into memory: painting never writes into the output files; saving or exporting
writes new ones, with the record marked ``edited`` when the labels changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RecordError
from ..io.outputs import OME_ZARR_NAME, read_labels_file
from ..io.records import RECORD_NAME, class_names, locate_record, object_table, read_record, record_file, sidecar_path
from . import layers as _layers


def _source(path: Path) -> tuple[dict[str, Any], Path, list[str]] | None:
    """The record, the folder its file names are relative to, and the kinds to open."""
    located = locate_record(path)
    if located is None:
        return None
    try:
        record = read_record(located)
    except (OSError, RecordError):
        return None
    folder = located.parent
    if located == sidecar_path(path):
        return {**record, "files": {**record.get("files", {}), "labels": path.name}}, folder, ["labels"]
    files = record.get("files", {})
    if path != folder and path.name != OME_ZARR_NAME:
        kinds = [k for k in ("labels", "instances") if files.get(k) == path.name]
    else:
        kinds = [k for k in ("labels", "instances") if k in files]
    return (record, folder, kinds) if kinds else None


def get_reader(path: str | list[str]) -> Any:
    """The reader function for ``path`` if it is a napari-clipseg output, else None."""
    if isinstance(path, list):
        return None
    source = _source(Path(path))
    if source is None:
        return None
    return lambda _path: read_output_layers(*source)


def _scale(record: dict[str, Any], ndim: int) -> list[float]:
    """Per-axis scale from the record's pixel size (y, x and, for stacks, z), else 1."""
    sizes = record.get("image", {}).get("pixel_size") or {}
    names = ["z", "y", "x"][-ndim:] if ndim <= 3 else [""] * (ndim - 3) + ["z", "y", "x"]
    return [float(sizes.get(name, 1.0)) for name in names]


def read_output_layers(record: dict[str, Any], folder: Path, kinds: list[str]) -> list[tuple]:
    """Layer data tuples: the labels with the class table, and the instances with their classes."""
    names = class_names(record)
    layers = []
    own_folder = (folder / RECORD_NAME).is_file()  # a batch output folder, else a file with a sidecar
    stem = folder.name if own_folder else Path(record["files"]["labels"]).stem
    for kind in kinds:
        data = np.asarray(read_labels_file(record_file(folder / RECORD_NAME, record["files"][kind])))
        meta = {**record, "files": dict(record.get("files", {}))}
        metadata = {_layers.META_KEY: meta}
        if kind == "labels":
            features = _layers.class_features(names)
        else:
            features = _layers.instance_features(object_table(folder / RECORD_NAME, record)[0], names)
            metadata[_layers.KIND_KEY] = "instances"
        metadata[_layers.WRITTEN_KEY] = {"regions": [()], "checksum": _layers.checksum(data, [()])}
        kwargs = {
            "name": f"{stem} {kind}",
            "features": features,
            "metadata": metadata,
            "scale": _scale(record, data.ndim),
        }
        layers.append((data, kwargs, "labels"))
    return layers
