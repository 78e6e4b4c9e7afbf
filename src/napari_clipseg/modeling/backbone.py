"""CLIP towers from open_clip, and the three ways CLIPSeg reads them.

The towers are open_clip's own modules (``open_clip.model.CLIP``), so checkpoints in OpenAI /
open_clip key format load without renaming. CLIPSeg needs more than open_clip's
``encode_image``/``encode_text`` offer:

* :func:`vision_taps`: residual-stream outputs of chosen blocks (CLS kept, no ``ln_post``),
  stopping after the deepest one;
* :func:`image_embedding`: the pooled, projected embedding of a (support) image of any size;
* :func:`text_embedding`: the projected EOT embedding of token sequences of any length up to the
  context, with transformers' pooling rule.

Position embeddings are rescaled bicubically *without* antialias, exactly as the reference does
(open_clip's ``resize_pos_embed`` antialiases and gives different numbers).
"""

from __future__ import annotations

from collections.abc import Callable

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from torch import nn

from .config import ClipSegConfig, TowerConfig


def _mlp_ratio(tower: TowerConfig) -> float:
    # open_clip computes int(width * mlp_ratio); the +0.25 keeps that exact for any mlp_dim.
    return (tower.mlp_dim + 0.25) / tower.width


class FrozenQuickGELU(nn.Module):
    """CLIP's ``x * sigmoid(1.702 * x)`` with one temporary instead of two (bit-identical; about
    1.5 % of a vision pass). In place, so for the frozen towers only, which never need gradients."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 1.702).sigmoid_().mul_(x)


def _set_activation(resblocks: nn.ModuleList, act: str) -> None:
    for block in resblocks:
        block.mlp.gelu = FrozenQuickGELU() if act == "quick_gelu" else nn.GELU()


def build_clip(config: ClipSegConfig) -> open_clip.model.CLIP:
    """Build randomly initialised open_clip towers for ``config`` (no download)."""
    v, t = config.vision, config.text
    vision_cfg = CLIPVisionCfg(
        layers=v.layers,
        width=v.width,
        head_width=v.width // v.heads,
        mlp_ratio=_mlp_ratio(v),
        patch_size=v.patch_size,
        image_size=v.image_size,
        norm_kwargs={"eps": v.layer_norm_eps},
    )
    text_cfg = CLIPTextCfg(
        context_length=t.context_length,
        vocab_size=t.vocab_size,
        width=t.width,
        heads=t.heads,
        layers=t.layers,
        mlp_ratio=_mlp_ratio(t),
        norm_kwargs={"eps": t.layer_norm_eps},
    )
    clip = open_clip.model.CLIP(config.projection_dim, vision_cfg, text_cfg, quick_gelu=True)
    _set_activation(clip.visual.transformer.resblocks, v.act)
    _set_activation(clip.transformer.resblocks, t.act)
    # The text causal mask is built per call for the actual sequence length (text_embedding);
    # dropping open_clip's fixed 77x77 buffer also lets the model be built on the meta device.
    clip.attn_mask = None
    return clip


def rescaled_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ``(1 + g*g, W)`` ViT position embedding to ``grid``; the CLS row is kept.

    Bicubic, ``align_corners=False``, no antialias: the reference's ``rescaled_pos_emb``.
    """
    n = pos_embed.shape[0] - 1
    side = round(n**0.5)
    if side * side != n:
        raise ValueError(f"position embedding of {n} patches is not a square grid")
    if grid == (side, side):
        return pos_embed
    cls, patches = pos_embed[:1], pos_embed[1:]
    patches = patches.T.reshape(1, -1, side, side)
    patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False, antialias=False)
    return torch.cat([cls, patches.reshape(patches.shape[1], -1).T], dim=0)


def _cached_pos_embed(visual: nn.Module, grid: tuple[int, int]) -> torch.Tensor:
    """``rescaled_pos_embed`` of the tower's position embedding, kept until the grid or the
    embedding changes (the bicubic resize is ~1 % of a vision pass, and the same every time)."""
    pos = visual.positional_embedding
    key = (grid, pos.data_ptr(), pos._version, pos.dtype, pos.device)
    cached = visual.__dict__.get("_rescaled_pos_embed")  # a plain attribute: never saved
    if cached is None or cached[0] != key:
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable outside inference mode
            cached = (key, rescaled_pos_embed(pos, grid))
        visual.__dict__["_rescaled_pos_embed"] = cached
    return cached[1]


