"""Image features on disk, keyed by content, so an image (or a tile) goes through the image tower once.

A key covers the model input pixels (the predictor's content signature) and what the features
depend on in the model: the base weights' identity, the precision the towers run at and the
decoder's input projections, which fine-tuning never changes; so one store serves the base
model and every decoder learnt over it. A :class:`~napari_clipseg.segmentation.predictor.ClipSegPredictor`
given a store reads it before it runs the tower and fills it after (pre-labelling a project keeps
every image's taps here, and re-predicting after a Learn is the decoder alone); fine-tuning reads
it too. Files are safetensors, written atomically; a damaged file is encoded again. The store
keeps to a byte budget: past it, the entries used least recently go first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write
from ..constants import INPUT_SIZE

if TYPE_CHECKING:
    from ..modeling.clipseg import ImageFeatures
    from ..segmentation.predictor import ClipSegPredictor

logger = logging.getLogger(__name__)

#: The default budget of a project's store: ~5,000 images (or tiles) of rd64 taps.
DEFAULT_STORE_BYTES = 2 << 30
SUFFIX = ".safetensors"


@dataclass(frozen=True)
class StoreStats:
    """What a store holds: entries, bytes on disk, its budget, and this session's hits and misses."""

    entries: int
    bytes: int
    budget: int
    hits: int
    misses: int

    def describe(self) -> str:
        return f"{self.entries} encoded images, {self.bytes / 2**20:.0f} MB of {self.budget / 2**20:.0f} MB"


def check_budget(budget: Any) -> int:
    """A store's budget in bytes (0 or more), or ValueError saying what came."""
    if isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0:
        raise ValueError(f"a feature store's budget must be 0 or more bytes; got {budget!r}")
    return int(budget)


def folder_usage(folder: str | os.PathLike) -> tuple[int, int]:
    """Entries and bytes of a store's folder, read without a model (a project's status)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0, 0
    sizes = [item.stat().st_size for item in os.scandir(folder) if item.name.endswith(SUFFIX) and item.is_file()]
    return len(sizes), sum(sizes)


class FeatureStore:
    """A folder of encoded images for one model (see the module docstring).

    Args:
        folder: Where the entries live (made when the first one is written).
        model: The model whose towers made (or make) the entries.
        budget: Bytes the folder may hold (None: :data:`DEFAULT_STORE_BYTES`).
    """

    def __init__(self, folder: str | os.PathLike, model: Any, *, budget: int | None = None) -> None:
        from ..modeling.decoder_files import base_identity

        self.folder = Path(folder)
        self.budget = DEFAULT_STORE_BYTES if budget is None else check_budget(budget)
        identity = {**base_identity(model), "precision": model.info.precision}  # int8 towers encode differently
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
        for tensor in model.decoder.reduces.state_dict().values():
            digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).data)
        self._model_key = digest.hexdigest()
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._index: dict[str, tuple[int, float]] | None = None  # file name -> (bytes, last used)
        self._aliases: dict[str, str] = {}  # source key -> model-input signature (this session)

    # --- by content signature (what the predictor uses) ------------------------------------------

    def path(self, signature: str) -> Path:
        key = hashlib.sha256((self._model_key + signature).encode()).hexdigest()[:40]
        return self.folder / f"{key}{SUFFIX}"

    def get(self, signature: str) -> ImageFeatures | None:
        """The features of the model input with this signature, or None (a damaged entry is removed)."""
        import safetensors

        from ..modeling.clipseg import ImageFeatures

        path = self.path(signature)
        try:
            with safetensors.safe_open(str(path), "pt") as f:
                grid = tuple(json.loads(f.metadata()["grid"]))
                reduced = [f.get_tensor(f"reduced_{i}") for i in range(len(f.keys()))]
        except FileNotFoundError:
            self.misses += 1
            return None
        except Exception as e:  # noqa: BLE001 - a damaged file is encoded again and replaced
            logger.warning("removing the damaged feature file %s (%s): it is encoded again", path, e)
            self._remove(path)
            self.misses += 1
            return None
        self.hits += 1
        self._touch(path)
        return ImageFeatures(reduced, grid)

    def put(self, signature: str, features: ImageFeatures) -> None:
        """Keep ``features`` (then evict the least recently used entries past the budget)."""
        import safetensors.torch

        if self.budget == 0:
            return
        tensors = {f"reduced_{i}": r.detach().cpu().contiguous() for i, r in enumerate(features.reduced)}
        meta = {"grid": json.dumps(list(features.grid))}
        path = self.path(signature)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=meta), True)
        with self._lock:
            index = self._loaded()
            index[path.name] = (path.stat().st_size, time.time())
        self._evict()

    def encode(self, predictor: ClipSegPredictor, image: np.ndarray) -> ImageFeatures:
        """The features of ``image``: from the folder when this model encoded it before, else encoded and kept."""
        from ..segmentation.predictor import pixel_signature
        from ..segmentation.transforms import to_model_input

        signature = pixel_signature(to_model_input(image, INPUT_SIZE, "cpu", predictor.percentiles))
        found = self.get(signature)
        if found is not None:
            return found
        (features,) = predictor.encode([image])
        self.put(signature, features)
        return features

    # --- source pixels -> signature (a re-prediction skips making the model input) -------------

    @staticmethod
    def source_key(image: Any, reading: Any) -> str | None:
        """A key of a plane or tile as read (its pixels, shape and dtype, and ``reading``: the
        intensity range, channels and percentiles); None for data that is not in memory."""
        if not isinstance(image, np.ndarray):
            return None
        digest = hashlib.blake2b(repr((image.shape, image.dtype.str, INPUT_SIZE, reading)).encode(), digest_size=20)
        digest.update(np.ascontiguousarray(image).data)
        return digest.hexdigest()

    def signature_of(self, source: str) -> str | None:
        return self._aliases.get(source)

    def remember(self, source: str, signature: str) -> None:
        if len(self._aliases) > 200_000:  # a bound on memory (about 30 MB); they are cheap to make again
            self._aliases.clear()
        self._aliases[source] = signature

    # --- the budget -------------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        with self._lock:
            index = self._loaded()
            return StoreStats(len(index), sum(size for size, _ in index.values()), self.budget, self.hits, self.misses)

    def _loaded(self) -> dict[str, tuple[int, float]]:
        """The index of the folder's entries (read once; kept up to date by this store's writes)."""
        if self._index is None:
            self._index = {}
            if self.folder.is_dir():
                for item in os.scandir(self.folder):
                    if item.name.endswith(SUFFIX) and item.is_file():
                        stat = item.stat()
                        self._index[item.name] = (stat.st_size, stat.st_mtime)
        return self._index

    def _touch(self, path: Path) -> None:
        """Mark ``path`` as just used (its modification time, so the order survives a restart)."""
        now = time.time()
        try:
            os.utime(path, (now, now))
        except OSError:
            return
        with self._lock:
            index = self._loaded()
            if path.name in index:
                index[path.name] = (index[path.name][0], now)

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        with self._lock:
            self._loaded().pop(path.name, None)

    def _evict(self) -> None:
        with self._lock:
            index = self._loaded()
            total = sum(size for size, _ in index.values())
            if total <= self.budget:
                return
            for name, (size, _) in sorted(index.items(), key=lambda item: item[1][1]):
                if total <= 0.9 * self.budget:  # a margin, so the next writes do not evict one by one
                    break
                (self.folder / name).unlink(missing_ok=True)
                del index[name]
                total -= size
