"""Verifying an image: the annotator's labels stored with what they were drawn on.

The labels are diffed against the pre-label the annotator was shown (:mod:`.snapshot`, never one a
re-prediction wrote meanwhile), refused if the image file changed since (:mod:`.sources`), and
written with a record naming the model, the decoder and the threshold of that pre-label and the
image's pin, flushed to the disk before the image counts as verified. A verified folder whose
record cannot be read is kept aside, never replaced.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ProjectError, RecordError
from ..io.outputs import output_record, write_output_folder
from ..io.records import RECORD_NAME, build_record
from ..segmentation.options import SegmentOptions
from .snapshot import PrelabelSnapshot, ShownPrelabels
from .sources import Sources
from .state import ProjectState

logger = logging.getLogger(__name__)


def checked_labels(name: str, labels: Any, shape: tuple[int, ...], classes: list[str]) -> np.ndarray:
    """An annotator's labels for ``name`` as stored (uint8, or uint16 past 255 classes).

    Raises:
        ProjectError: not integers, values outside ``0..len(classes)``, or another shape than ``shape``.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu":
        raise ProjectError(f"{name}: labels must be integers (0 = background); got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > len(classes)):
        raise ProjectError(
            f"{name}: label values must lie in 0..{len(classes)} ({', '.join(classes)}); "
            f"got {labels.min()}..{labels.max()}"
        )
    if tuple(labels.shape) != tuple(shape):
        raise ProjectError(f"{name}: labels of shape {labels.shape} do not fit the image ({shape})")
    return labels.astype(np.uint8 if len(classes) < 256 else np.uint16)


class Verifier:
    """Stores verified labels (see the module docstring).

    Args:
        state: The project's state (its folder, its transactions).
        sources: The image files' checks.
        shown: The pre-labels shown to the annotator.
        show: Shows the pre-label of an image that was not shown yet (and remembers it in ``shown``).
        classes: The class names, in label order.
        options: How images are segmented (recorded).
    """

    def __init__(
        self,
        state: ProjectState,
        sources: Sources,
        shown: ShownPrelabels,
        show: Callable[[str], PrelabelSnapshot],
        classes: list[str],
        options: SegmentOptions,
    ) -> None:
        self.state, self.sources, self.shown, self.show = state, sources, shown, show
        self.classes, self.options = classes, options

    def verify(self, name: str, labels: np.ndarray) -> int:
        """Store ``labels`` for ``name``; returns the pixels that differ from the pre-label shown."""
        entry = self.state.entry(name)
        shown = self.shown.take(name)
        if shown is None:
            self.show(name)
            shown = self.shown.take(name)
        labels = checked_labels(name, labels, shown.labels.shape, self.classes)
        if not self.sources.still_there(name):
            raise ProjectError(f"{self.sources.notices[-1]}; nothing was stored for it")
        source = self.state.entry(name).source  # the pixels the labels were drawn on
        changed = int(np.count_nonzero(shown.labels != labels))
        threshold = list(shown.threshold) if isinstance(shown.threshold, tuple) else shown.threshold
        record = build_record(
            self.classes,
            model=shown.model,
            options=self.options.replace(threshold=shown.threshold),
            image={
                "name": str(entry.path),
                "shape": list(labels.shape),
                **({"source": source.to_dict()} if source is not None else {}),
            },
            edited=changed > 0,
            project={
                "status": "verified",
                "name": name,
                "changed": changed,
                "decoder": shown.decoder,
                "generation": shown.generation,
                "threshold": threshold,
            },
        )
        folder = self.state.folder
        with self.state.lock:
            place = folder.verified / name
            self._keep_if_damaged(name)
            write_output_folder(
                place, {"labels": labels}, record, file_format="tif", staging=folder.staging, durable=True
            )
            self.state.commit_verify(name, changed, os.stat(place / RECORD_NAME).st_mtime_ns)
        return changed

    def _keep_if_damaged(self, name: str) -> None:
        """Before verified labels are replaced: a folder whose record cannot be read (edited by
        hand, damaged by the disk) may hold the only copy of the labels; it is put aside, never deleted."""
        folder = self.state.folder
        try:
            output_record(folder.verified / name)
        except (RecordError, OSError):
            why = f"{name}: its record could not be read when it was verified again"
            aside = folder.put_aside(folder.verified / name, name, why)
            logger.warning("the verified folder of %s was damaged: kept in %s", name, aside)
