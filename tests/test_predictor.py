"""ClipSegPredictor: image frame, caching, batching, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_clipseg as ncs
from napari_clipseg.segmentation.prompts import tokenize
from napari_clipseg.segmentation.transforms import resize, to_model_input


@pytest.fixture
def predictor(tiny_model):
    return ncs.ClipSegPredictor(tiny_model)


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).integers(0, 65535, (70, 90), dtype=np.uint16),
        np.random.default_rng(1).integers(0, 255, (60, 50, 3), dtype=np.uint8),
        np.random.default_rng(2).integers(0, 255, (40, 40, 4), dtype=np.uint8),
        np.random.default_rng(3).random((33, 47, 1)).astype(np.float32),
        np.random.default_rng(4).normal(size=(64, 64, 2)),
        np.random.default_rng(5).integers(-5, 5, (500, 380), dtype=np.int32),
    ],
    ids=["grey-uint16", "rgb-uint8", "rgba", "float-1ch", "2ch-float64", "int32-large"],
)
def test_probabilities_in_the_image_frame(predictor, image):
    predictor.set_image(image)
    probs = predictor.predict(["a cat", "a dog"])
    assert probs.shape == (2, *image.shape[:2]) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    assert predictor.image_shape == image.shape[:2]


def test_predict_equals_the_model_forward_resized(tiny_model, predictor, rng):
    image = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    predictor.set_image(image)
    probs = predictor.predict(["a cat", "a dog"])
    with torch.inference_mode():
        logits = tiny_model(to_model_input(image), input_ids=tokenize(["a cat", "a dog"]))
        expected = torch.sigmoid(resize(logits[:, None], (120, 200))[:, 0]).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_image_encoded_once_and_prompts_cached(tiny_model, predictor, rng):
    vision_calls = []
    hook = tiny_model.clip.visual.conv1.register_forward_hook(lambda *_: vision_calls.append(1))
    try:
        predictor.set_image(rng.random((64, 64)))
        first = predictor.predict(["nucleus", "membrane"])
        again = predictor.predict(["membrane", "nucleus", "nucleus"])
        assert len(vision_calls) == 1
        assert predictor.text_cache.encoded == 2
        np.testing.assert_array_equal(again[0], first[1])
        np.testing.assert_array_equal(again[1], again[2])
        predictor.set_image(rng.random((64, 64)))  # a new image keeps the text cache
        predictor.predict(["nucleus", "cytoplasm"])
        assert len(vision_calls) == 2 and predictor.text_cache.encoded == 3
    finally:
        hook.remove()


def test_several_prompts_equal_single_prompts(predictor, rng):
    predictor.set_image(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8))
    together = predictor.predict(["a", "b c", "a dog on grass"])
    alone = np.stack([predictor.predict(p)[0] for p in ["a", "b c", "a dog on grass"]])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_many_prompts_decode_in_batches(predictor, rng):
    predictor.set_image(rng.random((32, 32)))
    prompts = [f"thing number {i}" for i in range(40)]
    probs = predictor.predict(prompts)
    assert probs.shape == (40, 32, 32)
    np.testing.assert_allclose(probs[37], predictor.predict(prompts[37])[0], atol=1e-6)


def test_clear_errors(predictor, tiny_model_dir):
    with pytest.raises(RuntimeError, match=r"set_image\(image\)"):
        predictor.predict("cat")
    with pytest.raises(ValueError, match="at least 16x16"):
        predictor.set_image(np.zeros((1, 1)))
    with pytest.raises(ValueError, match="shape"):
        predictor.set_image(np.zeros((4, 32, 32, 3)))
    with pytest.raises(ValueError, match="empty"):
        predictor.set_image(np.zeros((0, 32)))
    predictor.set_image(np.zeros((32, 32)))
    with pytest.raises(ValueError, match="empty"):
        predictor.predict(["cat", "  "])
    with pytest.raises(ValueError, match="at least one"):
        predictor.predict([])
    predictor.reset_image()
    assert not predictor.is_image_set
    with pytest.raises(RuntimeError):
        predictor.predict("cat")


def test_failed_set_image_keeps_the_previous_image(predictor, rng):
    predictor.set_image(rng.random((40, 40)))
    with pytest.raises(ValueError):
        predictor.set_image(np.zeros((2, 2)))
    assert predictor.image_shape == (40, 40)


def test_small_vocabulary_model_refuses_text(tmp_path):
    from conftest import make_hf_model

    make_hf_model({"text_config": {"vocab_size": 99, "eos_token_id": 2}}).save_pretrained(tmp_path)
    predictor = ncs.ClipSegPredictor(ncs.load_model(tmp_path, dtype="float32"))
    predictor.set_image(np.zeros((32, 32)))
    with pytest.raises(ValueError, match="vocabulary"):
        predictor.predict("cat")


def test_bfloat16_autocast_on_cpu_is_close(tiny_model_dir, rng):
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    results = []
    for dtype in (None, "bfloat16"):
        predictor = ncs.ClipSegPredictor(ncs.load_model(tiny_model_dir, dtype=dtype))
        predictor.set_image(image)
        results.append(predictor.predict(["a cat"]))
    assert results[1].dtype == np.float32
    np.testing.assert_allclose(results[0], results[1], atol=0.05)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((20, 128, 128), r"\(20, 128, 128\) is ambiguous.*ncs.segment"),
        ((64, 64, 5), r"\(64, 64, 5\) is ambiguous.*channels="),
        ((2, 3, 64, 64), r"got shape \(2, 3, 64, 64\)"),
    ],
)
def test_shapes_are_never_guessed(predictor, shape, message):
    with pytest.raises(ValueError, match=message):
        predictor.set_image(np.zeros(shape, np.uint16))
    assert not predictor.is_image_set


def test_an_explicit_channel_choice_takes_any_number_of_channels(predictor, rng):
    image = rng.integers(0, 4000, (48, 48, 6), dtype=np.uint16)
    [features] = predictor.encode([image], value_range=(0, 4000), channels=(5, 0, -1))
    chosen = np.stack([image[..., 5], image[..., 0], np.zeros_like(image[..., 0])], -1)
    [expected] = predictor.encode([chosen], value_range=(0, 4000))
    torch.testing.assert_close(features.reduced[0], expected.reduced[0])


def test_wrong_argument_types_say_what_to_pass(predictor, tiny_model_dir):
    with pytest.raises(TypeError, match=r"load it first with ncs\.load_model"):
        ncs.ClipSegPredictor(str(tiny_model_dir))
    predictor.set_image(np.zeros((32, 32)))
    for bad in (None, 5):
        with pytest.raises(TypeError, match="a text, a VisualPrompt, or a list of them"):
            predictor.predict(bad)
    with pytest.raises(TypeError, match="real numbers"):
        predictor.set_image(np.zeros((32, 32), np.complex64))


def test_stop_ends_an_encoding_between_blocks(tiny_model, rng):
    from napari_clipseg.errors import RunCancelled

    predictor = ncs.ClipSegPredictor(tiny_model)
    ran = []
    blocks = tiny_model.clip.visual.transformer.resblocks
    hooks = [b.register_forward_hook(lambda *_: ran.append(1)) for b in blocks]
    hooks.append(blocks[0].register_forward_hook(lambda *_: predictor.stop.set()))  # Cancel during block 0
    try:
        with pytest.raises(RunCancelled):
            predictor.set_image(rng.random((32, 32)))
    finally:
        for h in hooks:
            h.remove()
    assert len(ran) == 1 and not predictor.is_image_set and len(predictor.feature_cache) == 0
    predictor.stop.clear()
    predictor.set_image(rng.random((32, 32)))
    assert predictor.is_image_set
