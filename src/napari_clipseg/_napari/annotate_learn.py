"""Learning in the Annotate mode: a Learn (then the re-prediction of the waiting images) as one job.

"Learn as I go" asks for a Learn after every verified image (the project's ``auto_learn``); one
that is due while another job runs starts when that job ends. A refused Learn is said once (a
notification), later ones only in the status line: the decoder simply stays. After a kept Learn the
waiting images are re-predicted, then the image on screen too when its pre-label is stale: its
new pre-label is shown only if the annotator has not touched the labels (``renewed`` decides), so
the image on screen is never a Learn behind and never loses a brush stroke.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .job_control import JobControl
from .jobs import reported

if TYPE_CHECKING:
    from ..project.project import Project


class LearnAsYouGo:
    """Starts the project's Learns as jobs of ``jobs``.

    Args:
        jobs: The Annotate mode's job controller (one job at a time).
        project: The open project (None: none).
        say: ``(message, level)``: notifications.
        status: The status line.
        counts: Refreshes the counts line.
        renewed: Gets the new pre-label of the image on screen (a ``PrelabelSnapshot``) after a kept Learn.
    """

    def __init__(
        self,
        jobs: JobControl,
        project: Callable[[], Project | None],
        say: Callable[[str, str], None],
        status: Callable[[str], None],
        counts: Callable[[], None],
        renewed: Callable[[Any], None],
    ) -> None:
        self._jobs, self._project, self._say, self._status, self._counts = jobs, project, say, status, counts
        self._renewed = renewed
        self.pending = False

    def start(self) -> None:
        """Learn now, then re-predict the waiting images if the decoder changed (never the one on screen)."""
        project = self._project()

        def learn_then_repredict() -> Any:
            outcome = yield from project.iter_learn()
            renewed = None
            if outcome.accepted:
                yield from project.iter_prelabel()  # leaves project.on_screen alone
                on_screen = project.on_screen
                renewed = (yield from project.iter_renew(on_screen)) if on_screen else None
            return outcome, renewed

        self.pending = False
        self._jobs.start(reported(learn_then_repredict), self._learnt, "Cancelled: the decoder stays as it was.")

    def if_due(self) -> None:
        """Start the Learn the project's ``auto_learn`` asks for, now or when the running job ends."""
        project = self._project()
        if project is None or not project.learn_due:
            return
        if self._jobs.is_running:
            self.pending = True
            return
        self.start()

    def _learnt(self, done: tuple[Any, Any]) -> None:
        outcome, renewed = done
        if renewed is not None:
            self._renewed(renewed)
        if outcome.accepted:
            self._say(f"{outcome.message} The others are re-predicted.", "info")
        elif not outcome.repeated:
            self._say(outcome.message, "info")
        else:
            self._status(outcome.message)
        self._counts()
        project = self._project()
        if self.pending and project is not None and project.learn_due:
            self.start()