def _embed_patches(
    visual: nn.Module, pixel_values: torch.Tensor, pos_embed: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch tokens with CLS and position embedding (``pos_embed``: already resized to the grid)."""
    x = visual.conv1(pixel_values)
    batch, width, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(batch, 1, width)
    x = torch.cat([cls, x], dim=1)
    x = x + (pos_embed if pos_embed is not None else _cached_pos_embed(visual, (gh, gw))).to(x.dtype)
    return visual.ln_pre(x), (gh, gw)


def vision_taps(
    visual: nn.Module,
    pixel_values: torch.Tensor,
    layers: tuple[int, ...],
    between_blocks: Callable[[], None] | None = None,
) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """Outputs of vision blocks ``layers`` (0-based), shallowest first.

    Args:
        visual: open_clip ``VisionTransformer``.
        pixel_values: ``(B, 3, H, W)`` normalised images.
        layers: Increasing block indices; blocks after the last one are not run.
        between_blocks: Called after each block (a place to stop a long encoding: it may raise).

    Returns:
        ``([(B, 1 + gh*gw, W)] * len(layers), (gh, gw))``: the full token sequence (CLS first) of
        each tapped block, and the patch grid.
    """
    x, grid = _embed_patches(visual, pixel_values)
    taps = []
    for i, block in enumerate(visual.transformer.resblocks[: layers[-1] + 1]):
        x = block(x)
        if i in layers:
            taps.append(x)
        if between_blocks is not None:
            between_blocks()
    return taps, grid


class VisionTapsGraph(nn.Module):
    """The vision tower up to its deepest tap at one input size, as one graph another engine can
    take (``torch.export``): the position embedding is resized once, for ``side`` pixels; the
    output is :func:`vision_taps`'s taps, as a tuple. It shares the tower's weights."""

    def __init__(self, visual: nn.Module, layers: tuple[int, ...], side: int) -> None:
        super().__init__()
        self.visual, self.layers = visual, tuple(layers)
        grid = side // visual.conv1.kernel_size[0]
        with torch.no_grad():
            self.register_buffer("pos_embed", rescaled_pos_embed(visual.positional_embedding, (grid, grid)).clone())

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, _ = _embed_patches(self.visual, pixel_values, self.pos_embed)
        taps = []
        for i, block in enumerate(self.visual.transformer.resblocks[: self.layers[-1] + 1]):
            x = block(x)
            if i in self.layers:
                taps.append(x)
        return tuple(taps)


def image_embedding(
    visual: nn.Module, pixel_values: torch.Tensor, between_blocks: Callable[[], None] | None = None
) -> torch.Tensor:
    """Projected CLS embedding ``(B, projection_dim)`` of images of any size, not normalised."""
    x, _ = _embed_patches(visual, pixel_values)
    for block in visual.transformer.resblocks:
        x = block(x)
        if between_blocks is not None:
            between_blocks()
    return visual.ln_post(x[:, 0]) @ visual.proj


def eos_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Index of the pooled token of each sequence, by transformers' rule.

    ``eos_token_id == 2`` (legacy configs) pools the largest token id (CLIP's EOT); any other
    value pools the first occurrence of that id.
    """
    if eos_token_id == 2:
        return input_ids.argmax(dim=-1)
    return (input_ids == eos_token_id).int().argmax(dim=-1)


def _text_attention_mask(
    attention_mask: torch.Tensor | None, length: int, heads: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu_(1)
    if attention_mask is not None:
        padding = attention_mask.to(device=device) == 0  # (B, L): keys the query may not see
        blocked = (blocked[None] | padding[:, None, :]).repeat_interleave(heads, dim=0)
    # A finite minimum (not -inf) keeps rows that block every key free of NaN, as transformers does.
    return torch.zeros(blocked.shape, dtype=dtype, device=device).masked_fill_(blocked, torch.finfo(dtype).min)


def text_embedding(
    clip: nn.Module,
    input_ids: torch.Tensor,
    eos_token_id: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected text embedding ``(B, projection_dim)``, not normalised.

    Sequences may be shorter than the context: thanks to the causal mask, positions after the
    pooled token never change it, so callers may cut the ids after the longest EOT.
    """
    length = input_ids.shape[1]
    context = clip.positional_embedding.shape[0]
    if length > context:
        raise ValueError(f"token sequence of length {length} exceeds the text context ({context})")
    x = clip.token_embedding(input_ids) + clip.positional_embedding[:length].to(clip.token_embedding.weight.dtype)
    heads = clip.transformer.resblocks[0].attn.num_heads
    mask = _text_attention_mask(attention_mask, length, heads, x.dtype, x.device)
    for block in clip.transformer.resblocks:
        x = block(x, attn_mask=mask)
    x = clip.ln_final(x)
    pooled = x[torch.arange(x.shape[0], device=x.device), eos_positions(input_ids, eos_token_id).to(x.device)]
    return pooled @ clip.text_projection
