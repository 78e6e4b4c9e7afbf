"""Pre-labelling a project: what needs it, in which order, in chunks that leave the image on screen alone.

New images come first (file order), then pre-labels another decoder made (stale after a Learn),
most in need of review first, so the top of the queue is fresh soonest. Each chunk of
:data:`CHUNK` images is one call of the dataset machinery
(:func:`~napari_clipseg.datasets.api.iter_segment_dataset`); between chunks the image on screen is
left out again. Pre-labels are written into ``.staging/incoming/`` and each is swapped into
``prelabels/<name>`` under the state's lock when it is taken in, never while it is the image on
screen (:attr:`Prelabeller.on_screen`, set under the same lock when an image is chosen), so a
re-prediction never replaces what an annotator is looking at, and a pre-label is read whole
(:mod:`.snapshot`). Labels are written at the threshold of the decoder that makes them (the one
shown and scored); a decoder's pixel refiner, when it has one, refines them in the pipeline. A full
disk stops the job at once (every later image would fail the same way); every failed image is
named with its reason (:meth:`Prelabeller.failed`).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import threading
import time
import uuid
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import swap_in_folder
from ..io.inputs import InputFile
from ..segmentation.options import SegmentOptions
from ..segmentation.results import Progress, relay
from .model import ProjectModel
from .reconcile import DAMAGE, prelabelled
from .state import ProjectState

if TYPE_CHECKING:
    from ..datasets.report import BatchReport, Row
    from ..datasets.settings import ComputeSettings

#: Images pre-labelled per call of the dataset machinery.
CHUNK = 8
#: What a failed row says when the disk was full.
FULL_DISK = os.strerror(errno.ENOSPC)
#: Free bytes below which a failed write is taken for a full disk.
LOW_SPACE = 1 << 20


class Prelabeller:
    """Pre-labels a project's images with its model (see the module docstring).

    Attributes:
        on_screen: The image an annotator has on screen: re-predictions leave it alone.
    """

    def __init__(
        self,
        state: ProjectState,
        model: ProjectModel,
        prompts: list[Any],
        options: SegmentOptions,
        compute: ComputeSettings | None,
        stop: threading.Event,
    ) -> None:
        self.state, self.model, self.prompts, self.options = state, model, prompts, options
        self.compute, self.stop = compute, stop
        self.on_screen: str | None = None
        self._failed: dict[str, str] = {}

    def failed(self) -> dict[str, str]:
        """Images whose pre-labelling failed in this session, with why (they stay new)."""
        return dict(self._failed)

    def todo(self, names: Sequence[str] | None, exclude: Sequence[str]) -> list[str]:
        """New images in file order, then pre-labels another decoder made, most in need of review first."""
        wanted = set(self.state.names if names is None else names) - set(exclude)
        current = self.state.decoder
        new, stale = [], []
        for entry in self.state.entries():
            if entry.name not in wanted or entry.state in ("verified", "skipped") or entry.missing:
                continue
            if entry.state == "new":
                new.append(entry.name)
            elif entry.decoder != current:
                stale.append((-(entry.score or 0.0), entry.name))
        return new + [name for _, name in sorted(stale)]

    def iter_prelabel(
        self, names: Sequence[str] | None, exclude: Sequence[str]
    ) -> Generator[Progress, None, BatchReport | None]:
        """Pre-label what :meth:`todo` says, here in chunks or on the project's cluster."""
        from ..datasets.report import BatchReport

        started = time.perf_counter()
        todo = self.todo(names, exclude)
        if not todo:
            return None
        shutil.rmtree(self.incoming, ignore_errors=True)  # what a killed job left: made again
        rows: list[Row] = []
        if self.compute is not None and self.compute.on_cluster:
            spec = self.model.spec_with(self.state.decoder_path)
            if spec.precision == "auto":  # chosen here, once: workers timing alone could choose another and redo all
                spec = spec.replace(precision=self.model.base().info.precision)
            rows = yield from self._part(todo, spec, 0, len(todo))
        else:
            predictor = self.model.predictor(self.state.decoder_path)  # one text embedding for every chunk
            for start in range(0, len(todo), CHUNK):
                chunk = [n for n in todo[start : start + CHUNK] if n != self.on_screen and n not in exclude]
                if chunk:
                    rows += yield from self._part(chunk, predictor, start, len(todo))
                if any(row.error.startswith(FULL_DISK) for row in rows):
                    break  # every later image would fail the same way
        self.state.save()
        report = BatchReport(rows, self.state.folder.prelabels, time.perf_counter() - started)
        report.write()
        yield Progress(len(todo), len(todo), "done")  # the whole job, also when the image on screen was left out
        return report

    def iter_renew(self, name: str) -> Generator[Progress, None, bool]:
        """Pre-label ``name`` again with the decoder in use although it is on screen (for an annotator
        who has not touched its labels: the dock checks before it shows the new ones); whether it
        was (not when its pre-label is current, or it is verified, skipped or gone)."""
        entry = self.state.entry(name)
        if entry.state != "pre-labelled" or entry.missing or entry.decoder == self.state.decoder:
            return False
        rows = yield from self._part([name], self.model.predictor(self.state.decoder_path), 0, 1, renewing=name)
        self.state.save()
        return self.state.entry(name).decoder == self.state.decoder and rows[0].status != "failed"

    def _part(
        self, names: list[str], model: Any, done: int, total: int, renewing: str | None = None
    ) -> Generator[Progress, None, list[Row]]:
        from ..datasets.api import iter_segment_dataset

        items = [InputFile(Path(self.state.entry(n).path), n) for n in names]
        options = self.options.replace(threshold=self.state.threshold_of(self.state.decoder))
        events = iter_segment_dataset(
            items,
            self.prompts,
            self.incoming,
            model=model,
            options=options,
            compute=self.compute,
            probabilities=True,
            file_format="npy",
        )

        def overall(event: Progress) -> Progress:
            return Progress(done + min(event.step, len(names)), total, event.stage)

        report = yield from relay(events, overall)
        rows = [self._said(row) for row in report.rows]
        for row in rows:
            self._take(row, renewing)
        return rows

    def _said(self, row: Row) -> Row:
        """A failed row as a person reads it: a full disk named as such, whatever the writer said
        (numpy's "9216 requested and 8064 written" is a full disk too)."""
        if row.status != "failed" or row.error.startswith(FULL_DISK):
            return row
        try:
            full = (
                shutil.disk_usage(self.incoming if self.incoming.exists() else self.state.folder.root).free < LOW_SPACE
            )
        except OSError:
            full = False
        return dataclasses.replace(row, error=f"{FULL_DISK} ({row.error})") if full else row

    @property
    def incoming(self) -> Path:
        """Where pre-labels are written before they are taken in."""
        return self.state.folder.staging / "incoming"

    def choose(self, name: str | None) -> None:
        """``name`` is on screen now (chosen under the state's lock: no pre-label of it is swapped in after)."""
        with self.state.lock:
            self.on_screen = name

    def _take(self, row: Row, renewing: str | None = None) -> None:
        """Take one pre-labelled image (a report row) into the state: its folder swapped in,
        unless the annotator got there first (verified, skipped, or on screen: unless ``renewing`` it)."""
        if row.status == "failed":
            self._failed[row.name] = row.error or "failed"
            return
        self._failed.pop(row.name, None)
        staged, target = self.incoming / row.name, self.state.folder.prelabels / row.name
        with self.state.lock:
            entry = self.state.entry(row.name)
            on_screen = row.name == self.on_screen and entry.state != "new" and row.name != renewing
            taken = entry.state in ("verified", "skipped") or on_screen
            if taken or not staged.is_dir():
                shutil.rmtree(staged, ignore_errors=True)
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            swap_in_folder(staged, target, self.state.folder.staging / f"old-prelabel-{uuid.uuid4().hex}")
            try:
                self.state.take_prelabel(prelabelled(self.state, entry))
            except DAMAGE as e:  # written, then damaged or replaced under us: made again next time
                self._failed[row.name] = f"its pre-label cannot be read ({e})"
                self.state.forget_prelabel(row.name)
