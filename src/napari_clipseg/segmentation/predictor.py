"""``ClipSegPredictor``: encode an image once, then answer many prompts cheaply.

``set_image`` runs the prompt-independent part (vision tower up to the deepest tap, decoder
projections) and caches it; ``predict`` runs only the text tower (cached per prompt) and the
decoder, batched over prompts.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from typing import Any

import numpy as np
import torch

from ..cache import LRUCache
from ..constants import DECODE_BATCH, DEFAULT_PERCENTILES, FEATURE_CACHE_BYTES, INPUT_SIZE
from ..errors import RunCancelled
from ..modeling import ClipSeg, ImageFeatures
from .prompts import Prompts, TextEmbeddingCache, clean_prompts
from .transforms import resize, to_model_input
from .visual import VisualPrompt, support_pixels


def pixel_signature(pixels: torch.Tensor) -> str:
    """Content signature of model-input pixels: the key of the feature cache.

    Features are a pure function of these pixels (for one model), so equal signatures mean equal
    features; no object identity is involved, and an edited image gets a new signature.
    """
    data = np.ascontiguousarray(pixels.detach().cpu().numpy())
    return hashlib.blake2b(data.data, digest_size=20).hexdigest()


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` (None elsewhere: macOS, Windows and musl return freed memory themselves)."""
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Give the pages of freed heap blocks back to the operating system.

    Why: cache entries (a few hundred kB each) are allocated between the image tower's large
    temporaries; glibc cannot shrink a heap past a live block, so while entries accumulate the
    freed temporaries around them stay resident (a cached 4096 x 4096 tiled run grew to 3.5 GiB
    for 70 MB of cache). ``malloc_trim`` returns those free pages; it costs milliseconds per batch.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _features_bytes(features: ImageFeatures) -> int:
    return sum(r.numel() * r.element_size() for r in features.reduced)


