"""``ClipSegPredictor``: encode an image once, then answer many prompts cheaply.

``set_image`` runs the prompt-independent part (vision tower up to the deepest tap, decoder
projections) and caches it; ``predict`` runs only the text tower (cached per prompt) and the
decoder, batched over prompts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from .constants import DEFAULT_PERCENTILES, INPUT_SIZE
from .modeling import ClipSeg, ImageFeatures
from .prompts import Prompts, TextEmbeddingCache, clean_prompts
from .transforms import resize, to_model_input
from .visual import VisualPrompt, support_pixels

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
        self._image: np.ndarray | None = None  # for visual prompts drawn on the current image

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

    def encode(
        self,
        images: list[np.ndarray],
        value_range: tuple[float, float] | str | None = "auto",
        channels: tuple[int, ...] | None = None,
    ) -> list[ImageFeatures]:
        """Prompt-independent features of several 2D images, in one backbone batch (no state kept).

        Args:
            images: Planes or tiles, each as accepted by :meth:`set_image`.
            value_range: Intensity range shared by all of them (see ``transforms.intensity_range``);
                ``"auto"`` computes it per image.
            channels: Channels to use as R, G, B (see ``transforms.select_channels``).
        """
        pixels = torch.cat(
            [
                to_model_input(np.asarray(i), INPUT_SIZE, self.model.device, self.percentiles, value_range, channels)
                for i in images
            ]
        )
        with self.inference():
            batch = self.model.encode_image(pixels)
        return [ImageFeatures([r[i : i + 1] for r in batch.reduced], batch.grid) for i in range(len(images))]

    def decode(self, features: ImageFeatures, conditionals: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Logits ``(P, *shape)`` float32 for cached ``features`` and conditionals ``(P, D)``."""
        maps = []
        with self.inference():
            for chunk in conditionals.split(DECODE_BATCH):
                logits = self.model.decoder.decode(features.reduced, chunk.to(features.reduced[0].dtype), features.grid)
                maps.append(resize(logits[:, None].float(), shape)[:, 0])
        return torch.cat(maps)

    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` and cache its prompt-independent features.

        Args:
            image: ``(Y, X)`` grey or ``(Y, X, C)`` with 1-4 channels (RGB, RGBA, ...), any dtype
                (uint8 /255; others stretched between percentiles). Any size: it is resized to
                the model input and results are resized back.

        Raises:
            ValueError: unusable shape or an image smaller than 16x16.
        """
        image = np.asarray(image)
        (features,) = self.encode([image])  # raises before anything changes
        self._features, self._image, self._image_shape = features, image, tuple(image.shape[:2])

    def reset_image(self) -> None:
        """Forget the current image (exactly what :meth:`set_image` sets)."""
        self._features = None
        self._image_shape = None
        self._image = None

    def _require_image(self) -> None:
        if self._features is None:
            raise RuntimeError("no image is set: call set_image(image) before predict(...)")

    def embed_prompts(self, prompts: Prompts) -> torch.Tensor:
        """Conditional vectors ``(P, projection_dim)``, float32, one per prompt.

        Texts are encoded in one batch and cached per string. A :class:`VisualPrompt` costs one
        image-tower pass per support region; several regions are averaged, and a text given with
        it is mixed in as ``weight * visual + (1 - weight) * text``.
        """
        items = clean_prompts(prompts)
        texts = [p for p in items if isinstance(p, str)]
        texts += [p.text for p in items if isinstance(p, VisualPrompt) and p.text is not None and p.weight < 1]
        with self.inference():
            unique = list(dict.fromkeys(texts))
            text = dict(zip(unique, self.text_cache.embed(self.model, unique), strict=True)) if unique else {}
            return torch.stack([text[p] if isinstance(p, str) else self._visual_conditional(p, text) for p in items])

    def _visual_conditional(self, prompt: VisualPrompt, text: dict[str, torch.Tensor]) -> torch.Tensor:
        images = prompt.images(self._image)
        supports = torch.stack(
            [
                support_pixels(image, mask, prompt.mode, device=self.model.device, percentiles=self.percentiles)
                for image, mask in zip(images, prompt.masks, strict=True)
            ]
        )
        visual = self.model.encode_support(supports).float().mean(dim=0)
        if prompt.text is None or prompt.weight >= 1:
            return visual
        return prompt.weight * visual + (1 - prompt.weight) * text[prompt.text]

    def predict_logits(self, conditionals: torch.Tensor) -> torch.Tensor:
        """Logits ``(P, Y, X)`` in the image's frame for conditional vectors ``(P, D)``."""
        self._require_image()
        return self.decode(self._features, conditionals, self._image_shape)

    def predict(self, prompts: Prompts) -> np.ndarray:
        """Per-prompt probabilities for the current image.

        Args:
            prompts: A text, a :class:`VisualPrompt`, or a list mixing both (one map each).

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
