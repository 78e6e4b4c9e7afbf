"""Learn from corrections in the dock: the edited result layers become training pairs, and the
trained decoder is saved and used for the next runs (``napari_clipseg.learning.finetune``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io.records import class_names
from ..learning.finetune import TrainingPair
from . import layers as _layers

NOTHING_EDITED = (
    "Correct a result layer first (paint, fill or erase; at least two images or planes): "
    "the decoder learns from your corrections."
)


def _candidates(viewer: Any) -> list[tuple[Any, Any, dict]]:
    """Edited class layers made from text prompts whose image is still open (newest first)."""
    found = []
    for layer in reversed(list(viewer.layers)):
        record = _layers.clipseg_meta(layer)
        if record is None or layer.__class__.__name__ != "Labels" or layer.metadata.get(_layers.KIND_KEY):
            continue
        if record.get("example") or record.get("boxes") or not _layers.is_edited(layer):
            continue  # visual-prompt classes and box regions are not learnt here
        name = record.get("image", {}).get("name")
        if name in viewer.layers:
            found.append((layer, viewer.layers[name], record))
    return found


def collect_pairs(viewer: Any) -> tuple[list[TrainingPair], list[str]] | str:
    """Training pairs from the viewer, with their classes (those of the newest edited layer), or a message."""
    candidates = _candidates(viewer)
    if not candidates:
        return NOTHING_EDITED
    classes = class_names(candidates[0][2])
    pairs = []
    for layer, image, record in candidates:
        if class_names(record) != classes:
            continue
        labels, data = np.asarray(layer.data), _layers.layer_data(image, 0)
        changed = {tuple(region) for region in _layers.changed_regions(layer)}
        for plane in record.get("planes") or [[]]:
            if tuple(plane) not in changed:
                continue  # a plane nobody corrected would teach the model its own mistakes
            where = f" plane {list(plane)}" if plane else ""
            pairs.append(TrainingPair(np.asarray(data[tuple(plane)]), labels[tuple(plane)], f"{layer.name}{where}"))
    if len(pairs) < 2:
        return NOTHING_EDITED
    return pairs, classes


def decoder_note(record: dict[str, Any]) -> str:
    """`` Decoder: <name>.`` when a run used a fine-tuned decoder (the status says so), else ""."""
    decoder = (record.get("model") or {}).get("decoder")
    return f" Decoder: {decoder['name']}." if decoder else ""


def describe(pairs: list[TrainingPair], classes: list[str]) -> str:
    labelled = sum(int(np.count_nonzero(p.labels)) for p in pairs)
    return f"Learning {', '.join(classes)} from {len(pairs)} corrected images ({labelled:,} labelled pixels)…"


def offer_decoder(dialogs: Any, parent: Any, result: Any, use: Callable[[str], None]) -> tuple[str, str]:
    """Ask where to save the trained decoder; once saved, ``use(path)`` makes the next runs use it.
    A refused result (not better on the held-out images) is an outcome: said, nothing asked."""
    from ..modeling.decoder_files import save_decoder

    if not result.accepted:
        return f"{result.message} Nothing was saved.", "warning"
    gain = f"held-out IoU {result.base_iou:.2f} → {result.iou:.2f}"
    start = str(Path.home() / "clipseg-decoders" / "_".join(result.classes)[:40])
    folder = dialogs.choose_folder(parent, f"Save the decoder ({gain})", start)
    if not folder:
        return f"The decoder was not saved, so it is not used ({gain}).", "warning"
    try:
        save_decoder(result, folder)
    except FileExistsError:
        if not dialogs.confirm(parent, f"{folder} already holds a decoder. Replace it?"):
            return "Nothing was saved: the existing decoder is kept.", "info"
        save_decoder(result, folder, overwrite=True)
    use(folder)
    return f"Decoder saved to {folder} ({gain}); the next runs use it and say so in their records.", "info"
