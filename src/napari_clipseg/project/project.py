"""The annotation loop on a folder of images: pre-label, review in the queue's order, verify, learn.

:func:`open_project` creates a project or reopens it (the same folder, the same prompts and model);
:class:`Project` drives the loop. Pre-labelling is the dataset machinery
(:func:`~napari_clipseg.datasets.api.iter_segment_dataset`, so a dask cluster works too), learning
is decoder fine-tuning (:mod:`napari_clipseg.learning`), and every piece of state lives in the
project folder (:mod:`.folder`). The ``iter_*`` methods are generators of
:class:`~napari_clipseg.segmentation.results.Progress` for GUIs; the plain ones run them to the end.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ProjectError, RecordError
from ..io.inputs import InputFile
from ..io.outputs import output_record, read_output, write_output_folder
from ..io.records import build_record
from ..segmentation.model_spec import ModelSpec
from ..segmentation.options import SegmentOptions
from ..segmentation.postprocess import labels_from_probabilities
from ..segmentation.results import Progress, run
from .folder import STATES, ProjectFolder
from .score import review_score

if TYPE_CHECKING:
    from ..datasets.report import BatchReport
    from ..datasets.settings import ComputeSettings
    from ..learning.finetune import FineTuneResult
    from ..modeling.clipseg import ClipSeg


class Project:
    """An annotation project (see the module docstring); made by :func:`open_project`.

    Attributes:
        folder: Where its state lives.
        items: The images, in file order (each with its ``name``).
        prompts: The class prompts (label ``i`` is ``prompts[i - 1]``).
        spec: The base model; the current learnt decoder is applied over it.
        options: How images are segmented.
        read_only: Opened without the lock: reading works, changing raises ProjectError.
        stop: Set it from another thread to cancel the running pre-labelling or learning.
    """

    def __init__(
        self,
        folder: ProjectFolder,
        items: list[InputFile],
        prompts: list[Any],
        spec: ModelSpec,
        options: SegmentOptions,
        manifest: dict[str, Any],
        *,
        read_only: bool = False,
        compute: ComputeSettings | None = None,
    ) -> None:
        self.folder, self.items, self.prompts, self.spec, self.options = folder, items, prompts, spec, options
        self.read_only, self.compute = read_only, compute
        self.stop = threading.Event()
        self._manifest = manifest
        self._lock = threading.RLock()  # the dock verifies while a worker re-predicts
        self._base: ClipSeg | None = None
        self._tuned: tuple[str, ClipSeg] | None = None

    # --- what the project holds -----------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return [p if isinstance(p, str) else p.label for p in self.prompts]

    @property
    def names(self) -> list[str]:
        return [item.name for item in self.items]

    @property
    def threshold(self) -> float:
        """The threshold pre-labels are shown at: the current decoder's choice, else the options'."""
        return float(self._manifest.get("threshold") or self.options.threshold)

    @property
    def decoder(self) -> Path | None:
        """The folder of the decoder learnt last (None: the base model's own)."""
        current = self._manifest.get("decoder")
        return self.folder.root / current if current else None

    @property
    def decoders(self) -> list[dict[str, Any]]:
        """Every decoder learnt, oldest first: folder, images learnt from, held-out IoU, threshold."""
        return [dict(d) for d in self._manifest.get("decoders", [])]

    def item(self, name: str) -> InputFile:
        for item in self.items:
            if item.name == name:
                return item
        raise KeyError(f"no image named {name!r} in this project (e.g. {', '.join(self.names[:3])})")

    def state(self, name: str) -> str:
        """``"new"``, ``"pre-labelled"``, ``"verified"`` or ``"skipped"`` (read from the folder)."""
        self.item(name)
        if _complete(self.folder.verified / name):
            return "verified"
        if name in self._manifest.get("skipped", []):
            return "skipped"
        return "pre-labelled" if _complete(self.folder.prelabels / name) else "new"

    def status(self) -> dict[str, int]:
        """How many images are in each state."""
        counts = dict.fromkeys(STATES, 0)
        for name in self.names:
            counts[self.state(name)] += 1
        return counts

    def queue(self) -> list[tuple[str, float]]:
        """Pre-labelled images still to review, most in need of review first, with their scores
        (the expected share of pixels to change: :mod:`.score`)."""
        waiting = [name for name in self.names if self.state(name) == "pre-labelled"]
        before = dict(self._manifest.get("scores", {}))
        scored = [(name, self.score(name, remember=False)) for name in waiting]
        if self._manifest.get("scores") != before and not self.read_only:
            with self._lock:
                self._save()  # the new scores, once for the whole queue
        return sorted(scored, key=lambda pair: -pair[1])

    def score(self, name: str, *, remember: bool = True) -> float:
        """The review score of a pre-labelled image (kept in the manifest per pre-label and threshold)."""
        record = output_record(self.folder.prelabels / name) or {}
        key = [record.get("batch", {}).get("key"), self.threshold]
        known = self._manifest.setdefault("scores", {}).get(name)
        if not isinstance(known, dict) or known.get("key") != key:
            probabilities = np.asarray(read_output(self.folder.prelabels / name, "probabilities"))
            known = {"key": key, "score": review_score(probabilities, self.threshold)}
            with self._lock:
                self._manifest["scores"][name] = known
                if remember and not self.read_only:
                    self._save()
        return float(known["score"])

    # --- the loop -------------------------------------------------------------------------------

    def next(self, after: str | None = None) -> str | None:
        """The next image to review: the top of the queue (pre-labelling what is new first);
        None when every image is verified or skipped. ``after`` is left out (the one on screen)."""
        if any(self.state(name) == "new" for name in self.names):
            self.prelabel()
        return next((name for name, _ in self.queue() if name != after), None)

    def prelabels(self, name: str) -> np.ndarray:
        """The current pre-labels of ``name`` at :attr:`threshold`: ``(Y, X)`` or ``(Z, Y, X)``, 0 = background."""
        probabilities = self.probabilities(name)
        thresholds = self.threshold if np.ndim(self.options.threshold) == 0 else self.options.threshold
        return labels_from_probabilities(probabilities, thresholds, min_size=self.options.min_size)

    def probabilities(self, name: str) -> np.ndarray:
        """The pre-label probabilities of ``name``: ``(P, Y, X)`` or ``(P, Z, Y, X)``."""
        if not _complete(self.folder.prelabels / name):
            self.prelabel([name])
        return np.asarray(read_output(self.folder.prelabels / name, "probabilities"))

    def verified_labels(self, name: str) -> np.ndarray:
        """The labels an annotator verified for ``name``."""
        if self.state(name) != "verified":
            raise ProjectError(f"{name} is not verified yet ({self.state(name)})")
        return np.asarray(read_output(self.folder.verified / name))

    def verify(self, name: str, labels: np.ndarray) -> int:
        """Store ``labels`` as the verified labels of ``name`` (replacing earlier ones); returns how
        many pixels differ from its pre-labels (made first when it has none).

        Raises:
            ProjectError: read-only, or labels that do not fit the image or the classes.
        """
        self._writable()
        item = self.item(name)
        before = self.prelabels(name)  # the shape the labels must have, and what they changed
        labels = self._checked_labels(name, labels, before.shape)
        changed = int(np.count_nonzero(before != labels))
        entry = {"status": "verified", "changed": changed, "decoder": self._manifest.get("decoder")}
        made_by = (output_record(self.folder.prelabels / name) or {}).get("model")  # weights hash, decoder
        record = build_record(
            self.classes,
            model=made_by,
            options=self.options,
            image={"name": str(item.path), "shape": list(labels.shape)},
            edited=changed > 0,
            project={**entry, "threshold": self.threshold},
        )
        with self._lock:
            folder = self.folder.verified / name
            write_output_folder(folder, {"labels": labels}, record, file_format="tif", staging=self.folder.staging)
            skipped = self._manifest.get("skipped", [])
            self._manifest["skipped"] = [n for n in skipped if n != name]
            self._save()
        return changed

    def skip(self, name: str) -> None:
        """Leave ``name`` out of the queue (and of learning and export) until it is verified."""
        self._writable()
        with self._lock:
            skipped = self._manifest.setdefault("skipped", [])
            if name not in skipped and self.state(name) != "verified":
                skipped.append(name)
            self._save()

    def iter_prelabel(
        self, names: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
    ) -> Generator[Progress, None, BatchReport | None]:
        """Pre-label the images not verified or skipped (or only ``names``), never those in ``exclude``
        (the one on screen); finished pre-labels made with the current model are kept."""
        from ..datasets.api import iter_segment_dataset

        self._writable()
        self.stop.clear()  # a new job: an earlier Cancel is done
        wanted = set(self.names if names is None else names) - set(exclude)
        todo = [i for i in self.items if i.name in wanted and self.state(i.name) not in ("verified", "skipped")]
        if not todo:
            return None
        on_cluster = self.compute is not None and self.compute.on_cluster
        model = self.current_spec() if on_cluster else self._predictor()
        output = {"probabilities": True, "file_format": "npy"}
        prelabels, options, compute = self.folder.prelabels, self.options, self.compute
        events = iter_segment_dataset(
            todo, self.prompts, prelabels, model=model, options=options, compute=compute, **output
        )
        return (yield from events)

    def prelabel(self, names: Sequence[str] | None = None, *, exclude: Sequence[str] = ()) -> BatchReport | None:
        """Run :meth:`iter_prelabel` to its end."""
        return run(self.iter_prelabel(names, exclude=exclude))

    def iter_learn(self, **settings: Any) -> Generator[Progress, None, FineTuneResult]:
        """Fine-tune the decoder on every verified image (settings: :class:`FineTuneSettings`
        fields), keep it as the project's decoder with the threshold chosen on the held-out images.

        Raises:
            ProjectError: fewer than two verified images, or example (visual) prompts.
            TrainingRefusedError: the new decoder is not better than the base on the held-out images.
        """
        from ..learning.finetune import iter_finetune
        from ..modeling.decoder_files import save_decoder
        from ..segmentation.predictor import ClipSegPredictor

        self._writable()
        self.stop.clear()
        if not all(isinstance(p, str) for p in self.prompts):
            raise ProjectError("learning from corrections needs text prompts (this project has an example prompt)")
        pairs, names = self._training_pairs()
        if len(pairs) < 2:
            raise ProjectError(f"verify at least 2 images before learning ({len(pairs)} verified)")
        predictor = ClipSegPredictor(self._base_model(), cache_bytes=0)
        predictor.stop = self.stop
        result = yield from iter_finetune(predictor, pairs, self.classes, cache_dir=self.folder.features, **settings)
        with self._lock:
            number = len(self._manifest.get("decoders", [])) + 1
            relative = f"decoders/{number:03d}"
            save_decoder(result, self.folder.root / relative, overwrite=True)
            entry = {"folder": relative, "images": names, "iou": result.iou, "base_iou": result.base_iou}
            self._manifest.setdefault("decoders", []).append({**entry, "threshold": result.threshold})
            self._manifest.update(decoder=relative, threshold=result.threshold)
            self._save()
        return result

    def learn(self, *, repredict: bool = True, **settings: Any) -> float:
        """Learn from the verified images (:meth:`iter_learn`), then re-predict the others;
        returns the new decoder's held-out IoU."""
        result = run(self.iter_learn(**settings))
        if repredict:
            self.prelabel()
        return float(result.iou)

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

    def _base_model(self) -> ClipSeg:
        if self._base is None:
            self._base = self.spec.load(stop=self.stop)
        return self._base

    def _current_model(self) -> ClipSeg:
        base, current = self._base_model(), self.decoder
        if current is None:
            return base
        if self._tuned is None or self._tuned[0] != str(current):
            from ..modeling.decoder_files import apply_decoder

            model = base.with_decoder(copy.deepcopy(base.decoder))
            self._tuned = (str(current), apply_decoder(model, current))
        return self._tuned[1]

    def _predictor(self) -> Any:
        from ..segmentation.predictor import ClipSegPredictor

        predictor = ClipSegPredictor(self._current_model(), cache_bytes=0)
        predictor.stop = self.stop
        return predictor

    # --- helpers --------------------------------------------------------------------------------

    def _training_pairs(self) -> tuple[list[Any], list[str]]:
        from ..io.inputs import open_image
        from ..learning.training_data import image_pairs

        pairs, names = [], []
        for name in self.names:
            if self.state(name) == "verified":
                image = np.asarray(open_image(self.item(name).path).data)
                pairs += image_pairs(image, self.verified_labels(name), name)
                names.append(name)
        return pairs, names

    def _checked_labels(self, name: str, labels: Any, shape: tuple[int, ...]) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "biu":
            raise ProjectError(f"{name}: labels must be integers (0 = background); got {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() > len(self.classes)):
            raise ProjectError(
                f"{name}: label values must lie in 0..{len(self.classes)} ({', '.join(self.classes)}); "
                f"got {labels.min()}..{labels.max()}"
            )
        if tuple(labels.shape) != tuple(shape):
            raise ProjectError(f"{name}: labels of shape {labels.shape} do not fit the image ({shape})")
        return labels.astype(np.uint8 if len(self.classes) < 256 else np.uint16)

    def _writable(self) -> None:
        if self.read_only:
            raise ProjectError(f"{self.folder.root} is open read-only here: nothing can be changed")

    def _save(self) -> None:
        self.folder.write_manifest(self._manifest)

    def close(self) -> None:
        """Give the folder back (another window or process may open it then)."""
        self.folder.unlock()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in self.status().items() if n)
        return f"Project({str(self.folder.root)!r}: {len(self.items)} images, {counts})"


def _complete(folder: Path) -> bool:
    """Whether ``folder`` is a complete output folder (all its files present)."""
    try:
        return output_record(folder) is not None
    except RecordError:
        return False
