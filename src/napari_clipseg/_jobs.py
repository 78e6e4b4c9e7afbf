"""The worker side of the widget: the model cache and the job generator run in a thread.

Qt-free apart from napari's progress class (used so downloads show in the activity dock).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .pipeline import Progress

if TYPE_CHECKING:
    from ._results import RunContext
    from .predictor import ClipSegPredictor

logger = logging.getLogger(__name__)


class JobError(Exception):
    """Carries a failure out of the worker thread.

    superqt treats a RuntimeError leaving a generator worker as "aborted thread": it only warns,
    and neither ``errored`` nor ``finished`` fire. Weights errors and torch's OOM are RuntimeErrors.
    """


class ModelRunner:
    """Keeps one loaded model (reloaded only when source, device or precision change) and runs jobs."""

    def __init__(self) -> None:
        from .planes import FeatureCache

        self.predictor: ClipSegPredictor | None = None
        self.key: tuple | None = None
        self.cache = FeatureCache()  # image features of the current model, for re-prompting

    def job(self, key: tuple, context: RunContext, threshold: float, min_size: int):
        """Worker-thread generator: load the model (once per key), run the core pipeline, and
        build the provenance record (hashing the weights file is slow: never on the main thread).

        Returns ``(SegmentationResult, record)``.
        """
        try:
            return (yield from self._steps(key, context, threshold, min_size))
        except Exception as e:
            raise JobError(str(e)) from e

    def _steps(self, key: tuple, context: RunContext, threshold: float, min_size: int):
        from napari.utils import progress as napari_progress

        from .export import provenance

        yield Progress(0, 1, "loading model" if key != self.key else "model ready")
        if key != self.key:
            from .predictor import ClipSegPredictor
            from .weights import load_model

            source, device, precision = key
            # downloads report to napari's activity dock
            model = load_model(source, device=device, dtype=precision, tqdm_class=napari_progress)
            self.predictor, self.key = ClipSegPredictor(model), key
            self.cache.clear()
        from .planes import iter_segment_nd

        data = context.data
        cache_key = (id(data), data.shape, str(data.dtype), repr(sorted(context.options.items())))
        segment = iter_segment_nd(
            data,
            context.prompts,
            self.predictor,
            rgb=context.rgb,
            planes=context.planes,
            threshold=threshold,
            min_size=min_size,
            cache=self.cache,
            cache_key=cache_key,
            **context.options,
        )
        while True:
            try:
                event = next(segment)
            except StopIteration as stop:
                result = stop.value
                break
            yield Progress(event.step + 1, event.total + 1, event.stage)
        record = provenance(
            self.predictor.model,
            image=context.image_name,
            prompts=context.names,
            planes=[list(i) for i in result.metadata["planes"]],
            mode=result.metadata["mode"],
            threshold=threshold,
            min_size=min_size,
            **context.record,
        )
        return result, record


def settle_heavy_imports() -> None:
    """Import torch and open_clip now, then run one full garbage collection.

    The imports add ~400k Python objects, after which a full (stop-the-world) collection takes
    ~250 ms. Done here, while opening the widget already pauses napari for the import, the
    collector has nothing pending when a run starts; otherwise it fires inside the first run and
    freezes the event loop from the worker thread. (gc.freeze would avoid it for good but would
    keep the user's deleted layers alive if they sit in reference cycles.)
    """
    import gc

    from . import predictor, weights  # noqa: F401 - torch, open_clip, safetensors

    gc.collect()


def describe_error(error: Exception, device: str) -> str:
    """A message a user can act on, for any failure in the worker."""
    from .planes import PlaneError
    from .weights import WeightsError

    if isinstance(error, JobError) and error.__cause__ is not None:
        error = error.__cause__
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return (
            f"Out of memory on '{device}': try a smaller image or crop, the CPU device, "
            "bfloat16 precision, or Tiling 'tiled'."
        )
    if isinstance(error, WeightsError | ValueError | FileNotFoundError | PlaneError):
        return str(error)
    logger.exception("CLIPSeg run failed", exc_info=error)
    return f"CLIPSeg failed ({type(error).__name__}): {error}"
