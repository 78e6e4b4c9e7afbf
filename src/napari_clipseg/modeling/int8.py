"""int8 towers for the CPU: the CLIP towers' linear layers with int8 weights and activations.

``precision="int8"`` runs the towers through a copy whose every ``nn.Linear`` (the attention's
input and output projections included, which ``nn.MultiheadAttention`` hides from quantization,
so attention is rewritten here as two linears around ``scaled_dot_product_attention``) is
replaced by torch's dynamically quantized linear: weights int8 per output channel, activations
quantized per call (fbgemm on x86, qnnpack on ARM). The decoder stays float32.

The float32 model is untouched: the int8 copy shares its embeddings and norms, is not a
submodule, and so never reaches ``state_dict``; a model run at int8 saves its exact weights.

Whether int8 is faster *here* is measured, not assumed: see :mod:`.speed`.
"""

from __future__ import annotations

import copy
import platform
import threading
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_stop


class ProjectedAttention(nn.Module):
    """``nn.MultiheadAttention`` (self-attention, batch first) as two ``nn.Linear`` layers and
    ``scaled_dot_product_attention``, with the same call signature and the same weights."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        width = attention.embed_dim
        self.num_heads = attention.num_heads
        self.qkv = nn.Linear(width, 3 * width, device="meta")  # its parameters are the attention's own
        self.qkv.weight, self.qkv.bias = attention.in_proj_weight, attention.in_proj_bias
        # a plain Linear: MultiheadAttention's own out_proj is a subclass quantization skips on purpose
        self.out_proj = nn.Linear(width, width, device="meta")
        self.out_proj.weight, self.out_proj.bias = attention.out_proj.weight, attention.out_proj.bias

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        batch, length, width = query.shape
        heads = self.num_heads
        q, k, v = self.qkv(query).view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        if attn_mask is not None and attn_mask.ndim == 3:  # (batch * heads, L, L), as MultiheadAttention takes it
            attn_mask = attn_mask.view(batch, heads, length, length)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width)), None


def quantized_engine() -> str | None:
    """The int8 engine torch offers on this CPU (``x86``/``fbgemm``, ``qnnpack``), or None."""
    quantization = getattr(torch.ao, "quantization", None)
    if quantization is None or not hasattr(quantization, "quantize_dynamic"):
        return None  # removed from this torch: int8 is simply not offered
    engines = torch.backends.quantized.supported_engines
    arm = platform.machine().lower() in ("arm64", "aarch64")
    for engine in ("qnnpack",) if arm else ("x86", "fbgemm"):
        if engine in engines:
            return engine
    return None


def _quantize_linears(module: nn.Module) -> nn.Module:
    engine = quantized_engine()
    if engine is None:
        raise RuntimeError("this torch build has no int8 engine for this CPU; use precision 'float32'")
    torch.backends.quantized.engine = engine
    quantization = torch.ao.quantization
    with warnings.catch_warnings():  # torch marks eager quantization deprecated; it is still its fast CPU path
        warnings.simplefilter("ignore")
        return quantization.quantize_dynamic(
            module, {nn.Linear: quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )


def quantize_towers(clip: nn.Module, stop: threading.Event | None = None) -> nn.Module:
    """An int8 copy of open_clip towers for inference (the original is not changed).

    Parameters that stay float32 (embeddings, norms, the patch convolution) are shared, not copied.
    Each transformer block is quantized on its own, with ``stop`` (set from another thread) checked
    between blocks: building the copy takes about a second and a Cancel must not wait for it.
    """
    shared = {id(p): p for p in clip.parameters()}
    towers = copy.deepcopy(clip, memo=shared).eval()
    for module in list(towers.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, ProjectedAttention(child))
    for module in list(towers.modules()):
        blocks = [child for child in module.children() if any(isinstance(m, nn.Linear) for m in child.modules())]
        if isinstance(module, nn.ModuleList) and blocks:
            for block in blocks:
                check_stop(stop)
                _quantize_linears(block)
    check_stop(stop)
    return _quantize_linears(towers)  # the linears outside the blocks, if any
