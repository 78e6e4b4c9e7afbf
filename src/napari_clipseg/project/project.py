"""The annotation loop on a folder of images: pre-label, review in the queue's order, verify, learn.

:func:`~.open.open_project` creates a project or reopens it; :class:`Project` is a facade over the
loop's parts, each a small object built with the narrow collaborators it needs:

- :class:`~.state.ProjectState`: the typed manifest and one entry per image, and the only writer
  of both (its transactions, each persisted under its lock);
- :class:`~.sources.Sources`: the image files, pinned, followed, dropped;
- :class:`~.queue.ReviewQueue`: the order of review;
- :class:`~.prelabel.Prelabeller`: pre-labelling and re-predicting (the dataset machinery, so a
  dask cluster works too; taps kept in the project's store, so re-predicting is the decoder alone);
- :class:`~.snapshot.ShownPrelabels` and :class:`~.verify.Verifier`: what the annotator saw, and
  their labels stored against it;
- :class:`~.learn.Learner`: the Learn, bounded in time, kept only when better;
- :class:`~.model.ProjectModel`: the base weights loaded once, the current decoder over them.

The ``iter_*`` methods are generators of :class:`~napari_clipseg.segmentation.results.Progress`
for GUIs; the plain ones run them to the end.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ProjectError
from ..io.inputs import InputFile
from ..io.outputs import read_output
from ..segmentation.model_spec import ModelSpec
from ..segmentation.options import SegmentOptions
from ..segmentation.results import Progress, run
from .learn import Learner, find_decoder
from .manifest import Threshold
from .model import ProjectModel
from .prelabel import Prelabeller
from .queue import ReviewQueue
from .refine import PixelLearner
from .snapshot import DamagedPrelabel, PrelabelSnapshot, ShownPrelabels, read_snapshot
from .sources import Sources
from .state import ImageEntry, ProjectState
from .verify import Verifier

if TYPE_CHECKING:
    from ..datasets.report import BatchReport
    from ..datasets.settings import ComputeSettings
    from ..learning.feature_store import StoreStats
    from .folder import ProjectFolder
    from .learn import LearnOutcome


class ProjectView:
    """What an annotation project holds, read (:class:`Project` adds the loop's actions).

    Attributes:
        folder, prompts, spec, options: Where its state lives; the class prompts (label ``i`` is
            ``prompts[i - 1]``); the base model; how images are segmented.
        read_only: Opened without the lock: reading works, changing raises ProjectError.
        auto_learn: Learn after every this many verified images (0: only when asked); in Python
            in :meth:`next`, in the dock in the background.
        stop: Set it from another thread to cancel the running pre-labelling or learning.
        last_learn: The :class:`~.learn.LearnOutcome` of the last Learn (None before one).
        repairs: What a read-only opening found to repair and left as it was, in words.
    """

    def __init__(
        self,
        state: ProjectState,
        prompts: list[Any],
        spec: ModelSpec,
        options: SegmentOptions,
        *,
        compute: ComputeSettings | None = None,
        repairs: Sequence[str] = (),
    ) -> None:
        self._state, self.prompts, self.spec, self.options = state, prompts, spec, options
        self.folder: ProjectFolder = state.folder
        self.read_only, self.auto_learn, self.stop = state.read_only, 0, threading.Event()
        self.last_learn: LearnOutcome | None = None
        self.repairs = list(repairs)
        self.model = ProjectModel(spec, self.folder.features, state.manifest.store_bytes, self.stop)
        self.sources = Sources(state)
        self.review = ReviewQueue(state)
        self.prelabeller = Prelabeller(state, self.model, prompts, options, compute, self.stop)
        self.sources.check_all()

    # --- what the project holds -----------------------------------------------------------------

    classes = property(lambda self: [p if isinstance(p, str) else p.label for p in self.prompts])
    names = property(lambda self: self._state.names, doc="The images' names, in file order.")
    items = property(lambda self: [InputFile(Path(e.path), e.name) for e in self._state.entries()])
    notices = property(lambda self: self.sources.notices, doc="What was found about images that changed, in words.")
    compute = property(lambda self: self.prelabeller.compute)
    on_screen = property(
        lambda self: self.prelabeller.on_screen,
        lambda self, name: self.prelabeller.choose(name),
        doc="The image an annotator has on screen: re-predictions leave it alone from the moment it is set.",
    )
    decoder = property(
        lambda self: self._state.decoder_path, doc="The folder of the decoder in use (None: the base's)."
    )
    decoders = property(lambda self: [d.to_dict() for d in self._state.manifest.decoders], doc="Every decoder learnt.")

    @property
    def refined(self) -> bool:
        """Whether the decoder in use keeps a pixel refiner (its maps are calibrated: a fixed threshold)."""
        record = self._state.manifest.record(self._state.decoder)
        return record is not None and record.refiner

    @property
    def threshold(self) -> Threshold:
        """The threshold of the decoder in use (one, or one per class)."""
        return self._state.threshold_of(self._state.decoder)

    def item(self, name: str) -> InputFile:
        return InputFile(Path(self._state.entry(name).path), name)

    def entry(self, name: str) -> ImageEntry:
        return self._state.entry(name)

    def state(self, name: str) -> str:
        """``"new"``, ``"pre-labelled"``, ``"verified"`` or ``"skipped"``."""
        return self._state.entry(name).state

    def status(self) -> dict[str, int]:
        return self._state.status()

    def missing(self) -> list[str]:
        """Images whose file is gone: they wait until found again or dropped (:meth:`drop`)."""
        return self._state.missing()

    def failed(self) -> dict[str, str]:
        return self.prelabeller.failed()

    def store_stats(self) -> StoreStats:
        from ..learning.feature_store import DEFAULT_STORE_BYTES, StoreStats, folder_usage

        if self.model.loaded:
            return self.model.store().stats()
        entries, size = folder_usage(self.folder.features)
        return StoreStats(entries, size, self._state.manifest.store_bytes or DEFAULT_STORE_BYTES, 0, 0)

    def queue(self) -> list[tuple[str, float]]:
        """Pre-labelled images still to review, most in need first, with their scores (:mod:`.score`)."""
        return self.review.scores()

    def score(self, name: str) -> float:
        return self.review.score_of(self._state.entry(name))

    def top(self, after: str | None = None) -> str | None:
        return self.review.top(after)

    def still_there(self, name: str) -> bool:
        return self.sources.still_there(name)

    def verified_labels(self, name: str) -> np.ndarray:
        if self.state(name) != "verified":
            raise ProjectError(f"{name} is not verified yet ({self.state(name)})")
        return np.asarray(read_output(self.folder.verified / name))

    def export(self, out: str | os.PathLike, **options: Any) -> Path:
        """Write the verified set as training data (:func:`~.export.export_project`)."""
        from .export import export_project

        return export_project(self, out, **options)

    def current_spec(self) -> ModelSpec:
        return self.model.spec_with(self.decoder)

    def close(self) -> None:
        """Give the folder back (another window or process may open it then), its state saved."""
        self._state.save()
        self.model.forget()
        self.folder.unlock()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in self.status().items() if n)
        return f"Project({str(self.folder.root)!r}: {len(self.names)} images, {counts})"


class Project(ProjectView):
    """An annotation project (see the module docstring and :class:`ProjectView`); made by
    :func:`~.open.open_project`."""

    def __init__(self, state: ProjectState, prompts: list[Any], spec: ModelSpec, options: SegmentOptions, **kw: Any):
        super().__init__(state, prompts, spec, options, **kw)
        self.shown = ShownPrelabels()
        self.verifier = Verifier(state, self.sources, self.shown, self.prelabels, self.classes, options)
        pixels = PixelLearner(self.model, options, self.classes, self.verified_labels, self.stop)
        self.learner = Learner(state, self.model, self.sources, prompts, options, self.stop, pixels)

    learn_due = property(
        lambda self: not self.read_only and self.learner.due(self.auto_learn),
        doc="Whether :attr:`auto_learn` asks for a Learn now (enough images verified since the last).",
    )

    # --- the loop -------------------------------------------------------------------------------

    def next(self, after: str | None = None) -> str | None:
        """The top of the queue other than ``after``, after a Learn that is due and the new images'
        pre-labels; None when every image is verified or skipped."""
        if not self.read_only:
            if self.learn_due:
                self.learn()
            if any(e.name not in self.failed() for e in self._state.in_state("new")):
                self.prelabel()
        return self.top(after)

    def prelabels(self, name: str) -> np.ndarray:
        """The pre-labels of ``name`` at its decoder's threshold, remembered as shown (what
        :meth:`verify` counts changes against); a damaged one is made again."""
        self._prelabelled_now(name)
        try:
            snapshot = read_snapshot(self._state, name, self.options.min_size)
        except DamagedPrelabel as e:
            if self.read_only:
                raise ProjectError(f"{e}: open the project for writing to make it again") from None
            self._state.forget_prelabel(name)
            self._prelabelled_now(name)
            snapshot = read_snapshot(self._state, name, self.options.min_size)
        self.shown.remember(snapshot)
        return snapshot.labels

    def iter_renew(self, name: str) -> Generator[Progress, None, PrelabelSnapshot | None]:
        """The pre-label of ``name`` made again by the decoder in use although it is on screen, read
        whole; :meth:`show` it once the annotator's labels are known untouched (else the one shown
        stays what a verify counts against). None when its pre-label is current, or it was verified."""
        self._writable()
        if not (yield from self.prelabeller.iter_renew(name)):
            return None
        return read_snapshot(self._state, name, self.options.min_size)

    def show(self, snapshot: PrelabelSnapshot) -> np.ndarray:
        """``snapshot`` is on screen now (what :meth:`verify` counts changes against); its labels."""
        self.shown.remember(snapshot)
        return snapshot.labels

    def probabilities(self, name: str) -> np.ndarray:
        self._prelabelled_now(name)
        return np.asarray(read_output(self.folder.prelabels / name, "probabilities"))

    def verify(self, name: str, labels: np.ndarray) -> int:
        """Store ``labels`` as verified; returns the pixels changed against the pre-label shown."""
        self._writable()
        return self.verifier.verify(name, labels)

    def drop(self, name: str) -> None:
        self._writable()
        self.sources.drop(name)
        self.shown.forget(name)

    def skip(self, name: str) -> None:
        self._writable()
        self._state.skip(name)

    def iter_prelabel(
        self, names: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
    ) -> Generator[Progress, None, BatchReport | None]:
        self._writable()
        self.stop.clear()  # a new job: an earlier Cancel is done
        return (yield from self.prelabeller.iter_prelabel(names, exclude))

    def prelabel(self, names: Sequence[str] | None = None, *, exclude: Sequence[str] = ()) -> BatchReport | None:
        return run(self.iter_prelabel(names, exclude=exclude))

    def iter_learn(self, **settings: Any) -> Generator[Progress, None, LearnOutcome]:
        """A Learn (:mod:`.learn`); a refusal is an outcome. Raises ProjectError when it cannot run."""
        self._writable()
        self.stop.clear()
        self.last_learn = yield from self.learner.iter_learn(settings)
        return self.last_learn

    def learn(self, *, repredict: bool = True, **settings: Any) -> float:
        """Learn, then re-predict when the decoder changed; the held-out IoU of the decoder in use."""
        outcome = run(self.iter_learn(**settings))
        if repredict and outcome.accepted:
            self.prelabel()
        return float(outcome.iou if outcome.accepted else outcome.current_iou)

    def set_threshold(self, threshold: Threshold) -> None:
        """Pre-label at ``threshold`` with the decoder in use from now on: shown, scored and recorded
        at it. Refused for a decoder with a pixel refiner (its maps are calibrated: 0.5)."""
        from ..segmentation.options import check_threshold
        from .state import REFINED_THRESHOLD

        self._writable()
        if self.refined:
            raise ProjectError(
                f"this decoder has a pixel refiner: its maps are calibrated, the threshold stays {REFINED_THRESHOLD}"
            )
        self._state.set_threshold(self._state.decoder, check_threshold(threshold, len(self.classes)))

    def use_decoder(self, name: str | None) -> None:
        """Use the decoder ``name`` (``001``; None: the base model's); re-predict with :meth:`prelabel`."""
        self._writable()
        self._state.use_decoder(find_decoder(self._state, name))

    def _prelabelled_now(self, name: str) -> None:
        if self._state.entry(name).state == "new":
            self.prelabel([name])
            if name in self.failed():
                raise ProjectError(f"{name} cannot be pre-labelled: {self.failed()[name]}")

    def _writable(self) -> None:
        if self.read_only:
            raise ProjectError(f"{self.folder.root} is open read-only here: nothing can be changed")
