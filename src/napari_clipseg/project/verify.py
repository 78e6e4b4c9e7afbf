"""Verifying an image: the annotator's labels stored with what they were drawn on.

The labels are diffed against the pre-label the annotator was shown (never one a re-prediction
wrote meanwhile), refused if the image file changed since (:mod:`.sources`), and written with a
record naming the model that made the pre-label and the image's pin, flushed to the disk before
the image counts as verified. A verified folder whose record cannot be read is kept aside, never
replaced.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ProjectError
from ..io.outputs import write_output_folder
from ..io.records import RECORD_NAME, build_record
from .sources import keep_if_damaged
from .state import checked_labels


def verify(project: Any, name: str, labels: np.ndarray) -> int:
    """See :meth:`~.project.Project.verify`."""
    item = project.item(name)
    with project._lock:
        shown = project._shown.pop(name, None)
    if shown is None:
        project.prelabels(name)
        with project._lock:
            shown = project._shown.pop(name)
    labels = checked_labels(name, labels, shown.labels.shape, project.classes)
    if not project.still_there(name):
        raise ProjectError(f"{project.notices[-1]}; nothing was stored for it")
    source = project.entry(name).source  # the pixels the labels were drawn on
    pinned = {"source": source.to_dict()} if source is not None else {}
    changed = int(np.count_nonzero(shown.labels != labels))
    decoder = ((shown.model or {}).get("decoder") or {}).get("name")
    entry = {
        "status": "verified",
        "name": name,
        "changed": changed,
        "decoder": decoder,
        "generation": shown.generation,
    }
    record = build_record(
        project.classes,
        model=shown.model,
        options=project.options,
        image={"name": str(item.path), "shape": list(labels.shape), **pinned},
        edited=changed > 0,
        project={**entry, "threshold": project.threshold},
    )
    with project._lock:
        folder = project.folder.verified / name
        keep_if_damaged(folder, project.folder.root, name)
        write_output_folder(
            folder, {"labels": labels}, record, file_format="tif", staging=project.folder.staging, durable=True
        )
        was = project._state.entry(name)
        stamp = os.stat(folder / RECORD_NAME).st_mtime_ns
        project._state.put(was.replace(state="verified", skipped=False, changed=changed, stamp=stamp))
        if was.skipped:
            project._save()
    return changed
