"""Frozen model configuration, a registry of named configs, and the mapping from HF configs.

Every field of transformers' ``CLIPSegConfig`` that changes the computation has a field here,
so any checkpoint written by ``CLIPSegForImageSegmentation.save_pretrained`` can be rebuilt.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..constants import EXTRACT_LAYERS
from ..errors import ArchitectureMismatchError

if TYPE_CHECKING:
    import torch

_ACTIVATIONS = ("quick_gelu", "gelu")


def _check_positive(owner: object, names: tuple[str, ...]) -> None:
    """Raise ValueError unless each named field of ``owner`` is a whole number >= 1."""
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(owner).__name__}.{name} must be a whole number >= 1; got {value!r}")


@dataclass(frozen=True)
class TowerConfig:
    """One CLIP transformer tower (vision or text).

    Attributes:
        width: Token width (HF ``hidden_size``).
        layers: Number of residual blocks (HF ``num_hidden_layers``).
        heads: Attention heads (HF ``num_attention_heads``).
        mlp_dim: Hidden size of the block MLP (HF ``intermediate_size``).
        act: ``"quick_gelu"`` (OpenAI CLIP) or ``"gelu"`` (exact GELU).
        layer_norm_eps: Epsilon of every LayerNorm in the tower.
    """

    width: int
    layers: int
    heads: int
    mlp_dim: int
    act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check_positive(self, ("width", "layers", "heads", "mlp_dim"))


@dataclass(frozen=True)
class VisionConfig(TowerConfig):
    """Vision tower: a ViT whose position embedding was trained for ``image_size``."""

    patch_size: int = 16
    image_size: int = 224

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, ("patch_size", "image_size"))
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")


@dataclass(frozen=True)
class TextConfig(TowerConfig):
    """Text tower: causal transformer over CLIP BPE tokens.

    ``eos_token_id`` selects the pooled token exactly as transformers does: the value 2 (legacy
    configs) means "position of the largest token id", anything else "first position of that id".
    """

    vocab_size: int = 49408
    context_length: int = 77
    eos_token_id: int = 49407

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, ("vocab_size", "context_length"))


@dataclass(frozen=True)
class ClipSegConfig:
    """Whole CLIPSeg model: CLIP towers plus the light-weight decoder.

    Attributes:
        vision, text: The two CLIP towers.
        projection_dim: Size of the joint CLIP embedding (the conditional vector).
        extract_layers: 0-based vision blocks tapped for the decoder, in increasing order.
        reduce_dim: Decoder token width (the "rd" in rd64).
        decoder_heads: Attention heads of each decoder block.
        decoder_mlp_dim: FFN size of each decoder block.
        conditional_layer: Decoder step (0 = deepest tap) at which FiLM conditioning is applied.
        refined: Refined (conv + two transposed convs) or simple (one transposed conv) head.
    """

    vision: VisionConfig = field(default_factory=lambda: VisionConfig(width=768, layers=12, heads=12, mlp_dim=3072))
    text: TextConfig = field(default_factory=lambda: TextConfig(width=512, layers=12, heads=8, mlp_dim=2048))
    projection_dim: int = 512
    extract_layers: tuple[int, ...] = EXTRACT_LAYERS
    reduce_dim: int = 64
    decoder_heads: int = 4
    decoder_mlp_dim: int = 2048
    conditional_layer: int = 0
    refined: bool = True

    def __post_init__(self) -> None:
        _check_positive(self, ("projection_dim", "reduce_dim", "decoder_heads", "decoder_mlp_dim"))
        object.__setattr__(self, "extract_layers", tuple(int(i) for i in self.extract_layers))
        layers = self.extract_layers
        if not layers or list(layers) != sorted(set(layers)):
            raise ValueError(f"extract_layers must be increasing and non-empty; got {layers}")
        if layers[0] < 0 or layers[-1] >= self.vision.layers:
            raise ValueError(
                f"extract_layers {layers} must lie in [0, {self.vision.layers - 1}] "
                f"(the vision tower has {self.vision.layers} blocks)"
            )
        for tower in (self.vision, self.text):
            if tower.act not in _ACTIVATIONS:
                raise ValueError(f"activation {tower.act!r} is not supported; use one of {_ACTIVATIONS}")
            if tower.width % tower.heads:
                raise ValueError(f"width {tower.width} is not divisible by {tower.heads} heads")
        if self.reduce_dim % self.decoder_heads:
            raise ValueError(f"reduce_dim {self.reduce_dim} is not divisible by {self.decoder_heads} heads")
        if self.refined and self.vision.patch_size % 4:
            raise ValueError("the refined head needs a patch size divisible by 4")

    @property
    def deepest_layer(self) -> int:
        """Index of the last vision block the decoder needs."""
        return self.extract_layers[-1]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON serialisable)."""
        return dataclasses.asdict(self)


def _tower_from_hf(cls: type, cfg: dict[str, Any], **extra: Any) -> Any:
    return cls(
        width=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"],
        heads=cfg["num_attention_heads"],
        mlp_dim=cfg["intermediate_size"],
        act=cfg.get("hidden_act", "quick_gelu"),
        layer_norm_eps=cfg.get("layer_norm_eps", 1e-5),
        **extra,
    )