class ClipSegPredictor:
    """Cached CLIPSeg inference on one image at a time.

    Args:
        model: A loaded :class:`~napari_clipseg.modeling.ClipSeg` (see ``load_model``).
        percentiles: Intensity percentiles for non-uint8 images (see ``transforms``).
        cache_bytes: Memory for image features, kept by content signature so re-prompting an
            image, a stack plane or a tile seen before skips the image tower (0: keep none).
        store: A :class:`~napari_clipseg.learning.feature_store.FeatureStore` for this model: features
            not in memory are read from it before the tower runs, and what the tower encodes is
            kept there (an annotation project's taps, so re-predicting is the decoder alone).

    One predictor may be shared between threads: calls are serialised by a lock (an image set in
    one thread is the image ``predict`` answers for in another, so give each thread its own
    predictor when they work on different images).

    Example:
        >>> pred = ClipSegPredictor(model)
        >>> pred.set_image(image)  # (Y, X) or (Y, X, C), any dtype
        >>> probs = pred.predict(["cat", "dog"])  # (2, Y, X) float32 in [0, 1]
    """

    def __init__(
        self,
        model: ClipSeg,
        *,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        cache_bytes: int = FEATURE_CACHE_BYTES,
        store: Any = None,
    ) -> None:
        if not isinstance(model, ClipSeg):
            hint = " (a model source: load it first with ncs.load_model(...))" if isinstance(model, str) else ""
            raise TypeError(f"ClipSegPredictor needs a loaded model; got {type(model).__name__}{hint}")
        self.model = model.eval()
        self.percentiles = percentiles
        self.text_cache = TextEmbeddingCache()
        self.feature_cache: LRUCache[ImageFeatures] = LRUCache(cache_bytes, _features_bytes)
        self.store = store
        #: Set it (from any thread) to stop the current encoding after its next vision block
        #: (RunCancelled is raised); clear it before the next run.
        self.stop = threading.Event()
        self._lock = threading.RLock()
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

    def inference(self) -> contextlib.AbstractContextManager[None]:
        """The model's :meth:`~napari_clipseg.modeling.ClipSeg.inference` context."""
        return self.model.inference()

    def encode(
        self,
        images: list[Any],
        value_range: tuple[float, float] | str | None = "auto",
        channels: tuple[int, ...] | None = None,
    ) -> list[ImageFeatures]:
        """Prompt-independent features of several 2D images (numpy or lazy), in one backbone batch.

        Images whose model input was seen before come from :attr:`feature_cache` (or :attr:`store`).

        Args:
            images: Planes or tiles, each as accepted by :meth:`set_image`.
            value_range: Intensity range shared by all of them (see ``transforms.intensity_range``);
                ``"auto"`` computes it per image.
            channels: Channels to use as R, G, B (see ``transforms.select_channels``).
        """
        keys, pixels = self._signatures(images, value_range, channels)
        with self._lock:
            found = {key: self.feature_cache.get(key) for key in keys}
            if self.store is not None:
                found = {key: value if value is not None else self.store.get(key) for key, value in found.items()}
            todo: dict[str, torch.Tensor] = {}
            for key, image in zip(keys, images, strict=True):
                if found[key] is None and key not in todo:
                    made = pixels.get(key)
                    todo[key] = made if made is not None else self._model_input(image, value_range, channels)
            if todo:
                with self.inference():
                    pixels = torch.cat(list(todo.values())).to(self.model.device)
                    encoded = self.model.encode_image(pixels, self._raise_if_stopped)
                for j, key in enumerate(todo):  # copies, so a cached entry does not pin the whole batch
                    found[key] = ImageFeatures([r[j : j + 1].clone() for r in encoded.reduced], encoded.grid)
                    self.feature_cache.put(key, found[key])
                    if self.store is not None:
                        self.store.put(key, found[key])
                del encoded, pixels
                if self.feature_cache.capacity > 0:
                    release_freed_memory()  # entries now sit between freed temporaries (see there)
        return [found[key] for key in keys]

    def _model_input(self, image: Any, value_range: Any, channels: tuple[int, ...] | None) -> torch.Tensor:
        return to_model_input(image, INPUT_SIZE, "cpu", self.percentiles, value_range, channels)

    def _signatures(
        self, images: list[Any], value_range: Any, channels: tuple[int, ...] | None
    ) -> tuple[list[str], dict[str, torch.Tensor]]:
        """The cache keys of ``images`` (their model inputs' signatures), and the model inputs made
        to find them. With a store, a key is also remembered by the source pixels and how they are
        read, so a re-prediction of the same image skips making its model input (a few ms)."""
        keys, pixels = [], {}
        for image in images:
            source = self.store.source_key(image, (value_range, channels, self.percentiles)) if self.store else None
            key = self.store.signature_of(source) if source is not None else None
            if key is None:
                made = self._model_input(image, value_range, channels)
                key = pixel_signature(made)
                pixels[key] = made
                if source is not None:
                    self.store.remember(source, key)
            keys.append(key)
        return keys, pixels

    def _raise_if_stopped(self) -> None:
        if self.stop.is_set():
            raise RunCancelled("stopped on request")

    def decode(self, features: ImageFeatures, conditionals: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Logits ``(P, *shape)`` float32 for cached ``features`` and conditionals ``(P, D)``."""
        maps = []
        with self.inference():
            for chunk in conditionals.split(DECODE_BATCH):
                chunk = chunk.to(features.reduced[0].dtype)
                if self.model.decoder.fused_blocks is None:  # once: this machine's faster kernel path
                    from ..precision.decoder_path import choose_block_path

                    choose_block_path(self.model.decoder, features.reduced, chunk, features.grid)
                logits = self.model.decoder.decode(features.reduced, chunk, features.grid)
                maps.append(resize(logits[:, None].float(), shape)[:, 0])
        return torch.cat(maps)

    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` and cache its prompt-independent features.

        Args:
            image: ``(Y, X)`` grey or ``(Y, X, C)`` with 1-4 channels (RGB, RGBA, ...), any dtype
                (uint8 /255; others stretched between percentiles). Any size: it is resized to
                the model input and results are resized back.

        Raises:
            ValueError: an ambiguous or unusable shape (a stack, more than 4 channels), or an image
                smaller than 16x16.
            TypeError: complex or non-numeric data.
        """
        image = np.asarray(image)
        with self._lock:
            (features,) = self.encode([image])  # raises before anything changes
            self._features, self._image, self._image_shape = features, image, tuple(image.shape[:2])

    def reset_image(self) -> None:
        """Forget the current image (exactly what :meth:`set_image` sets)."""
        with self._lock:
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
        with self._lock, self.inference():
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
        visual = self.model.encode_support(supports, self._raise_if_stopped).float().mean(dim=0)
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
        with self._lock:
            self._require_image()
            logits = self.predict_logits(self.embed_prompts(prompts))
        with torch.inference_mode():
            return torch.sigmoid(logits).cpu().numpy()
