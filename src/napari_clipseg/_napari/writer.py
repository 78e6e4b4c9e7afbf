"""napari writer for Labels layers: TIFF or PNG, plus the CLIPSeg record (``<file>.json``) when present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import json_writer, write_together
from ..io.export import array_writer
from ..io.records import extend_record, sidecar_path
from .layers import META_KEY, changed_since_written


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer to ``path`` (``.tif``/``.tiff``/``.png``); returns the written paths.

    napari's save dialog has already asked before replacing an existing file, so this writes over
    it. A layer made by napari-clipseg (or opened by its reader) also gets ``<path>.json``, its
    record, marked ``edited`` when the labels changed since the plugin wrote or read them; the two
    files are written together (both or neither).
    """
    outputs = [(Path(path), array_writer(path, data))]
    metadata = meta.get("metadata") or {}
    record = metadata.get(META_KEY)
    if isinstance(record, dict):
        files = {"labels": Path(path).name}  # only the labels travel with this file
        edited = bool(record.get("edited")) or changed_since_written(data, metadata)
        full = extend_record(record, files=files, layer=meta.get("name"), edited=edited)
        outputs.append((sidecar_path(path), json_writer(full)))
    return [str(p) for p in write_together(outputs, overwrite=True)]
