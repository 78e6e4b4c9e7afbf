"""Exporting a Labels layer (ours or any) as training masks, asking before replacing files."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..masks import export_masks
from ..records import build_record
from . import layers as _layers


def layer_record(layer: Any) -> dict[str, Any]:
    """The record to export with ``layer``: its CLIPSeg record (marked edited if it was), or a new one."""
    names = _layers.layer_class_names(layer)
    record = _layers.clipseg_meta(layer)
    if record is None:
        record = build_record(names, image={"name": None, "shape": list(np.shape(layer.data))})
    return {**record, "edited": _layers.is_edited(layer), "layer": layer.name}


def export_labels_layer(layer: Any, folder: str, suffix: str, confirm: Callable[[str], bool]) -> list[Path]:
    """Write ``layer`` into ``folder`` (see :func:`napari_clipseg.masks.export_masks`).

    If files exist, ``confirm(question)`` decides; a "no" writes nothing and returns ``[]``.

    Raises:
        OSError, ValueError: the files could not be written (nothing half-written is left).
    """
    names = _layers.layer_class_names(layer)
    export = partial(export_masks, folder, np.asarray(layer.data), names, layer_record(layer), suffix=suffix)
    try:
        return export()
    except FileExistsError as e:
        if not confirm(f"{e}.\n\nOverwrite the existing files?"):
            return []
        return export(overwrite=True)
