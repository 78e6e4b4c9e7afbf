"""State-dict key mapping between transformers' CLIPSeg and this package (one table, both ways).

Our names are open_clip's (= OpenAI's) for the towers under ``clip.`` and the original CLIPSeg
names for the decoder under ``decoder.``. :func:`hf_key_table` lists every parameter of a config
with its transformers key(s) and the transform between them, so both directions and the exact
missing/unexpected-key checks come from the same rows (reference/clipseg.md §3.5-3.6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ClipSegConfig

#: Keys transformers may save that carry no weights (non-persistent buffers in newer versions).
HF_IGNORED_SUFFIXES = ("position_ids",)
#: The original checkpoints save the trainable but unused ``reduce`` layer.
ORIGINAL_UNUSED_KEYS = frozenset({"reduce.weight", "reduce.bias"})


@dataclass(frozen=True)
class KeyRow:
    """One parameter: our key, its transformers key(s) and how values convert.

    ``op`` is ``"copy"``, ``"transpose"`` (nn.Linear weight vs. open_clip's ``x @ proj``) or
    ``"qkv"`` (open_clip's fused ``in_proj`` = cat of transformers' q, k, v projections).
    """

    ours: str
    hf: tuple[str, ...]
    op: str = "copy"


class KeyMismatchError(ValueError):
    """A state dict does not have exactly the keys (or shapes) the architecture needs."""

    def __init__(self, missing: list[str], unexpected: list[str], mismatched: list[str] | None = None) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched or []
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", self.mismatched),
        ):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:5])}{more}")
        super().__init__("; ".join(parts))


def _block_rows(ours: str, hf: str, width_names: dict[str, str]) -> list[KeyRow]:
    attn = width_names["self_attn.out_proj"].removesuffix(".out_proj")  # "attn" or "self_attn"
    rows = [
        KeyRow(f"{ours}.{attn}.in_proj_{p}", tuple(f"{hf}.self_attn.{x}_proj.{p}" for x in "qkv"), "qkv")
        for p in ("weight", "bias")
    ]
    for hf_name, our_name in width_names.items():
        rows += [KeyRow(f"{ours}.{our_name}.{p}", (f"{hf}.{hf_name}.{p}",)) for p in ("weight", "bias")]
    return rows


_CLIP_BLOCK = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_DECODER_BLOCK = {
    "self_attn.out_proj": "self_attn.out_proj",
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "mlp.fc1": "linear1",
    "mlp.fc2": "linear2",
}


def _linear(ours: str, hf: str) -> list[KeyRow]:
    return [KeyRow(f"{ours}.{p}", (f"{hf}.{p}",)) for p in ("weight", "bias")]


def hf_key_table(config: ClipSegConfig) -> list[KeyRow]:
    """Every parameter of a model with ``config``, with its transformers key(s)."""
    v, t = "clip.vision_model", "clip.text_model"
    rows = [
        KeyRow("clip.visual.conv1.weight", (f"{v}.embeddings.patch_embedding.weight",)),
        KeyRow("clip.visual.class_embedding", (f"{v}.embeddings.class_embedding",)),
        KeyRow("clip.visual.positional_embedding", (f"{v}.embeddings.position_embedding.weight",)),
        *_linear("clip.visual.ln_pre", f"{v}.pre_layrnorm"),
        *_linear("clip.visual.ln_post", f"{v}.post_layernorm"),
        KeyRow("clip.visual.proj", ("clip.visual_projection.weight",), "transpose"),
        KeyRow("clip.token_embedding.weight", (f"{t}.embeddings.token_embedding.weight",)),
        KeyRow("clip.positional_embedding", (f"{t}.embeddings.position_embedding.weight",)),
        *_linear("clip.ln_final", f"{t}.final_layer_norm"),
        KeyRow("clip.text_projection", ("clip.text_projection.weight",), "transpose"),
        KeyRow("clip.logit_scale", ("clip.logit_scale",)),
        *_linear("decoder.film_mul", "decoder.film_mul"),
        *_linear("decoder.film_add", "decoder.film_add"),
    ]
    for i in range(config.vision.layers):
        rows += _block_rows(f"clip.visual.transformer.resblocks.{i}", f"{v}.encoder.layers.{i}", _CLIP_BLOCK)
    for i in range(config.text.layers):
        rows += _block_rows(f"clip.transformer.resblocks.{i}", f"{t}.encoder.layers.{i}", _CLIP_BLOCK)
    for i in range(len(config.extract_layers)):
        rows += _linear(f"decoder.reduces.{i}", f"decoder.reduces.{i}")
        rows += _block_rows(f"decoder.blocks.{i}", f"decoder.layers.{i}", _DECODER_BLOCK)
    head = ("0", "2", "4") if config.refined else ("",)
    for idx in head:
        suffix = f".{idx}" if idx else ""
        rows += _linear(f"decoder.trans_conv{suffix}", f"decoder.transposed_convolution{suffix}")
    return rows


def hf_to_ours(state_dict: dict[str, torch.Tensor], config: ClipSegConfig) -> dict[str, torch.Tensor]:
    """Convert a transformers CLIPSeg state dict to our keys.

    Raises:
        KeyMismatchError: if keys are missing or unexpected (``position_ids`` buffers excepted).
    """
    rows = hf_key_table(config)
    expected = {k for row in rows for k in row.hf}
    present = {k for k in state_dict if not k.endswith(HF_IGNORED_SUFFIXES)}
    if present != expected:
        raise KeyMismatchError(sorted(expected - present), sorted(present - expected))
    out = {}
    for row in rows:
        values = [state_dict[k] for k in row.hf]
        if row.op == "qkv":
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) != 1:
                raise KeyMismatchError([], [], [f"{' / '.join(row.hf)} have different shapes {sorted(shapes)}"])
            out[row.ours] = torch.cat(values, dim=0)
        elif row.op == "transpose":
            out[row.ours] = values[0].T.contiguous()
        else:
            out[row.ours] = values[0]
    return out


def ours_to_hf(state_dict: dict[str, torch.Tensor], config: ClipSegConfig) -> dict[str, torch.Tensor]:
    """Convert our state dict to transformers' CLIPSeg keys (inverse of :func:`hf_to_ours`)."""
    out = {}
    for row in hf_key_table(config):
        value = state_dict[row.ours]
        if row.op == "qkv":
            for key, part in zip(row.hf, value.chunk(3, dim=0), strict=True):
                out[key] = part.contiguous()
        elif row.op == "transpose":
            out[row.hf[0]] = value.T.contiguous()
        else:
            out[row.hf[0]] = value
    return out


#: Key prefixes of an original CLIPSeg decoder checkpoint (timojl/clipseg names).
ORIGINAL_DECODER_PREFIXES = ("film_mul.", "film_add.", "reduces.", "blocks.", "trans_conv.")


def original_decoder_to_ours(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of an original ``rd*-uni*.pth`` decoder checkpoint under our ``decoder.`` prefix.

    The unused ``reduce.*`` layer is dropped. A full original state dict (``clip_model.*`` keys
    from ``CLIPDensePredT.state_dict()``) also carries the towers in OpenAI names, which are
    open_clip's, so they map to ``clip.*``; its duplicate ``model.*`` view is dropped.
    """
    if not any(k.startswith(ORIGINAL_DECODER_PREFIXES) for k in state_dict):
        keys = sorted(state_dict)
        sample = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        raise KeyMismatchError([f"{p}*" for p in ORIGINAL_DECODER_PREFIXES], [sample] if keys else [], None)
    out = {}
    for key, value in state_dict.items():
        if key in ORIGINAL_UNUSED_KEYS or key.startswith("model."):
            continue
        if key.startswith("clip_model."):
            out["clip." + key.removeprefix("clip_model.")] = value
        else:
            out["decoder." + key] = value
    return out


def open_clip_to_ours(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of an open_clip / OpenAI CLIP state dict under our ``clip.`` prefix.

    Unwraps training checkpoints (``{"state_dict": ...}``, ``module.`` prefixes) and drops the
    non-weight ``attn_mask`` buffer some exports contain.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    return {
        "clip." + key.removeprefix("module."): value
        for key, value in state_dict.items()
        if key.removeprefix("module.") != "attn_mask"
    }
