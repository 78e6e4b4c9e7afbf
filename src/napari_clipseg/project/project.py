"""The annotation loop on a folder of images: pre-label, review in the queue's order, verify, learn.

:func:`open_project` creates a project or reopens it (the same folder, the same prompts and model);
:class:`Project` is the loop engine over three small parts: the state (:mod:`.state`, an index
in memory of what the folder holds, so a click never reads every record), the model
(:mod:`.model`: the base weights loaded once, the current decoder, one store of taps) and the
Learn (:mod:`.learn`: bounded in time, warm-started, kept only when better). Pre-labelling is
the dataset machinery (:func:`~napari_clipseg.datasets.api.iter_segment_dataset`, so a dask
cluster works too), its taps kept in the project's store, so re-predicting after a Learn runs the
decoder alone. The ``iter_*`` methods are generators of
:class:`~napari_clipseg.segmentation.results.Progress` for GUIs; the plain ones run them to the end.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ProjectError
from ..io.inputs import InputFile
from ..io.outputs import output_record, read_output
from ..segmentation.model_spec import ModelSpec
from ..segmentation.options import SegmentOptions
from ..segmentation.postprocess import labels_from_probabilities
from ..segmentation.results import Progress, run
from .folder import ProjectFolder
from .learn import Learner
from .model import ProjectModel
from .score import review_score
from .sources import check_images, drop, still_there
from .state import ImageEntry, ProjectState, ShownPrelabel, Threshold, load_state, prelabelled

if TYPE_CHECKING:
    from ..datasets.report import BatchReport, Row
    from ..datasets.settings import ComputeSettings
    from ..learning.feature_store import StoreStats
    from .learn import LearnOutcome

#: Pre-labels remembered as shown (what ``verify`` diffs against), most recent last.
SHOWN = 8


class Project:
    """An annotation project (see the module docstring); made by :func:`open_project`.

    Attributes:
        folder: Where its state lives.
        prompts: The class prompts (label ``i`` is ``prompts[i - 1]``).
        spec: The base model; the current learnt decoder is applied over it.
        options: How images are segmented.
        read_only: Opened without the lock: reading works, changing raises ProjectError.
        auto_learn: Learn after every this many verified images (0: only when asked). In Python
            the Learn (and the re-prediction after it) runs in :meth:`next`; the dock runs it in
            the background.
        on_screen: The image an annotator has on screen: re-predictions leave it alone.
        stop: Set it from another thread to cancel the running pre-labelling or learning.
        last_learn: The :class:`~.learn.LearnOutcome` of the last Learn (None before one).
    """

    def __init__(
        self,
        folder: ProjectFolder,
        manifest: dict[str, Any],
        prompts: list[Any],
        spec: ModelSpec,
        options: SegmentOptions,
        *,
        read_only: bool = False,
        compute: ComputeSettings | None = None,
    ) -> None:
        self.folder, self.prompts, self.spec, self.options = folder, prompts, spec, options
        self.read_only, self.compute, self.auto_learn = read_only, compute, 0
        self.stop = threading.Event()
        self.on_screen: str | None = None
        self.last_learn: LearnOutcome | None = None
        self._lock = threading.RLock()  # the dock verifies while a worker re-predicts
        self._state: ProjectState = ProjectState(manifest)
        self._state = load_state(folder, manifest, self._score_of)
        self.model = ProjectModel(spec, folder.features, manifest.get("store_bytes"), self.stop)
        self._shown: OrderedDict[str, ShownPrelabel] = OrderedDict()
        self._failed: dict[str, str] = {}
        self._saved = 0.0  # when the manifest was last written (time.monotonic)
        self._learner = Learner(int(manifest.get("learnt_at") or 0))
        #: What was found at open about images that changed, moved or went missing, in words.
        self.notices: list[str] = check_images(self)

    # --- what the project holds -----------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return [p if isinstance(p, str) else p.label for p in self.prompts]

    @property
    def names(self) -> list[str]:
        return self._state.names

    @property
    def items(self) -> list[InputFile]:
        """The images, in file order (each with its ``name``)."""
        return [InputFile(Path(e.path), e.name) for e in self._state.entries.values()]

    @property
    def threshold(self) -> Threshold:
        """The threshold pre-labels are shown at (one, or one per class): the current decoder's
        choice, else the options'."""
        chosen = self._state.threshold
        value = chosen if chosen is not None else self.options.threshold
        return tuple(float(t) for t in value) if isinstance(value, tuple | list) else float(value)

    @property
    def decoder(self) -> Path | None:
        """The folder of the decoder in use (None: the base model's own)."""
        current = self._state.manifest.get("decoder")
        return self.folder.root / current if current else None

    @property
    def decoders(self) -> list[dict[str, Any]]:
        """Every decoder learnt, oldest first: folder, images learnt from, held-out IoU, threshold."""
        return [dict(d) for d in self._state.manifest.get("decoders", [])]

    def item(self, name: str) -> InputFile:
        entry = self._state.entry(name)
        return InputFile(Path(entry.path), entry.name)

    def entry(self, name: str) -> ImageEntry:
        """The state of one image (frozen; see :class:`~.state.ImageEntry`)."""
        return self._state.entry(name)

    def state(self, name: str) -> str:
        """``"new"``, ``"pre-labelled"``, ``"verified"`` or ``"skipped"``."""
        return self._state.entry(name).state

    def status(self) -> dict[str, int]:
        """How many images are in each state."""
        return self._state.status()

    def missing(self) -> list[str]:
        """Images whose file is gone (removed, renamed, moved): they wait, left out of the queue,
        learning and export, until their folder is given again or they are dropped (:meth:`drop`)."""
        return self._state.missing()

    def failed(self) -> dict[str, str]:
        """Images whose pre-labelling failed in this session, with why (they stay new)."""
        return dict(self._failed)

    def store_stats(self) -> StoreStats:
        """What the project's feature store holds (entries, bytes, budget)."""
        from ..learning.feature_store import DEFAULT_STORE_BYTES, StoreStats, folder_usage

        if self.model.loaded:
            return self.model.store().stats()
        entries, size = folder_usage(self.folder.features)
        return StoreStats(entries, size, self._state.manifest.get("store_bytes") or DEFAULT_STORE_BYTES, 0, 0)

    def queue(self) -> list[tuple[str, float]]:
        """Pre-labelled images still to review, most in need of review first, with their scores
        (the expected share of pixels to change: :mod:`.score`)."""
        scored = [(e.name, self._known_score(e)) for e in self._state.in_state("pre-labelled")]
        return sorted(scored, key=lambda pair: -pair[1])

    def score(self, name: str, *, remember: bool = True) -> float:  # remember: kept for older callers
        """The review score of a pre-labelled image (kept with its state)."""
        return self._known_score(self._state.entry(name))

    # --- the loop -------------------------------------------------------------------------------

    def next(self, after: str | None = None) -> str | None:
        """The next image to review: the top of the queue; None when every image is verified or
        skipped. New images are pre-labelled first, and a Learn that :attr:`auto_learn` says is
        due runs first (then the waiting images are re-predicted). ``after`` (the one on screen)
        is left out."""
        if not self.read_only:
            if self.learn_due:
                self.learn()
            if any(e.name not in self._failed for e in self._state.in_state("new")):
                self.prelabel()
        return self.top(after)

    def top(self, after: str | None = None) -> str | None:
        """The top of the queue other than ``after``, now (no pre-labelling, no Learn: a pass in memory)."""
        best, best_score = None, -1.0
        for entry in self._state.in_state("pre-labelled"):
            score = self._known_score(entry)
            if entry.name != after and score > best_score:
                best, best_score = entry.name, score
        return best

    def prelabels(self, name: str) -> np.ndarray:
        """The current pre-labels of ``name`` at :attr:`threshold`: ``(Y, X)`` or ``(Z, Y, X)``,
        0 = background. They are remembered as shown: :meth:`verify` counts the changes against
        them even if a re-prediction replaces them meanwhile."""
        probabilities = self.probabilities(name)
        with self._lock:
            entry = self._state.entry(name)
            labels = labels_from_probabilities(probabilities, self.threshold, min_size=self.options.min_size)
            model = (output_record(self.folder.prelabels / name) or {}).get("model")  # weights hash, decoder
            self._shown[name] = ShownPrelabel(entry.generation, labels, model)
            self._shown.move_to_end(name)
            while len(self._shown) > SHOWN:
                self._shown.popitem(last=False)
        return labels

    def probabilities(self, name: str) -> np.ndarray:
        """The pre-label probabilities of ``name``: ``(P, Y, X)`` or ``(P, Z, Y, X)``."""
        if self._state.entry(name).state == "new":
            self.prelabel([name])
            if name in self._failed:
                raise ProjectError(f"{name} cannot be pre-labelled: {self._failed[name]}")
        return np.asarray(read_output(self.folder.prelabels / name, "probabilities"))

    def verified_labels(self, name: str) -> np.ndarray:
        """The labels an annotator verified for ``name``."""
        if self.state(name) != "verified":
            raise ProjectError(f"{name} is not verified yet ({self.state(name)})")
        return np.asarray(read_output(self.folder.verified / name))

    def verify(self, name: str, labels: np.ndarray) -> int:
        """Store ``labels`` as the verified labels of ``name`` (replacing earlier ones); returns how
        many pixels differ from the pre-labels the annotator was shown (:meth:`prelabels`; made
        first when it has none), and records the model that made those.

        Raises:
            ProjectError: read-only, or labels that do not fit the image or the classes.
        """
        from .verify import verify

        self._writable()
        return verify(self, name, labels)

    def still_there(self, name: str) -> bool:
        """Whether the image file of ``name`` still holds the pixels its labels were made on (one
        ``stat``); if not, it is settled now (:mod:`.sources`: re-queued, or waiting as missing),
        said in :attr:`notices`, and False."""
        return still_there(self, name)

    def drop(self, name: str) -> None:
        """Take ``name`` out of the project for good: its pre-label removed, its verified labels (if
        any) kept in ``outdated/``, and never added again when its folder is searched anew.

        Raises:
            ProjectError: read-only; KeyError: no such image.
        """
        self._writable()
        drop(self, name)

    def skip(self, name: str) -> None:
        """Leave ``name`` out of the queue (and of learning and export) until it is verified."""
        self._writable()
        with self._lock:
            entry = self._state.entry(name)
            if entry.state != "verified":
                self._state.put(entry.replace(state="skipped", skipped=True))
            self._save()

    def iter_prelabel(
        self, names: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
    ) -> Generator[Progress, None, BatchReport | None]:
        """Pre-label what needs it: new images, and those whose pre-label another decoder made
        (stale after a Learn: the top of the queue first), or only ``names``; never verified or
        skipped ones, those in ``exclude`` or :attr:`on_screen`. Taps come from the project's
        store when pre-labelling encoded them before (re-predicting is the decoder alone)."""
        from .prelabel import iter_prelabel

        self._writable()
        self.stop.clear()  # a new job: an earlier Cancel is done
        return (yield from iter_prelabel(self, names, exclude))

    def prelabel(self, names: Sequence[str] | None = None, *, exclude: Sequence[str] = ()) -> BatchReport | None:
        """Run :meth:`iter_prelabel` to its end."""
        return run(self.iter_prelabel(names, exclude=exclude))

    @property
    def learn_due(self) -> bool:
        """Whether :attr:`auto_learn` asks for a Learn now (enough images verified since the last)."""
        return not self.read_only and self._learner.due(list(self._state.in_state("verified")), self.auto_learn)

    def iter_learn(self, **settings: Any) -> Generator[Progress, None, LearnOutcome]:
        """Learn from the verified images (:mod:`.learn`): warm-started from the current decoder,
        ``steps`` optimiser steps (settings: :class:`~napari_clipseg.learning.finetune.FineTuneSettings`
        fields; ``epochs=E`` asks for ``E`` passes instead), kept only when better than the current
        decoder on the newest verified images (``force=True``: kept anyway). A refused Learn keeps
        the current decoder and says so in its outcome; it raises nothing.

        Raises:
            ProjectError: fewer than two verified images, or example (visual) prompts.
        """
        self._writable()
        self.stop.clear()
        outcome = yield from self._learner.iter_learn(self, settings)
        self.last_learn = outcome
        return outcome

    def learn(self, *, repredict: bool = True, **settings: Any) -> float:
        """Learn (:meth:`iter_learn`), then re-predict the waiting images when the decoder changed;
        returns the held-out IoU of the decoder in use (:attr:`last_learn` says what happened)."""
        outcome = run(self.iter_learn(**settings))
        if repredict and outcome.accepted:
            self.prelabel()
        return float(outcome.iou if outcome.accepted else outcome.current_iou)

    def use_decoder(self, name: str | None) -> None:
        """Go back (or forward) to a decoder this project learnt: ``"001"`` (or ``"decoders/001"``),
        or None for the base model's; its threshold comes with it. The waiting images are then
        stale: :meth:`prelabel` re-predicts them (the decoder alone).

        Raises:
            ProjectError: read-only, or no such decoder.
        """
        from .learn import use_decoder

        self._writable()
        use_decoder(self, name)

    def export(
        self, out: str | os.PathLike, *, coco: bool = False, instances: bool = False, overwrite: bool = False
    ) -> Path:
        """Write the verified images as a training set (:func:`~napari_clipseg.project.export.export_project`)."""
        from .export import export_project

        return export_project(self, out, coco=coco, instances=instances, overwrite=overwrite)

    # --- the model ------------------------------------------------------------------------------

    def current_spec(self) -> ModelSpec:
        """The base model with the current learnt decoder (what cluster workers load)."""
        return self.spec.replace(decoder=str(self.decoder)) if self.decoder is not None else self.spec

    # --- helpers --------------------------------------------------------------------------------

    def _score_of(self, name: str) -> dict[str, Any]:
        """The review score of the pre-label on disk, at the current threshold."""
        threshold = self.threshold
        probabilities = np.asarray(read_output(self.folder.prelabels / name, "probabilities"))
        return {"score": review_score(probabilities, threshold), "score_threshold": threshold}

    def _prelabelled(self, row: Row) -> None:
        """Take one pre-labelled image (a report row) into the state."""
        with self._lock:
            entry = self._state.entry(row.name)
            if row.status == "failed":
                self._failed[row.name] = row.error or "failed"
                return
            self._failed.pop(row.name, None)
            if entry.state in ("verified", "skipped"):  # verified meanwhile (the dock): nothing to take
                return
            self._state.put(prelabelled(self.folder, entry, self._score_of))

    def _known_score(self, entry: ImageEntry) -> float:
        if entry.score is None and entry.state == "pre-labelled":
            with self._lock:
                entry = entry.replace(**self._score_of(entry.name))
                self._state.put(entry)
        return float(entry.score or 0.0)

    def _writable(self) -> None:
        if self.read_only:
            raise ProjectError(f"{self.folder.root} is open read-only here: nothing can be changed")

    def _save(self, every: float = 0.0) -> None:
        """Write the manifest (``every``: only when the last write is that many seconds old)."""
        now = time.monotonic()
        if not self.read_only and now - self._saved >= every:
            with self._lock:
                self.folder.write_manifest(self._state.to_manifest())
            self._saved = now

    def close(self) -> None:
        """Give the folder back (another window or process may open it then)."""
        self.model.forget()
        self.folder.unlock()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in self.status().items() if n)
        return f"Project({str(self.folder.root)!r}: {len(self.names)} images, {counts})"
