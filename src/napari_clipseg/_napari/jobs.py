"""The worker side of the widget: the loaded model, and the job generator run in a thread.

Qt-free apart from napari's progress class (used so downloads show in the activity dock).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from ..segmentation.results import Progress, relay

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from ..datasets.report import BatchReport
    from ..segmentation.model_spec import ModelSpec
    from ..segmentation.predictor import ClipSegPredictor
    from .result_layers import Piece, RunRequest

logger = logging.getLogger(__name__)


class JobError(Exception):
    """Carries a failure out of the worker thread.

    superqt treats a RuntimeError leaving a generator worker as "aborted thread": it only warns,
    and neither ``errored`` nor ``finished`` fire. Weights errors and torch's OOM are RuntimeErrors.
    """


def reported(job: Callable[[], Generator]) -> Callable[[], Generator]:
    """``job`` whose failures leave the worker as a :class:`JobError` (superqt only warns about a
    RuntimeError, and the job would never finish: the panel would stay "running")."""

    def run() -> Generator:
        try:
            return (yield from job())
        except Exception as e:
            raise JobError(str(e)) from e

    return run


class ModelRunner:
    """Keeps one loaded model and its predictor (with its feature cache) and runs jobs on it."""

    def __init__(self) -> None:
        self.predictor: ClipSegPredictor | None = None
        self.key: ModelSpec | None = None
        self._base: tuple[ModelSpec, Any] | None = None  # the base model held (a decoder goes on a copy)
        self._stop_load = threading.Event()
        self._model_lock = threading.Lock()

    def request_stop(self) -> None:
        """Stop the running job soon: inside the image tower after its current block, while loading
        a model between two tensors, else at its next step."""
        self._stop_load.set()
        if self.predictor is not None:
            self.predictor.stop.set()

    def model(self, key: ModelSpec, stop: threading.Event) -> Any:
        """The model of ``key``: the one held when it is the same spec, else loaded and held (the
        Annotate mode's project loads through this, so one model serves both modes)."""
        from ..segmentation.results import run

        with self._model_lock:
            return run(self._load(key, stop)).model

    def job(self, key: ModelSpec, request: RunRequest) -> Generator[Progress, None, tuple[list[Piece], dict]]:
        """Worker-thread generator: load the model (once per key), run the core pipeline, and
        build the provenance record (hashing the weights file is slow: never on the main thread).

        Returns ``(pieces, record)``: the result(s) and where they go, and the record.
        """
        return (yield from self._with_model(key, lambda predictor: self._steps(predictor, request)))

    def batch_job(
        self, key: ModelSpec, inputs: list[str], out_dir: str, settings: dict
    ) -> Generator[Progress, None, BatchReport]:
        """Worker-thread generator: pre-label ``inputs`` into ``out_dir`` with the loaded model
        (:func:`napari_clipseg.datasets.api.iter_segment_dataset` with ``settings``); returns the report."""
        from ..datasets.api import iter_segment_dataset

        def work(predictor: ClipSegPredictor) -> Generator[Progress, None, BatchReport]:
            events = iter_segment_dataset(inputs, out_dir=out_dir, model=predictor, **settings)
            return (yield from relay(events, _after_load))

        return (yield from self._with_model(key, work))

    def finetune_job(self, key: ModelSpec, pairs: list, classes: list[str]) -> Generator[Progress, None, Any]:
        """Worker-thread generator: train a decoder on ``pairs`` with the loaded model (which is
        not changed); returns the :class:`~napari_clipseg.learning.finetune.FineTuneResult`."""
        from ..learning.finetune import iter_finetune

        return (yield from self._with_model(key, lambda predictor: iter_finetune(predictor, pairs, classes)))

    def _with_model(self, key: ModelSpec, work: Callable[[ClipSegPredictor], Generator]) -> Generator:
        """Load the model (once per key), then run ``work(predictor)``; a Cancel pressed while the
        model loaded stops here, and every failure leaves the worker as a :class:`JobError`."""
        from ..errors import RunCancelled

        def steps() -> Generator:
            self._stop_load.clear()
            predictor = yield from self._load(key)
            predictor.stop.clear()
            if self._stop_load.is_set():  # Cancel pressed while the model loaded
                raise RunCancelled("stopped on request")
            return (yield from work(predictor))

        return (yield from reported(steps)())

    def _load(self, key: ModelSpec, stop: threading.Event | None = None) -> Generator[Progress, None, ClipSegPredictor]:
        """The predictor of ``key``, loaded when another spec is held (``stop``: the flag a Cancel
        sets; the runner's own by default). Specs are compared with their paths and device resolved (a
        relative or linked path is the model a project names by its absolute path), and another decoder on
        the base held is put on it without reading the towers again (a project's learnt decoder in
        the Segment mode)."""
        from ..modeling.runtime import resolve_device
        from ..segmentation.model_spec import with_decoder_folder

        key = key.absolute().replace(device=str(resolve_device(key.device)))  # "auto" is this machine's device
        stop = stop or self._stop_load
        yield Progress(0, 1, "loading model" if key != self.key else "model ready")
        if key != self.key or self.predictor is None:
            from napari.utils import progress as napari_progress

            from ..segmentation.predictor import ClipSegPredictor

            base = key.replace(decoder=None)
            if self._base is None or self._base[0] != base:
                model = base.load(tqdm_class=napari_progress, stop=stop)  # downloads show in the activity dock
                model.info.weights.digest(stop)  # the record's hash, here where Cancel reaches it
                self._base = (base, model)
            model = self._base[1] if key.decoder is None else with_decoder_folder(self._base[1], key.decoder)
            self.predictor, self.key = ClipSegPredictor(model), key
        return self.predictor

    def _steps(
        self, predictor: ClipSegPredictor, request: RunRequest
    ) -> Generator[Progress, None, tuple[list[Piece], dict]]:
        from ..io.records import build_record, extend_record
        from ..segmentation.pipeline import iter_segment
        from ..segmentation.regions import iter_segment_boxes
        from .result_layers import Piece

        if request.boxes is None:
            segment = iter_segment(request.data, request.prompts, predictor, request.options)
            pieces = [Piece((yield from relay(segment, _after_load)))]
        else:
            boxes = iter_segment_boxes(request.data, request.boxes, request.prompts, predictor, request.options)
            parts = yield from relay(boxes, _after_load)
            pieces = [Piece(p.result, (*p.plane, slice(p.box[0], p.box[1]), slice(p.box[2], p.box[3]))) for p in parts]
        first = pieces[0].result
        record = build_record(
            request.names,
            model=predictor.model,
            options=request.options,
            mode=first.mode,
            image={"name": request.image_name, "shape": list(request.data.shape)},
            planes=first.planes if request.boxes is None else request.options.planes,
            example=request.example,
        )
        if request.boxes is not None:
            record = extend_record(record, boxes=[list(p.box) for p in parts])
        return pieces, record


def _after_load(event: Progress) -> Progress:
    """A job's progress counted after the model load, which was step 0."""
    return Progress(event.step + 1, event.total + 1, event.stage)


def settle_heavy_imports() -> None:
    """Import torch and open_clip now, then run one full garbage collection.

    The imports add ~400k Python objects, after which a full (stop-the-world) collection takes
    ~250 ms. Done here, while opening the widget already pauses napari for the import, the
    collector has nothing pending when a run starts; otherwise it fires inside the first run and
    freezes the event loop from the worker thread. (gc.freeze would avoid it for good but would
    keep the user's deleted layers alive if they sit in reference cycles.)
    """
    import gc

    from .._gl_guard import guard_triton

    guard_triton()  # napari may have drawn since this module was imported (see _gl_guard)
    from ..modeling import weights  # noqa: F401 - safetensors
    from ..segmentation import predictor  # noqa: F401 - torch, open_clip

    gc.collect()


def describe_error(error: BaseException, device: str) -> str:
    """A message a user can act on, for any failure in the worker."""
    from ..errors import PlaneError, RecordError, WeightsError

    if isinstance(error, JobError) and error.__cause__ is not None:
        error = error.__cause__
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return f"Out of memory on '{device}': try a smaller image or crop, the CPU device, or Tiling 'tiled'."
    if isinstance(error, WeightsError | ValueError | TypeError | OSError | PlaneError | RecordError):
        return str(error)
    logger.exception("CLIPSeg run failed", exc_info=error)
    return f"CLIPSeg failed ({type(error).__name__}): {error}"


__all__ = ["JobError", "ModelRunner", "describe_error", "settle_heavy_imports"]
