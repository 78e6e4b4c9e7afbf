"""``ClipSeg``: CLIP towers plus the decoder, with transformers' forward signature."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import backbone
from .config import ClipSegConfig
from .decoder import ClipSegDecoder
from .info import ModelInfo
from .int8 import quantize_towers
from .runtime import autocast_dtype, canonical_precision


@dataclass(frozen=True)
class ImageFeatures:
    """Prompt-independent decoder inputs of a batch of images (see ``ClipSeg.encode_image``).

    Attributes:
        reduced: Decoder-projected vision taps, deepest first, each ``(B, 1 + gh*gw, reduce_dim)``.
        grid: Patch grid ``(gh, gw)``.
    """

    reduced: list[torch.Tensor]
    grid: tuple[int, int]


class ClipSeg(nn.Module):
    """CLIPSeg on open_clip towers.

    ``clip`` holds the open_clip ``CLIP`` module (OpenAI key names), ``decoder`` the CLIPSeg
    decoder (original key names). The CLIP towers are frozen: they run without autograd even
    when the decoder is trained.

    Args:
        config: The architecture.
        info: Where the weights come from and the precision to run at (default: random, float32).
    """

    def __init__(self, config: ClipSegConfig, info: ModelInfo | None = None) -> None:
        super().__init__()
        self.config = config
        self.info = info or ModelInfo()
        self.clip = backbone.build_clip(config)
        self.decoder = ClipSegDecoder(config)
        self.clip.requires_grad_(False)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """Reduced-precision dtype the predictor runs under (None = exact float32)."""
        return autocast_dtype(self.info.precision)

    def with_precision(self, precision: str, stop: threading.Event | None = None) -> ClipSeg:
        """The same model (weights shared, not copied) run at another explicit precision
        (``"float32"``, ``"int8"``, ``"bfloat16"``, ``"float16"``; ``"auto"`` is resolved by
        :func:`napari_clipseg.precision.resolve_precision`). The int8 towers are built here, so
        no forward pass ever builds anything; ``stop`` ends that build between two blocks."""
        other = copy.copy(self)  # shares the submodules (their weights); ``info`` and the int8 copy are its own
        other._modules = dict(self._modules)  # so assigning a submodule on one never changes the other
        other.__dict__.pop("_int8_towers", None)
        other.__dict__.pop("_vision_engine", None)  # an engine runs the exact towers only
        precision = canonical_precision(precision, self.device)
        other.info = dataclasses.replace(self.info, precision=precision, checked=None, engine="torch")
        other._build_towers(stop)
        return other

    def with_engine(self, engine: Any) -> ClipSeg:
        """The same model with its vision tower run by ``engine`` (an
        :class:`~.openvino_engine.VisionEngine` at this model's precision) wherever the input fits
        it; eager torch elsewhere (the text tower and the decoder always)."""
        if engine.precision != self.info.precision:
            raise ValueError(f"the engine runs at {engine.precision}; this model runs at {self.info.precision}")
        other = copy.copy(self)
        other._modules = dict(self._modules)
        other.__dict__["_vision_engine"] = engine  # a plain attribute: never a submodule, never saved
        other.info = dataclasses.replace(self.info, engine="openvino")
        return other

    def with_decoder(self, decoder: ClipSegDecoder) -> ClipSeg:
        """The same towers (and int8 copy) with another decoder, e.g. a fine-tuned copy; this model
        keeps its own decoder."""
        other = copy.copy(self)
        other._modules = {**self._modules, "decoder": decoder}
        return other

    @property
    def towers(self) -> nn.Module:
        """The CLIP towers inference runs through: ``clip``, or at precision ``"int8"`` its int8 copy
        (built on first use and kept; ``clip`` keeps the exact weights that are saved). The copy
        does not follow later in-place changes to ``clip``'s weights: load other tower weights
        into a new model (``load_model`` does)."""
        return self._build_towers()

    def _build_towers(self, stop: threading.Event | None = None) -> nn.Module:
        if self.info.precision != "int8":
            return self.clip
        built = self.__dict__.get("_int8_towers")  # a plain attribute: never a submodule, never saved
        if built is None or built[0] is not self.clip:
            built = (self.clip, quantize_towers(self.clip, stop))
            self.__dict__["_int8_towers"] = built
        return built[1]

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """``inference_mode``, plus autocast when the model runs at a reduced precision."""
        with torch.inference_mode():
            if self.autocast_dtype is None:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    yield

    @property
    def device(self) -> torch.device:
        return self.decoder.film_mul.weight.device

    def encode_image(
        self, pixel_values: torch.Tensor, between_blocks: Callable[[], None] | None = None
    ) -> ImageFeatures:
        """Run the vision tower up to the deepest extract layer and reduce the taps.

        ``between_blocks`` is called after each vision block (it may raise to stop early).
        """
        engine = self.__dict__.get("_vision_engine")
        if pixel_values.shape[0] > 1 and self.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # torch's CPU autocast runs a batch of several images through attention's slow path,
            # which copies the projection weights per image: 4 tiles at bfloat16 took 10.6 s
            # against 4 x 0.14 s one by one (Xeon with AMX, torch 2.14). One image at a time.
            parts = [self.encode_image(image[None], between_blocks) for image in pixel_values]
            levels = zip(*(part.reduced for part in parts), strict=True)
            return ImageFeatures([torch.cat(level) for level in levels], parts[0].grid)
        with torch.no_grad():
            if engine is not None and engine.fits(pixel_values):
                taps, grid = engine.taps(pixel_values, between_blocks), engine.grid
            else:
                taps, grid = backbone.vision_taps(
                    self.towers.visual, pixel_values, self.config.extract_layers, between_blocks
                )
        return ImageFeatures(self.decoder.reduce(taps), grid)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Conditional vectors ``(B, projection_dim)`` of token ids ``(B, L)``, ``L <= context``."""
        with torch.no_grad():
            return backbone.text_embedding(self.towers, input_ids, self.config.text.eos_token_id, attention_mask)

    def encode_support(
        self, conditional_pixel_values: torch.Tensor, between_blocks: Callable[[], None] | None = None
    ) -> torch.Tensor:
        """Conditional vectors ``(B, projection_dim)`` of normalised support images (visual prompts)."""
        with torch.no_grad():
            return backbone.image_embedding(self.towers.visual, conditional_pixel_values, between_blocks)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        conditional_pixel_values: torch.Tensor | None = None,
        conditional_embeddings: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Segmentation logits, like transformers' ``CLIPSegForImageSegmentation(...).logits``.

        Exactly one conditional is given: text ``input_ids`` ``(B, L)`` (with optional
        ``attention_mask``), support images ``conditional_pixel_values`` ``(B, 3, h, w)``, or
        precomputed ``conditional_embeddings`` ``(B, projection_dim)``.

        Args:
            pixel_values: ``(B, 3, H, W)`` query images, ImageNet-normalised (H, W multiples of
                the patch size; 352 for the released weights).

        Returns:
            ``(B, H', W')`` logits (``H' = H`` for the released configs). A single query image
            (``B == 1``) may be paired with several conditionals; the output then has one map
            per conditional.
        """
        given = [c is not None for c in (input_ids, conditional_pixel_values, conditional_embeddings)]
        if sum(given) != 1:
            raise ValueError("pass exactly one of input_ids, conditional_pixel_values, conditional_embeddings")
        if input_ids is not None:
            conditional = self.encode_text(input_ids, attention_mask)
        elif conditional_pixel_values is not None:
            conditional = self.encode_support(conditional_pixel_values)
        else:
            conditional = conditional_embeddings
            if conditional.ndim != 2 or conditional.shape[1] != self.config.projection_dim:
                raise ValueError(
                    f"conditional_embeddings must be (batch, {self.config.projection_dim}); "
                    f"got {tuple(conditional.shape)}"
                )
        n_images, n_cond = pixel_values.shape[0], conditional.shape[0]
        if n_images != n_cond and n_images != 1:
            raise ValueError(
                f"got {n_images} query images but {n_cond} conditionals: pass as many conditionals "
                "as images, or a single image"
            )
        features = self.encode_image(pixel_values)
        return self.decoder.decode(features.reduced, conditional.to(features.reduced[0].dtype), features.grid)
