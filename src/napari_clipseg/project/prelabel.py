"""Pre-labelling a project: what needs it, in which order, in chunks that leave the image on screen alone.

New images come first (file order), then pre-labels another decoder made (stale after a Learn),
most in need of review first, so the top of the queue is fresh soonest. Each chunk of
:data:`CHUNK` images is one call of the dataset machinery
(:func:`~napari_clipseg.datasets.api.iter_segment_dataset`); between chunks the image on screen is
left out again and the state is saved every few seconds, so a long re-prediction never replaces
what an annotator is looking at, and a kill loses only bookkeeping (the files stay; the state is
reconciled from them at the next open).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from ..segmentation.results import Progress, relay

if TYPE_CHECKING:
    from ..datasets.report import BatchReport, Row

#: Images pre-labelled per call of the dataset machinery.
CHUNK = 8
#: Seconds between two saves of the manifest while pre-labelling (it holds every image's entry;
#: the folder stays the truth in between, and a kill is reconciled at the next open).
SAVE_EVERY = 5.0


def to_prelabel(project: Any, names: Sequence[str] | None, exclude: Sequence[str]) -> list[str]:
    """New images in file order, then pre-labels another decoder made, most in need of review first."""
    wanted = set(project.names if names is None else names) - set(exclude)
    current = project.decoder.name if project.decoder is not None else None
    new, stale = [], []
    for name in project.names:
        entry = project.entry(name)
        if name not in wanted or entry.state in ("verified", "skipped") or entry.missing:
            continue
        if entry.state == "new":
            new.append(name)
        elif entry.decoder != current:
            stale.append((-(entry.score or 0.0), name))
    return new + [name for _, name in sorted(stale)]


def iter_prelabel(
    project: Any, names: Sequence[str] | None, exclude: Sequence[str]
) -> Generator[Progress, None, BatchReport | None]:
    """Pre-label what :func:`to_prelabel` says, here in chunks or on the project's cluster."""
    from ..datasets.report import BatchReport

    started = time.perf_counter()
    todo = to_prelabel(project, names, exclude)
    if not todo:
        return None
    rows: list[Row] = []
    if project.compute is not None and project.compute.on_cluster:
        spec = project.current_spec()
        if spec.precision == "auto":  # chosen here, once: workers timing alone could choose another and redo all
            spec = spec.replace(precision=project.model.base().info.precision)
        rows = yield from _part(project, todo, spec, 0, len(todo))
    else:
        predictor = project.model.predictor(project.decoder)  # one text embedding for every chunk
        for start in range(0, len(todo), CHUNK):
            chunk = [n for n in todo[start : start + CHUNK] if n != project.on_screen and n not in exclude]
            if chunk:
                rows += yield from _part(project, chunk, predictor, start, len(todo))
    project._save()
    report = BatchReport(rows, project.folder.prelabels, time.perf_counter() - started)
    report.write()
    yield Progress(len(todo), len(todo), "done")  # the whole job, also when the image on screen was left out
    return report


def _part(project: Any, names: list[str], model: Any, done: int, total: int) -> Generator[Progress, None, list[Row]]:
    from ..datasets.api import iter_segment_dataset

    items = [project.item(name) for name in names]
    output = {"probabilities": True, "file_format": "npy"}
    events = iter_segment_dataset(
        items,
        project.prompts,
        project.folder.prelabels,
        model=model,
        options=project.options,
        compute=project.compute,
        **output,
    )

    def overall(event: Progress) -> Progress:
        return Progress(done + min(event.step, len(names)), total, event.stage)

    report = yield from relay(events, overall)
    for row in report.rows:
        project._prelabelled(row)
    project._save(every=SAVE_EVERY)
    return report.rows
