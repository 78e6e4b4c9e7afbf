"""Text prompts -> CLIP tokens -> conditional vectors, with a per-string embedding cache."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import torch

from ..cache import LRUCache
from ..constants import CONTEXT_LENGTH, TEXT_CACHE_SIZE

if TYPE_CHECKING:
    from .visual import VisualPrompt

Prompt = Union[str, "VisualPrompt"]
Prompts = Union[str, "VisualPrompt", Sequence[Prompt]]


@functools.lru_cache(maxsize=1)
def get_tokenizer():
    """open_clip's CLIP BPE tokenizer (its vocabulary ships with open_clip; no download)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=CONTEXT_LENGTH)


def clean_prompts(prompts: Prompts) -> list[Prompt]:
    """Strip text prompts and check there is at least one prompt and no empty text.

    Visual prompts (:class:`~napari_clipseg.segmentation.visual.VisualPrompt`) pass through unchanged.

    Raises:
        ValueError: no prompt, or an empty/blank text.
        TypeError: something that is neither a string nor a VisualPrompt.
    """
    from .visual import VisualPrompt

    if isinstance(prompts, str | VisualPrompt):
        items = [prompts]
    elif isinstance(prompts, Sequence) or (hasattr(prompts, "__iter__") and not hasattr(prompts, "shape")):
        items = list(prompts)
    else:
        raise TypeError(
            f"prompts must be a text, a VisualPrompt, or a list of them (e.g. ['nucleus', 'membrane']); "
            f"got {type(prompts).__name__}"
        )
    if not items:
        raise ValueError("give at least one prompt")
    cleaned: list[Prompt] = []
    for p in items:
        if isinstance(p, VisualPrompt):
            cleaned.append(p)
        elif not isinstance(p, str):
            raise TypeError(f"each prompt must be a text or a VisualPrompt; got {type(p).__name__} {p!r:.40}")
        elif not p.strip():
            raise ValueError("prompts must not be empty")
        else:
            cleaned.append(p.strip())
    return cleaned


def prompt_label(prompt: Prompt) -> str:
    """The class name of a prompt: the text itself, or a visual prompt's name."""
    return prompt if isinstance(prompt, str) else prompt.label


def tokenize(prompts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Token ids ``(P, L)``, cut after the longest prompt's end-of-text token.

    The text tower is causal, so tokens after the pooled EOT never change the embedding: cutting
    gives the same result as the full context, for a fraction of the work.
    """
    tokenizer = get_tokenizer()
    ids = tokenizer(list(prompts), context_length=context_length)
    length = int((ids == tokenizer.eot_token_id).int().argmax(dim=1).max()) + 1
    return ids[:, :length]


class TextEmbeddingCache:
    """Conditional vectors by prompt string, for one model (an :class:`~napari_clipseg.cache.LRUCache`).

    Attributes:
        encoded: Number of prompts sent through the text tower so far (for tests and stats).
    """

    def __init__(self, maxsize: int = TEXT_CACHE_SIZE) -> None:
        self._cache: LRUCache[torch.Tensor] = LRUCache(maxsize)
        self.encoded = 0

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()

    def embed(self, model: torch.nn.Module, prompts: Sequence[str]) -> torch.Tensor:
        """``(P, projection_dim)`` float32 embeddings; uncached prompts are encoded in one batch.

        Raises:
            ValueError: the model's vocabulary is smaller than CLIP's tokenizer needs.
        """
        found = {p: self._cache.get(p) for p in dict.fromkeys(prompts)}
        missing = [p for p, vector in found.items() if vector is None]
        if missing:
            text = model.config.text
            ids = tokenize(missing, min(CONTEXT_LENGTH, text.context_length))
            if int(ids.max()) >= text.vocab_size:
                raise ValueError(
                    f"this model's text vocabulary ({text.vocab_size} tokens) is smaller than CLIP's "
                    "tokenizer; it cannot take text prompts"
                )
            vectors = model.encode_text(ids.to(model.device)).float()
            self.encoded += len(missing)
            for prompt, vector in zip(missing, vectors, strict=True):
                found[prompt] = vector
                self._cache.put(prompt, vector)
        return torch.stack([found[p] for p in prompts])
