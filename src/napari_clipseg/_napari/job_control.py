"""One background job at a time for the dock: run it in a worker thread, show progress, cancel it.

A job is a generator of :class:`~napari_clipseg.segmentation.results.Progress` that returns its result (a run,
a folder pre-label); it runs in napari's ``thread_worker`` so the UI never waits for the model.
``NAPARI_CLIPSEG_SYNC=1`` runs jobs inline (debugging).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

from ..errors import is_cancellation
from ..segmentation.results import Progress, run
from .jobs import ModelRunner, describe_error

SYNC = os.environ.get("NAPARI_CLIPSEG_SYNC", "").lower() in ("1", "true", "yes")


class JobSlot:
    """The dock's one job at a time: its modes' JobControls share one slot, so a Learn in the
    Annotate mode and a Run in the Segment mode never compete for the cores."""

    def __init__(self) -> None:
        self.holder: JobControl | None = None


class JobControl:
    """Starts jobs, routes their progress to a progress bar and status, and stops them on Cancel.

    Args:
        runner: The model runner whose jobs run (asked to stop on Cancel).
        buttons: ``(run, cancel)``: disabled / enabled while a job runs.
        progress: The progress bar.
        say: ``(message, level)``: the dock's status line and napari notifications.
        status: Sets the status line only (progress, "Cancelling…").
        device: The chosen device (error messages name it).
        slot: The dock's :class:`JobSlot` (shared by its modes); a new one when None.
    """

    def __init__(
        self,
        runner: ModelRunner,
        buttons: tuple[Any, Any],
        progress: Any,
        say: Callable[[str, str], None],
        status: Callable[[str], None],
        device: Callable[[], str],
        slot: JobSlot | None = None,
    ) -> None:
        self.runner = runner
        self.slot = slot or JobSlot()
        self._buttons, self._progress, self._say, self._status, self._device = buttons, progress, say, status, device
        self._worker: Any = None
        self._cancelled_text = ""

    @property
    def is_running(self) -> bool:
        """Whether a job of the dock runs (this controller's, or another mode's)."""
        return self.slot.holder is not None

    def refuse_while_running(self) -> bool:
        """Whether a job runs (then the user is told to wait or cancel)."""
        if self.is_running:
            where = "" if self.slot.holder is self else " in the other mode"
            self._say(f"A CLIPSeg run is already in progress{where}: wait for it or press Cancel.", "warning")
        return self.is_running

    def start(self, job: Callable[[], Any], on_result: Callable[[Any], None], cancelled_text: str) -> None:
        """Run ``job()`` in a worker thread; ``on_result`` gets its result on the main thread."""
        self._cancelled_text = cancelled_text
        self._set_running(True)
        if SYNC:
            try:
                on_result(run(job(), self._on_progress))
            except Exception as e:  # noqa: BLE001 - reported like the worker's errored signal
                self._on_error(e)
            finally:
                self._set_running(False)
            return
        from napari.qt.threading import create_worker

        worker = create_worker(job, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(on_result)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_cancelled)
        worker.finished.connect(partial(self._finished, worker))
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        """Stop the running job: inside the image tower after its current block, else at its next step."""
        if self._worker is not None:
            self.runner.request_stop()
            self._worker.quit()
            self._status("Cancelling…")

    def _finished(self, worker: Any) -> None:
        """A worker ended; a job that its result started (re-predicting after Learn) keeps running."""
        if self._worker is worker:
            self._set_running(False)

    def _set_running(self, running: bool) -> None:
        if running:
            self.slot.holder = self
        else:
            self._worker = None
            if self.slot.holder is self:
                self.slot.holder = None
        run_btn, cancel_btn = self._buttons
        run_btn.enabled, cancel_btn.enabled = not running, running
        if running:
            self._progress.value = 0

    def _on_progress(self, event: Progress) -> None:
        self._progress.max = max(event.total, 1)
        self._progress.value = event.step
        self._status(f"{event.stage}…" if event.step < event.total else "done")

    def _on_cancelled(self) -> None:
        self._progress.max, self._progress.value = 1, 0  # nothing completed
        self._say(self._cancelled_text, "info")

    def _on_error(self, error: Exception) -> None:
        if is_cancellation(error):
            self._on_cancelled()
            return
        self._progress.value = 0
        self._say(describe_error(error, self._device()), "error")
