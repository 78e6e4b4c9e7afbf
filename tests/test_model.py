"""Model internals that parity alone would not pin down: early stop, pos-emb, text cut, sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import napari_clipseg as ncs
from napari_clipseg.modeling import backbone
from napari_clipseg.modeling.config import (
    ClipSegConfig,
    TextConfig,
    VisionConfig,
    from_hf_config,
    get_config,
    to_hf_config,
)
from napari_clipseg.segmentation.prompts import tokenize


def test_vision_tower_stops_after_deepest_extract_layer(tiny_model):
    calls = []
    hooks = [
        b.register_forward_hook(lambda *_, i=i: calls.append(i))
        for i, b in enumerate(tiny_model.clip.visual.transformer.resblocks)
    ]
    try:
        with torch.inference_mode():
            tiny_model.encode_image(torch.randn(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    assert calls == list(range(tiny_model.config.deepest_layer + 1))
    assert len(tiny_model.clip.visual.transformer.resblocks) > len(calls)


def test_pos_embed_rescale_is_plain_bicubic_without_antialias():
    gen = torch.Generator().manual_seed(0)
    pe = torch.randn(1 + 14 * 14, 8, generator=gen)
    out = backbone.rescaled_pos_embed(pe, (22, 22))
    grid = pe[1:].T.reshape(1, 8, 14, 14)
    reference = F.interpolate(grid, (22, 22), mode="bicubic", align_corners=False).reshape(8, -1).T
    assert torch.equal(out[0], pe[0]) and torch.allclose(out[1:], reference, atol=1e-6)
    antialiased = F.interpolate(grid, (22, 22), mode="bicubic", align_corners=False, antialias=True)
    assert not torch.allclose(out[1:], antialiased.reshape(8, -1).T, atol=1e-3)
    assert backbone.rescaled_pos_embed(pe, (14, 14)) is pe


def test_text_cut_after_longest_eot_is_exact(tiny_model):
    prompts = ["a cat", "mitochondria in an electron micrograph"]
    full = tokenize(prompts)
    assert full.shape[1] < 77
    padded = torch.zeros(2, 77, dtype=torch.long)
    padded[:, : full.shape[1]] = full
    with torch.inference_mode():
        short, long = tiny_model.encode_text(full), tiny_model.encode_text(padded)
    assert torch.allclose(short, long, atol=1e-5)


def test_one_image_many_prompts_equals_repeated_images(tiny_model):
    pixels = torch.randn(1, 3, 96, 96)
    ids = tokenize(["a cat", "a dog", "grass"])
    with torch.inference_mode():
        broadcast = tiny_model(pixels, input_ids=ids)
        repeated = tiny_model(pixels.expand(3, -1, -1, -1), input_ids=ids)
    assert broadcast.shape == (3, 96, 96)
    assert torch.allclose(broadcast, repeated, atol=1e-5)


def test_forward_rejects_ambiguous_or_mismatched_conditionals(tiny_model):
    pixels = torch.randn(2, 3, 64, 64)
    ids = tokenize(["a", "b", "c"])
    with pytest.raises(ValueError, match="exactly one"):
        tiny_model(pixels, input_ids=ids[:2], conditional_embeddings=torch.randn(2, 24))
    with pytest.raises(ValueError, match="exactly one"):
        tiny_model(pixels)
    with pytest.raises(ValueError, match="2 query images but 3"):
        tiny_model(pixels, input_ids=ids)
    with pytest.raises(ValueError, match=r"\(batch, 32\)"):
        tiny_model(pixels, conditional_embeddings=torch.randn(2, 7))


def test_decoder_parameter_counts_match_the_paper_and_transformers():
    """reference §1.5: 1,127,009 (refined, = HF decoder.*) and 1,073,153 (simple), without `reduce`."""
    for name, expected in (("rd64-refined", 1_127_009), ("rd64", 1_073_153)):
        with torch.device("meta"):
            model = ncs.ClipSeg(ncs.ClipSegConfig() if name == "rd64-refined" else get_config(name))
        assert sum(p.numel() for p in model.decoder.parameters()) == expected


def test_hf_config_roundtrip_and_defaults():
    cfg = ClipSegConfig(
        vision=VisionConfig(width=64, layers=5, heads=2, mlp_dim=100, act="gelu", patch_size=8, image_size=64),
        text=TextConfig(width=48, layers=3, heads=3, mlp_dim=90, eos_token_id=2, vocab_size=500),
        extract_layers=(0, 4),
        conditional_layer=1,
        refined=False,
    )
    assert from_hf_config(to_hf_config(cfg)) == cfg
    # an empty CLIPSeg config.json means transformers' defaults: patch 32, simple head
    default = from_hf_config({})
    assert default.vision.patch_size == 32 and not default.refined and default.extract_layers == (3, 6, 9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"extract_layers": (6, 3)}, "increasing"),
        ({"extract_layers": (3, 12)}, r"\[0, 11\]"),
        ({"reduce_dim": 30}, "divisible"),
        ({"vision": VisionConfig(width=768, layers=12, heads=12, mlp_dim=3072, act="silu")}, "not supported"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClipSegConfig(**kwargs)


def test_the_cached_position_embedding_follows_the_weights(rng):
    """The rescaled position embedding is kept between images, but never outlives a change of weights."""
    model = ncs.build_model("tiny", seed=0).eval()
    pixels = torch.from_numpy(rng.normal(size=(1, 3, 64, 96)).astype(np.float32))  # a grid unlike the stored one
    before = model.encode_image(pixels).reduced[0]
    with torch.no_grad():
        model.clip.visual.positional_embedding.mul_(3.0)  # in place: same storage, new version
    after = model.encode_image(pixels).reduced[0]
    fresh = ncs.build_model("tiny", seed=0).eval()
    with torch.no_grad():
        fresh.clip.visual.positional_embedding.mul_(3.0)
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, fresh.encode_image(pixels).reduced[0], rtol=0, atol=0)
