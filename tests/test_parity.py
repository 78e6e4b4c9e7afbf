"""Our model gives transformers' logits for the same random weights, for any CLIPSeg config."""

from __future__ import annotations

import pytest
import torch

import napari_clipseg as ncs
from conftest import make_hf_model, relative_error
from napari_clipseg.segmentation.prompts import tokenize

TOL = 5e-5  # of max |logit|, fp32

CONFIGS = {
    "tiny-refined": {},
    "simple-head-patch8": {
        "vision_config": {"patch_size": 8, "image_size": 64},
        "use_complex_transposed_convolution": False,
    },
    "gelu-eps-condlayer-extract": {
        "text_config": {"hidden_act": "gelu", "layer_norm_eps": 1e-6, "intermediate_size": 37},
        "vision_config": {"layer_norm_eps": 1e-6, "num_hidden_layers": 6, "intermediate_size": 50},
        "extract_layers": [0, 2, 5],
        "conditional_layer": 1,
        "decoder_num_attention_heads": 2,
        "reduce_dim": 24,
        "decoder_intermediate_size": 30,
    },
    "two-taps-no-film-step-0": {"extract_layers": [1, 3], "conditional_layer": 1, "projection_dim": 40},
    "legacy-eos-small-vocab": {
        "text_config": {"vocab_size": 99, "eos_token_id": 2, "max_position_embeddings": 20},
    },
    "film-never": {"conditional_layer": 5},
}


def _inputs(hf, size: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    text = hf.config.text_config
    pixels = torch.randn(3, 3, size, size, generator=gen)
    if text.vocab_size >= 49408:
        ids = tokenize(["a cat", "something to fill with water", "wood"])
    else:  # legacy configs pool the largest id: random ids, one clear maximum per row
        ids = torch.randint(3, text.vocab_size - 1, (3, 7), generator=gen)
        ids[torch.arange(3), torch.tensor([6, 3, 5])] = text.vocab_size - 1
    support = torch.randn(3, 3, size // 2 + 16, size // 2 + 16, generator=gen)
    embeddings = torch.randn(3, hf.config.projection_dim, generator=gen)
    return pixels, ids, support, embeddings


@pytest.mark.parametrize("name", list(CONFIGS))
def test_saved_transformers_model_loads_with_identical_logits(name, tmp_path):
    hf = make_hf_model(CONFIGS[name])
    hf.save_pretrained(tmp_path)
    ours = ncs.load_model(tmp_path, dtype="float32")  # parity is about the exact path
    size = 96 if hf.config.vision_config.patch_size == 16 else 48
    pixels, ids, support, embeddings = _inputs(hf, size)
    with torch.inference_mode():
        for kwargs, our_kwargs in (
            ({"input_ids": ids}, {"input_ids": ids}),
            ({"conditional_pixel_values": support}, {"conditional_pixel_values": support}),
            ({"conditional_embeddings": embeddings}, {"conditional_embeddings": embeddings}),
        ):
            expected = hf(pixel_values=pixels, **kwargs).logits
            got = ours(pixels, **our_kwargs)
            assert got.shape == expected.shape
            assert relative_error(expected, got) <= TOL, (name, list(kwargs))


def test_padded_text_with_attention_mask_matches(tmp_path):
    hf = make_hf_model()
    hf.save_pretrained(tmp_path)
    ours = ncs.load_model(tmp_path, dtype="float32")  # parity is about the exact path
    ids = tokenize(["a cat", "a very long description of a glass jar"])
    mask = (torch.arange(ids.shape[1])[None] <= (ids == 49407).int().argmax(1)[:, None]).long()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = hf(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits
        assert relative_error(expected, ours(pixels, input_ids=ids, attention_mask=mask)) <= TOL


def test_our_checkpoint_loads_in_transformers_with_identical_logits(tiny_model, tiny_model_dir):
    from transformers import CLIPSegForImageSegmentation

    hf = CLIPSegForImageSegmentation.from_pretrained(tiny_model_dir).eval()
    pixels, ids = torch.randn(2, 3, 352, 352), tokenize(["a cat", "a dog"])
    with torch.inference_mode():
        assert relative_error(hf(pixel_values=pixels, input_ids=ids).logits, tiny_model(pixels, input_ids=ids)) <= TOL


@pytest.mark.slow
def test_full_size_rd64_refined_matches_transformers(tmp_path):
    """The released architecture (ViT-B/16, rd64, refined head) at 352x352."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    from conftest import perturb_

    torch.manual_seed(0)
    config = CLIPSegConfig(vision_config={"patch_size": 16}, use_complex_transposed_convolution=True)
    hf = perturb_(CLIPSegForImageSegmentation(config)).eval()
    hf.save_pretrained(tmp_path)
    ours = ncs.load_model(tmp_path, dtype="float32")  # parity is about the exact path
    assert ours.config == ncs.ClipSegConfig()  # the registry's rd64-refined
    pixels = torch.randn(2, 3, 352, 352)
    ids = tokenize(["a glass", "something to fill"])
    support = torch.randn(2, 3, 352, 352)
    with torch.inference_mode():
        expected = hf(pixel_values=pixels, input_ids=ids).logits
        assert expected.shape == (2, 352, 352)
        assert relative_error(expected, ours(pixels, input_ids=ids)) <= TOL
        expected = hf(pixel_values=pixels, conditional_pixel_values=support).logits
        assert relative_error(expected, ours(pixels, conditional_pixel_values=support)) <= TOL
