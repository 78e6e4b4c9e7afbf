"""Image features on disk, keyed by content, so training images are encoded once across runs.

A key covers the model input pixels (the predictor's content signature) and what the features
depend on in the model: the base weights' identity, the precision the towers run at and the
decoder's input projections. Files are safetensors, written atomically; a damaged file is
encoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write
from ..constants import INPUT_SIZE

if TYPE_CHECKING:
    from ..segmentation.predictor import ClipSegPredictor


class FeatureStore:
    """A folder of encoded images for one model (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, model: Any) -> None:
        from ..modeling.decoder_files import base_identity

        self.folder = Path(folder)
        identity = {**base_identity(model), "precision": model.info.precision}  # int8 towers encode differently
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
        for tensor in model.decoder.reduces.state_dict().values():
            digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).data)
        self._model_key = digest.hexdigest()
        self.hits = 0

    def encode(self, predictor: ClipSegPredictor, image: np.ndarray) -> Any:
        """The features of ``image``: from the folder when this model encoded it before, else encoded and kept."""
        import safetensors.torch

        from ..modeling.clipseg import ImageFeatures
        from ..segmentation.predictor import pixel_signature
        from ..segmentation.transforms import to_model_input

        pixels = to_model_input(image, INPUT_SIZE, "cpu", predictor.percentiles)
        key = hashlib.sha256((self._model_key + pixel_signature(pixels)).encode()).hexdigest()[:40]
        path = self.folder / f"{key}.safetensors"
        if path.is_file():
            try:
                with safetensors.safe_open(str(path), "pt") as f:
                    grid = tuple(json.loads(f.metadata()["grid"]))
                    reduced = [f.get_tensor(f"reduced_{i}") for i in range(len(f.keys()))]
                self.hits += 1
                return ImageFeatures(reduced, grid)
            except Exception:  # noqa: BLE001 - a damaged file is encoded again and replaced
                path.unlink(missing_ok=True)
        (features,) = predictor.encode([image])
        tensors = {f"reduced_{i}": r.detach().cpu().contiguous() for i, r in enumerate(features.reduced)}
        meta = {"grid": json.dumps(list(features.grid))}
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=meta), True)
        return features