def from_hf_config(hf: dict[str, Any]) -> ClipSegConfig:
    """Build a config from the ``config.json`` dict of a transformers CLIPSeg checkpoint.

    Missing fields take transformers' own defaults (``CLIPSegConfig`` / ``CLIPSeg*Config``), so a
    minimal config.json means the same model here as there.

    Raises:
        ValueError: if the config describes something this model cannot compute.
    """
    vision_hf = {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
        **(hf.get("vision_config") or {}),
    }
    text_hf = {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "vocab_size": 49408,
        "max_position_embeddings": 77,
        "eos_token_id": 49407,
        **(hf.get("text_config") or {}),
    }
    if vision_hf.get("num_channels", 3) != 3:
        raise ValueError("only 3-channel vision towers are supported")
    vision = _tower_from_hf(
        VisionConfig, vision_hf, patch_size=vision_hf["patch_size"], image_size=vision_hf["image_size"]
    )
    text = _tower_from_hf(
        TextConfig,
        text_hf,
        vocab_size=text_hf["vocab_size"],
        context_length=text_hf["max_position_embeddings"],
        eos_token_id=text_hf["eos_token_id"],
    )
    return ClipSegConfig(
        vision=vision,
        text=text,
        projection_dim=hf.get("projection_dim", 512),
        extract_layers=tuple(hf.get("extract_layers", EXTRACT_LAYERS)),
        reduce_dim=hf.get("reduce_dim", 64),
        decoder_heads=hf.get("decoder_num_attention_heads", 4),
        decoder_mlp_dim=hf.get("decoder_intermediate_size", 2048),
        conditional_layer=hf.get("conditional_layer", 0),
        refined=bool(hf.get("use_complex_transposed_convolution", False)),
    )


def to_hf_config(config: ClipSegConfig) -> dict[str, Any]:
    """Inverse of :func:`from_hf_config`: a dict transformers' ``CLIPSegConfig(**d)`` accepts."""

    def tower(t: TowerConfig) -> dict[str, Any]:
        return {
            "hidden_size": t.width,
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "intermediate_size": t.mlp_dim,
            "hidden_act": t.act,
            "layer_norm_eps": t.layer_norm_eps,
        }

    v, t = config.vision, config.text
    return {
        "model_type": "clipseg",
        "vision_config": {**tower(v), "patch_size": v.patch_size, "image_size": v.image_size},
        "text_config": {
            **tower(t),
            "vocab_size": t.vocab_size,
            "max_position_embeddings": t.context_length,
            "eos_token_id": t.eos_token_id,
        },
        "projection_dim": config.projection_dim,
        "extract_layers": list(config.extract_layers),
        "reduce_dim": config.reduce_dim,
        "decoder_num_attention_heads": config.decoder_heads,
        "decoder_intermediate_size": config.decoder_mlp_dim,
        "conditional_layer": config.conditional_layer,
        "use_complex_transposed_convolution": config.refined,
    }


def _released(reduce_dim: int, refined: bool) -> ClipSegConfig:
    return ClipSegConfig(reduce_dim=reduce_dim, refined=refined)


def _tiny(refined: bool = True) -> ClipSegConfig:
    """A few-second CPU model for tests: real tokenizer vocabulary, tiny widths."""
    return ClipSegConfig(
        vision=VisionConfig(width=32, layers=5, heads=4, mlp_dim=64, patch_size=16, image_size=224),
        text=TextConfig(width=32, layers=2, heads=4, mlp_dim=64),
        projection_dim=32,
        extract_layers=(1, 2, 3),
        reduce_dim=16,
        decoder_heads=4,
        decoder_mlp_dim=64,
        refined=refined,
    )


#: Named configs. The released ones match the CIDAS hub checkpoints and the original .pth files.
CONFIGS: dict[str, ClipSegConfig] = {
    "rd64-refined": _released(64, refined=True),
    "rd64": _released(64, refined=False),
    "rd16": _released(16, refined=False),
    "tiny": _tiny(refined=True),
    "tiny-simple": _tiny(refined=False),
}


def get_config(name: str) -> ClipSegConfig:
    """Look up a named config (see :data:`CONFIGS`)."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}") from None


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def infer_original_config(state: dict[str, torch.Tensor]) -> ClipSegConfig:
    """Config of an original-format model from tensor shapes (our keys).

    Shapes fix every size except head counts (OpenAI CLIP uses 64-wide heads, the decoder 4) and
    the extract layers (the released weights use (3, 6, 9)); pass ``config`` to
    :func:`load_model` when a checkpoint differs.
    """
    try:
        conv = state["clip.visual.conv1.weight"]
        width, patch = conv.shape[0], conv.shape[-1]
        grid = round((state["clip.visual.positional_embedding"].shape[0] - 1) ** 0.5)
        text_width = state["clip.token_embedding.weight"].shape[1]
        n_reduces = _count_blocks(state, "decoder.reduces.")
        vision = VisionConfig(
            width=width,
            layers=_count_blocks(state, "clip.visual.transformer.resblocks."),
            heads=max(1, width // 64),
            mlp_dim=state["clip.visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            patch_size=patch,
            image_size=grid * patch,
        )
        text = TextConfig(
            width=text_width,
            layers=_count_blocks(state, "clip.transformer.resblocks."),
            heads=max(1, text_width // 64),
            mlp_dim=state["clip.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            vocab_size=state["clip.token_embedding.weight"].shape[0],
            context_length=state["clip.positional_embedding"].shape[0],
        )
        if n_reduces != 3:
            raise ArchitectureMismatchError(f"the decoder has {n_reduces} layers; pass config= with its extract_layers")
        return ClipSegConfig(
            vision=vision,
            text=text,
            projection_dim=state["clip.visual.proj"].shape[1],
            reduce_dim=state["decoder.film_mul.weight"].shape[0],
            decoder_mlp_dim=state["decoder.blocks.0.linear1.weight"].shape[0],
            refined="decoder.trans_conv.0.weight" in state,
        )
    except KeyError as e:
        raise ArchitectureMismatchError(f"not a CLIPSeg decoder / CLIP backbone checkpoint: no key {e}") from None
