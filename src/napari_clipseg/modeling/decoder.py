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


class ClipSegDecoder(nn.Module):
    """FiLM-conditioned transformer decoder over CLIP vision taps.

    Blocks are ``nn.TransformerEncoderLayer`` with the original's semantics (post-norm, ReLU,
    dropout 0.1 in training only); call ``.eval()`` for inference.
    """

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
            a = block(a)
        batch = max(a.shape[0], conditional.shape[0])  # no FiLM step (conditional_layer >= depth)
        a = a.expand(batch, -1, -1)
        a = a[:, 1:].transpose(1, 2).reshape(batch, -1, *grid)  # drop CLS, tokens -> feature map
        return self.trans_conv(a)[:, 0]

    def forward(self, taps: list[torch.Tensor], conditional: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``decode(reduce(taps), conditional, grid)``."""
        return self.decode(self.reduce(taps), conditional, grid)
