"""napari writer for Labels layers: TIFF or PNG, plus the CLIPSeg JSON sidecar when present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._layers import META_KEY
from .export import write_array, write_json


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer to ``path`` (``.tif``/``.tiff``/``.png``); returns the written paths.

    napari's save dialog has already asked before replacing an existing file, so this writes over
    it (atomically: a crash never leaves a half-written file). A layer made by napari-clipseg also
    gets ``<path>.json`` with its prompt <-> value table and provenance.
    """
    written = [str(write_array(path, data, overwrite=True))]
    record = (meta.get("metadata") or {}).get(META_KEY)
    if isinstance(record, dict):
        classes = [{"value": i + 1, "name": p} for i, p in enumerate(record.get("prompts", []))]
        sidecar = Path(path).with_name(Path(path).name + ".json")
        written.append(
            str(write_json(sidecar, {**record, "classes": classes, "layer": meta.get("name")}, overwrite=True))
        )
    return written
