"""The worker side of the widget: the loaded model, and the job generator run in a thread.

Qt-free apart from napari's progress class (used so downloads show in the activity dock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..results import Progress, SegmentationResult, relay

if TYPE_CHECKING:
    from collections.abc import Generator

    from ..predictor import ClipSegPredictor
    from .result_layers import RunRequest

logger = logging.getLogger(__name__)


class JobError(Exception):
    """Carries a failure out of the worker thread.

    superqt treats a RuntimeError leaving a generator worker as "aborted thread": it only warns,
    and neither ``errored`` nor ``finished`` fire. Weights errors and torch's OOM are RuntimeErrors.
    """


@dataclass(frozen=True)
class ModelKey:
    """What identifies a loaded model: a change in any of these loads it again."""

    source: str
    device: str
    precision: str


class ModelRunner:
    """Keeps one loaded model and its predictor (with its feature cache) and runs jobs on it."""

    def __init__(self) -> None:
        self.predictor: ClipSegPredictor | None = None
        self.key: ModelKey | None = None

    def job(self, key: ModelKey, request: RunRequest) -> Generator[Progress, None, tuple[SegmentationResult, dict]]:
        """Worker-thread generator: load the model (once per key), run the core pipeline, and
        build the provenance record (hashing the weights file is slow: never on the main thread).

        Returns ``(SegmentationResult, record)``.
        """
        try:
            return (yield from self._steps(key, request))
        except Exception as e:
            raise JobError(str(e)) from e

    def _load(self, key: ModelKey) -> Generator[Progress, None, ClipSegPredictor]:
        yield Progress(0, 1, "loading model" if key != self.key else "model ready")
        if key != self.key:
            from napari.utils import progress as napari_progress

            from ..modeling.weights import load_model
            from ..predictor import ClipSegPredictor

            # downloads report to napari's activity dock
            model = load_model(key.source, device=key.device, dtype=key.precision, tqdm_class=napari_progress)
            self.predictor, self.key = ClipSegPredictor(model), key
        return self.predictor

    def _steps(self, key: ModelKey, request: RunRequest) -> Generator[Progress, None, tuple[SegmentationResult, dict]]:
        from ..pipeline import iter_segment
        from ..records import build_record

        predictor = yield from self._load(key)
        segment = iter_segment(request.data, request.prompts, predictor, request.options)
        result = yield from relay(segment, lambda e: Progress(e.step + 1, e.total + 1, e.stage))
        record = build_record(
            request.names,
            model=predictor.model,
            options=request.options,
            mode=result.mode,
            image={"name": request.image_name, "shape": list(request.data.shape)},
            planes=result.planes,
            example=request.example,
        )
        predictor.model.info.weights.sha256  # noqa: B018 - hash the weights here, in the worker
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

    from .. import predictor  # noqa: F401 - torch, open_clip
    from ..modeling import weights  # noqa: F401 - safetensors

    gc.collect()


def describe_error(error: BaseException, device: str) -> str:
    """A message a user can act on, for any failure in the worker."""
    from ..errors import PlaneError, RecordError, WeightsError

    if isinstance(error, JobError) and error.__cause__ is not None:
        error = error.__cause__
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return (
            f"Out of memory on '{device}': try a smaller image or crop, the CPU device, "
            "bfloat16 precision, or Tiling 'tiled'."
        )
    if isinstance(error, WeightsError | ValueError | TypeError | OSError | PlaneError | RecordError):
        return str(error)
    logger.exception("CLIPSeg run failed", exc_info=error)
    return f"CLIPSeg failed ({type(error).__name__}): {error}"


__all__ = ["JobError", "ModelKey", "ModelRunner", "describe_error", "settle_heavy_imports"]
