"""One pre-label as it was shown: generation, decoder, probabilities, record and labels read at once.

The probabilities and the record of ``prelabels/<name>/`` are read together under the state's
lock, under which pre-labelling swaps a new pre-label in (:mod:`.prelabel`), so labels are never
paired with another generation's provenance. They are thresholded at the threshold of the decoder
that made them (:meth:`~.state.ProjectState.threshold_of`), as pre-labelling wrote its
``labels.npy`` and as the queue scored it. :class:`ShownPrelabels` remembers the last few shown,
so that :mod:`.verify` diffs against what the annotator saw.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ProjectError
from ..io.outputs import output_record, read_output
from ..io.records import RECORD_NAME
from ..segmentation.postprocess import labels_from_probabilities
from .manifest import Threshold
from .reconcile import DAMAGE, prelabelled
from .state import ProjectState, record_time

#: Pre-labels remembered as shown (what ``verify`` diffs against), most recent last.
SHOWN = 8


class DamagedPrelabel(ProjectError):
    """A pre-label's files cannot be read (the project makes it again)."""


@dataclass(frozen=True)
class PrelabelSnapshot:
    """A pre-label as read once: its generation, the decoder that made it (None: the base's), the
    model it names (weights hash, decoder), its probabilities, threshold and labels."""

    name: str
    generation: int
    decoder: str | None
    model: dict[str, Any] | None
    probabilities: np.ndarray
    threshold: Threshold
    labels: np.ndarray


def read_snapshot(state: ProjectState, name: str, min_size: int = 0) -> PrelabelSnapshot:
    """The pre-label of ``name`` on disk now (see the module docstring); a newer one than the state
    knows (written by another process) is taken in first (its generation counts).

    Raises:
        DamagedPrelabel: it cannot be read.
    """
    folder = state.folder.prelabels / name
    with state.lock:  # pre-labels are swapped in under this lock (:mod:`.prelabel`): read whole
        stamp = record_time(folder / RECORD_NAME)
        try:
            record = output_record(folder) or {}
            probabilities = np.asarray(read_output(folder, "probabilities"))
        except DAMAGE as e:
            raise DamagedPrelabel(f"the pre-label of {name} cannot be read ({e})") from None
        entry = state.entry(name)
        if stamp != entry.prelabel_stamp and entry.state == "pre-labelled":
            entry = state.take_prelabel(prelabelled(state, entry))
    decoder = ((record.get("model") or {}).get("decoder") or {}).get("name")
    threshold = state.threshold_of(decoder)
    labels = labels_from_probabilities(probabilities, threshold, min_size=min_size)
    return PrelabelSnapshot(name, entry.generation, decoder, record.get("model"), probabilities, threshold, labels)


class ShownPrelabels:
    """The last :data:`SHOWN` snapshots shown to an annotator, by image name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shown: OrderedDict[str, PrelabelSnapshot] = OrderedDict()

    def remember(self, snapshot: PrelabelSnapshot) -> None:
        with self._lock:
            self._shown[snapshot.name] = snapshot
            self._shown.move_to_end(snapshot.name)
            while len(self._shown) > SHOWN:
                self._shown.popitem(last=False)

    def take(self, name: str) -> PrelabelSnapshot | None:
        """The snapshot shown for ``name`` (forgotten here: a verify uses it once)."""
        with self._lock:
            return self._shown.pop(name, None)

    def forget(self, name: str) -> None:
        self.take(name)
