"""Text prompts -> CLIP tokens -> conditional vectors, with a per-string embedding cache."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import torch

from .constants import CONTEXT_LENGTH

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

    Visual prompts (:class:`~napari_clipseg.visual.VisualPrompt`) pass through unchanged.

    Raises:
        ValueError: no prompt, or an empty/blank text.
        TypeError: something that is neither a string nor a VisualPrompt.
    """
    from .visual import VisualPrompt

    items = [prompts] if isinstance(prompts, str | VisualPrompt) else list(prompts)
    if not items:
        raise ValueError("give at least one prompt")
    cleaned: list[Prompt] = []
    for p in items:
        if isinstance(p, VisualPrompt):
            cleaned.append(p)
        elif not isinstance(p, str):
            raise TypeError(f"prompts must be strings or VisualPrompt; got {type(p).__name__}")
        elif not p.strip():
            raise ValueError("prompts must not be empty")
        else:
            cleaned.append(p.strip())
    return cleaned


def prompt_label(prompt: Prompt) -> str:
    """The class name of a prompt: the text itself, or a visual prompt's name."""
    return prompt if isinstance(prompt, str) else prompt.label


def split_prompts(text: str) -> list[str]:
    """Prompts typed as one text: one per line or comma-separated; blanks are dropped.

    >>> split_prompts("nucleus, cell membrane\nmitochondria")
    ['nucleus', 'cell membrane', 'mitochondria']
    """
    return [p.strip() for line in text.splitlines() for p in line.split(",") if p.strip()]


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
    """LRU cache of conditional vectors by prompt string, for one model.

    Attributes:
        encoded: Number of prompts sent through the text tower so far (for tests and stats).
    """

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.encoded = 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()

    def embed(self, model: torch.nn.Module, prompts: Sequence[str]) -> torch.Tensor:
        """``(P, projection_dim)`` float32 embeddings; uncached prompts are encoded in one batch.

        Raises:
            ValueError: the model's vocabulary is smaller than CLIP's tokenizer needs.
        """
        missing = list(dict.fromkeys(p for p in prompts if p not in self._items))
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
                self._items[prompt] = vector
        result = torch.stack([self._items[p] for p in prompts])
        for p in prompts:
            self._items.move_to_end(p)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return result
