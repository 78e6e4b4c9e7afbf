"""Exporting a Labels layer (ours or any) as training masks, asking before replacing files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..io.masks import export_masks
from ..io.records import build_record
from . import layers as _layers


def layer_record(layer: Any) -> dict[str, Any]:
    """The record to export with ``layer``: its CLIPSeg record (marked edited if it was), or a new one."""
    names = _layers.layer_class_names(layer)
    record = _layers.clipseg_meta(layer)
    if record is None:
        record = build_record(names, image={"name": None, "shape": list(np.shape(layer.data))})
    return {**record, "edited": _layers.is_edited(layer), "layer": layer.name}


def export_labels_layer(
    layer: Any,
    folder: str,
    suffix: str,
    confirm: Callable[[str], bool],
    instances: tuple[np.ndarray, list[int]] | None = None,
) -> list[Path]:
    """Write ``layer`` (and its instance layer's ids and classes) into ``folder`` (see
    :func:`napari_clipseg.io.masks.export_masks`).

    If files exist, ``confirm(question)`` decides; a "no" writes nothing and returns ``[]``.

    Raises:
        OSError, ValueError: the files could not be written (nothing half-written is left).
    """
    names = _layers.layer_class_names(layer)
    export = partial(
        export_masks, folder, np.asarray(layer.data), names, layer_record(layer), suffix=suffix, instances=instances
    )
    try:
        return export()
    except FileExistsError as e:
        if not confirm(f"{e}.\n\nOverwrite the existing files?"):
            return []
        return export(overwrite=True)


@dataclass(frozen=True)
class ExportOutcome:
    """What an export from the dock did: the files written, the folder chosen, what to tell the user."""

    paths: list[Path]
    folder: str = ""
    message: str = ""
    level: str = "info"


def export_interactively(
    layer: Any, instances: tuple[np.ndarray, list[int]] | None, suffix: str, widget: Any
) -> ExportOutcome:
    """Ask for a folder (from the last one), write ``layer``, and ask before replacing files."""
    from .settings import load_settings

    folder = widget.dialogs.ask_folder(widget.native, load_settings().export_folder)
    if not folder:
        return ExportOutcome([])
    try:
        confirm = partial(widget.dialogs.confirm, widget.native)
        paths = export_labels_layer(layer, folder, suffix, confirm, instances)
    except (OSError, ValueError) as e:
        return ExportOutcome([], message=f"Export failed: {e}", level="error")
    if not paths:
        return ExportOutcome([], message="Export cancelled: no file was changed.")
    return ExportOutcome(paths, str(folder), f"Exported {len(paths)} files to {folder}.")
