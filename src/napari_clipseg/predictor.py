"""``ClipSegPredictor``: encode an image once, then answer many prompts cheaply.

``set_image`` runs the prompt-independent part (vision tower up to the deepest tap, decoder
projections) and caches it; ``predict`` runs only the text tower (cached per prompt) and the
decoder, batched over prompts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .constants import DEFAULT_PERCENTILES, INPUT_SIZE
from .modeling import ClipSeg, ImageFeatures
from .prompts import TextEmbeddingCache, clean_prompts
from .transforms import resize, to_model_input

#: Prompts decoded together; bounds memory for long prompt lists.
DECODE_BATCH = 16


class ClipSegPredictor:
    """Cached CLIPSeg inference on one image at a time.

    Args:
        model: A loaded :class:`~napari_clipseg.modeling.ClipSeg` (see ``load_model``).
        percentiles: Intensity percentiles for non-uint8 images (see ``transforms``).

    Example:
        >>> pred = ClipSegPredictor(model)
        >>> pred.set_image(image)  # (Y, X) or (Y, X, C), any dtype
        >>> probs = pred.predict(["cat", "dog"])  # (2, Y, X) float32 in [0, 1]
    """

    def __init__(self, model: ClipSeg, *, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> None:
        self.model = model.eval()
        self.percentiles = percentiles
        self.text_cache = TextEmbeddingCache()
        self._features: ImageFeatures | None = None
        self._image_shape: tuple[int, int] | None = None

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(Y, X)`` of the current image."""
        self._require_image()
        return self._image_shape

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """``inference_mode``, plus autocast when the model was loaded with a reduced precision."""
        with torch.inference_mode():
            dtype = self.model.autocast_dtype
            if dtype is None:
                yield
            else:
                with torch.autocast(self.model.device.type, dtype=dtype):
                    yield

    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` and cache its prompt-independent features.

        Args:
            image: ``(Y, X)`` grey or ``(Y, X, C)`` with 1-4 channels (RGB, RGBA, ...), any dtype
                (uint8 /255; others stretched between percentiles). Any size: it is resized to
                the model input and results are resized back.

        Raises:
            ValueError: unusable shape or an image smaller than 16x16.
        """
        pixels = to_model_input(np.asarray(image), INPUT_SIZE, self.model.device, self.percentiles)
        self.reset_image()
        with self.inference():
            self._features = self.model.encode_image(pixels)
        self._image_shape = tuple(np.asarray(image).shape[:2])

    def reset_image(self) -> None:
        """Forget the current image (exactly what :meth:`set_image` sets)."""
        self._features = None
        self._image_shape = None

    def _require_image(self) -> None:
        if self._features is None:
            raise RuntimeError("no image is set: call set_image(image) before predict(...)")

    def embed_prompts(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Conditional vectors ``(P, projection_dim)`` of text prompts (cached per string)."""
        with self.inference():
            return self.text_cache.embed(self.model, clean_prompts(prompts))

    def predict_logits(self, conditionals: torch.Tensor) -> torch.Tensor:
        """Logits ``(P, Y, X)`` in the image's frame for conditional vectors ``(P, D)``."""
        self._require_image()
        features = self._features
        maps = []
        with self.inference():
            for chunk in conditionals.split(DECODE_BATCH):
                logits = self.model.decoder.decode(features.reduced, chunk.to(features.reduced[0].dtype), features.grid)
                maps.append(resize(logits[:, None].float(), self._image_shape)[:, 0])
        return torch.cat(maps)

    def predict(self, prompts: str | Sequence[str]) -> np.ndarray:
        """Per-prompt probabilities for the current image.

        Args:
            prompts: One text or a list of texts (each becomes one map).

        Returns:
            ``(P, Y, X)`` float32 in [0, 1], in the image's frame.

        Raises:
            RuntimeError: no image was set.
            ValueError: no prompts, or an empty one.
        """
        self._require_image()
        logits = self.predict_logits(self.embed_prompts(prompts))
        with torch.inference_mode():
            return torch.sigmoid(logits).cpu().numpy()
