"""Exporting a Labels layer (ours or any) as training masks, asking before replacing files."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import _layers
from .export import export_masks


def export_labels_layer(layer: Any, folder: str, suffix: str, confirm: Callable[[str], bool]) -> list[Path]:
    """Write ``layer`` into ``folder`` (see :func:`export.export_masks`).

    Class names come from the layer's CLIPSeg record, else ``label 1``, ``label 2``, ... If files
    exist, ``confirm(question)`` decides; a "no" writes nothing and returns ``[]``.

    Raises:
        OSError, ValueError: the files could not be written (nothing half-written is left).
    """
    meta = dict(_layers.clipseg_meta(layer) or {})
    names = meta.pop("prompts", None) or [f"label {v}" for v in range(1, int(np.max(layer.data)) + 1)]
    record = {**meta, "layer": layer.name, "edited": _layers.is_edited(layer)}
    export = partial(export_masks, folder, np.asarray(layer.data), names, record, suffix=suffix)
    try:
        return export()
    except FileExistsError as e:
        if not confirm(f"{e}.\n\nOverwrite the existing files?"):
            return []
        return export(overwrite=True)
