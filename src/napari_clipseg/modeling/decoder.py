"""The CLIPSeg decoder, with the original checkpoint's module names.

Names follow timojl/clipseg (``film_mul``, ``film_add``, ``reduces``, ``blocks``, ``trans_conv``)
so ``rd64-uni(-refined).pth`` loads with ``load_state_dict`` directly; transformers' names are
mapped in :mod:`napari_clipseg.keymap`.

The work is split in two so a predictor can cache the prompt-independent half:
:meth:`ClipSegDecoder.reduce` projects the vision taps (once per image), and
:meth:`ClipSegDecoder.decode` applies FiLM, the blocks and the head (once per prompt).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ClipSegConfig


def _head(config: ClipSegConfig) -> nn.Module:
    rd, patch = config.reduce_dim, config.vision.patch_size
    if not config.refined:
        return nn.ConvTranspose2d(rd, 1, patch, stride=patch)
    k = patch // 4  # as in the original and transformers: two x(patch/4) up-samplings
    return nn.Sequential(
        nn.Conv2d(rd, rd, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(rd, rd // 2, kernel_size=k, stride=k),
        nn.ReLU(),
        nn.ConvTranspose2d(rd // 2, 1, kernel_size=k, stride=k),
    )


def composite_block(block: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` in inference, op by op (projections, ``scaled_dot_product_attention``, the
    post-norms) instead of torch's fused fast path (``torch._transformer_encoder_layer_fwd``).

    Same arithmetic and weights; the fused kernel's softmax makes denormal numbers on the large
    activations CLIPSeg's FiLM produces, which Intel CPUs run through slow microcode (issue 35:
    9.2 ms against 2.7 ms a block on a Xeon). :mod:`napari_clipseg.precision.decoder_path`
    chooses between the two by timing both on the model's own activations.
    """
    attention = block.self_attn
    batch, tokens, width = x.shape
    heads = attention.num_heads
    q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, width)
    x = block.norm1(x + attention.out_proj(mixed))
    return block.norm2(x + block.linear2(F.relu(block.linear1(x))))


class ClipSegDecoder(nn.Module):
    """FiLM-conditioned transformer decoder over CLIP vision taps.

    Blocks are ``nn.TransformerEncoderLayer`` with the original's semantics (post-norm, ReLU,
    dropout 0.1 in training only); call ``.eval()`` for inference. In inference they run op by op
    (:func:`composite_block`) unless :attr:`fused_blocks` is set, where this CPU ran torch's fused
    fast path faster on this model's activations (:mod:`napari_clipseg.precision.decoder_path`).
    """

    #: Run the blocks on torch's fused fast path in inference: chosen by measurement on the first
    #: decode of a predictor (None until then, which runs them op by op).
    fused_blocks: bool | None = None

    def __init__(self, config: ClipSegConfig) -> None:
        super().__init__()
        rd, depth = config.reduce_dim, len(config.extract_layers)
        self.conditional_layer = config.conditional_layer
        self.film_mul = nn.Linear(config.projection_dim, rd)
        self.film_add = nn.Linear(config.projection_dim, rd)
        self.reduces = nn.ModuleList(nn.Linear(config.vision.width, rd) for _ in range(depth))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                rd,
                config.decoder_heads,
                dim_feedforward=config.decoder_mlp_dim,
                dropout=0.1,
                activation="relu",
                layer_norm_eps=config.vision.layer_norm_eps,
                batch_first=True,
            )
            for _ in range(depth)
        )
        self.trans_conv = _head(config)

    def reduce(self, taps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Project vision taps (shallowest first) to ``reduce_dim``; returns them deepest first.

        ``reduces[0]`` goes with the deepest tap, as in the original's ``zip(reversed(...))``.
        """
        return [reduce(tap) for reduce, tap in zip(self.reduces, taps[::-1], strict=True)]

    def decode(self, reduced: list[torch.Tensor], conditional: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Logits from reduced taps and conditional vectors.

        Args:
            reduced: Output of :meth:`reduce`, each ``(Bi, 1 + gh*gw, reduce_dim)``.
            conditional: ``(Bc, projection_dim)`` un-normalised CLIP embeddings. ``Bi`` and ``Bc``
                must be equal, or ``Bi == 1`` (one image, many prompts).
            grid: Patch grid ``(gh, gw)`` of the image.

        Returns:
            ``(B, H, W)`` logits, ``B = max(Bi, Bc)``.
        """
        a = None
        for i, (r, block) in enumerate(zip(reduced, self.blocks, strict=True)):
            a = r if a is None else r + a
            if i == self.conditional_layer:
                a = self.film_mul(conditional)[:, None] * a + self.film_add(conditional)[:, None]
            a = block(a) if self.training or self.fused_blocks else composite_block(block, a)
        batch = max(a.shape[0], conditional.shape[0])  # no FiLM step (conditional_layer >= depth)
        a = a.expand(batch, -1, -1)
        a = a[:, 1:].transpose(1, 2).reshape(batch, -1, *grid)  # drop CLS, tokens -> feature map
        return self.trans_conv(a)[:, 0]

    def forward(self, taps: list[torch.Tensor], conditional: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``decode(reduce(taps), conditional, grid)``."""
        return self.decode(self.reduce(taps), conditional, grid)
