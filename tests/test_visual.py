"""Visual prompts: the engineered support image, and how it conditions the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

import napari_clipseg as ncs
from conftest import make_hf_model, relative_error
from napari_clipseg.constants import IMAGENET_MEAN, IMAGENET_STD
from napari_clipseg.segmentation.transforms import resize, to_model_input
from napari_clipseg.segmentation.visual import RECIPES, crop_box


def reference_recipe(image01: np.ndarray, mask: np.ndarray, crop: bool, blur: bool, background: float) -> np.ndarray:
    """Independent re-implementation of the reference's crop/blur/highlight, for a 352x352 image."""
    norm = (image01 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    m = mask.astype(np.float64)[..., None]
    bg = ndimage.gaussian_filter(norm, sigma=(3, 3, 0), mode="mirror", truncate=7 / 3) if blur else norm
    out = norm * m + background * bg * (1 - m)
    if crop:
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        h, w = y1 - y0, x1 - x0
        y0, y1 = int(max(0, y0 - 0.1 * h)), int(min(352, y1 + 0.1 * h))
        x0, x1 = int(max(0, x0 - 0.1 * w)), int(min(352, x1 + 0.1 * w))
        out = out[y0:y1, x0:x1]
        h, w = out.shape[:2]
        side = max(h, w)
        square = np.zeros((side, side, 3))
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = out
        idx = np.floor(np.arange(352, dtype=np.float32) * np.float32(side / 352)).astype(int)
        out = square[idx][:, idx]
    return out.transpose(2, 0, 1).astype(np.float32)


@pytest.fixture(params=["wide", "tall"])
def scene(request, rng):
    """An image in the model frame and a box whose padded sides differ by an odd number of pixels."""
    image = rng.random((352, 352, 3)).astype(np.float32)
    mask = np.zeros((352, 352), bool)
    if request.param == "wide":
        mask[100:162, 40:251] = True  # crop 75 x 254: padding above and below, 89 + 90
    else:
        mask[30:300, 200:242] = True  # crop 324 x 51: padding left and right, 136 + 137
    return image, mask


@pytest.mark.parametrize("mode", ["crop_darken", "crop", "darken", "mask", "none"])
def test_engineering_without_blur_is_exact(scene, mode):
    image, mask = scene
    r = RECIPES[mode]
    expected = reference_recipe(image, mask, r.crop, r.blur, r.background)
    np.testing.assert_allclose(ncs.engineer_visual_prompt(image, mask, mode), expected, atol=2e-6)


@pytest.mark.parametrize("mode", ["crop_blur_darken", "blur_darken", "blur", "crop_blur"])
def test_engineering_with_blur_is_close(scene, mode):
    image, mask = scene
    r = RECIPES[mode]
    expected = reference_recipe(image, mask, r.crop, r.blur, r.background)
    got = ncs.engineer_visual_prompt(image, mask, mode)
    assert got.shape == (3, 352, 352) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_crop_box_context_and_clipping():
    mask = torch.zeros(100, 80, dtype=torch.bool)
    mask[20:40, 10:30] = True  # 20x20 region: 10 % context = 2 px per side
    assert crop_box(mask) == (18, 42, 8, 32)
    mask = torch.zeros(100, 80, dtype=torch.bool)
    mask[0:50, 70:80] = True  # touching the top and right borders: clipped
    assert crop_box(mask) == (0, 55, 69, 80)


def test_default_is_the_papers_best():
    best = max((m for m in RECIPES.values() if m.delta_p is not None), key=lambda m: m.delta_p)
    assert RECIPES["crop_blur_darken"] is best and (best.crop, best.blur, best.background) == (True, True, 0.1)
    assert ncs.VisualPrompt(np.ones((4, 4))).mode == "crop_blur_darken"


def boxed(model, rng, shape, box):
    """A random RGB image of ``shape``, a box mask ``(y0, y1, x0, x1)`` on it, and a predictor on it."""
    image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    mask = np.zeros(shape, bool)
    mask[box[0] : box[1], box[2] : box[3]] = True
    predictor = ncs.ClipSegPredictor(model)
    predictor.set_image(image)
    return image, mask, predictor


def test_visual_prompt_equals_the_forward_with_the_engineered_support(tiny_model, rng):
    image, mask, predictor = boxed(tiny_model, rng, (120, 200), (30, 70, 50, 120))
    probs = predictor.predict([ncs.VisualPrompt(mask)])
    support = torch.from_numpy(ncs.engineer_visual_prompt(image, mask))[None]
    with torch.inference_mode():
        logits = tiny_model(to_model_input(image), conditional_pixel_values=support)
        expected = torch.sigmoid(resize(logits[:, None], (120, 200))[:, 0]).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_transformers_conditional_pixel_values_agrees(tmp_path, rng):
    make_hf_model().save_pretrained(tmp_path)
    from transformers import CLIPSegForImageSegmentation

    hf = CLIPSegForImageSegmentation.from_pretrained(tmp_path).eval()
    predictor = ncs.ClipSegPredictor(ncs.load_model(tmp_path, dtype="float32"))
    image = rng.integers(0, 255, (352, 352, 3), dtype=np.uint8)
    mask = np.zeros((352, 352), bool)
    mask[50:200, 100:180] = True
    predictor.set_image(image)
    ours = predictor.predict_logits(predictor.embed_prompts([ncs.VisualPrompt(mask)]))
    support = torch.from_numpy(ncs.engineer_visual_prompt(image, mask))[None]
    with torch.inference_mode():
        expected = hf(pixel_values=to_model_input(image), conditional_pixel_values=support).logits
    assert relative_error(expected, ours) <= 5e-5


def test_several_examples_average_and_text_mixes_linearly(tiny_model, rng):
    image = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    a, b = np.zeros((96, 96), bool), np.zeros((96, 96), bool)
    a[10:40, 10:40], b[50:90, 30:80] = True, True
    predictor = ncs.ClipSegPredictor(tiny_model)
    predictor.set_image(image)
    va, vb, both, text = predictor.embed_prompts(
        [ncs.VisualPrompt(a), ncs.VisualPrompt(b), ncs.VisualPrompt([a, b]), "a cat"]
    )
    torch.testing.assert_close(both, (va + vb) / 2, atol=1e-6, rtol=0)
    (mixed,) = predictor.embed_prompts([ncs.VisualPrompt([a, b], text="a cat", weight=0.3)])
    torch.testing.assert_close(mixed, 0.3 * both + 0.7 * text, atol=1e-6, rtol=0)
    (text_only,) = predictor.embed_prompts([ncs.VisualPrompt(a, text="a cat", weight=0.0)])
    torch.testing.assert_close(text_only, text, atol=1e-6, rtol=0)


def test_text_and_visual_prompts_mix_in_one_call(tiny_model, rng):
    image, mask, predictor = boxed(tiny_model, rng, (64, 80), (10, 30, 20, 50))
    visual = ncs.VisualPrompt(mask, name="my thing")
    together = predictor.predict(["a cat", visual])
    np.testing.assert_allclose(together[0], predictor.predict("a cat")[0], atol=1e-6)
    np.testing.assert_allclose(together[1], predictor.predict([visual])[0], atol=1e-6)
    result = ncs.run(ncs.iter_segment(image, ["a cat", visual], predictor))
    assert result.prompts == ["a cat", "my thing"]


def test_one_shot_from_a_reference_image(tiny_model, rng):
    reference = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    query = rng.integers(0, 255, (50, 70), dtype=np.uint16)
    mask = np.zeros((80, 80), bool)
    mask[20:60, 20:60] = True
    predictor = ncs.ClipSegPredictor(tiny_model)
    predictor.set_image(query)
    probs = predictor.predict([ncs.VisualPrompt(mask, image=reference)])
    assert probs.shape == (1, 50, 70)
    (expected,) = predictor.embed_prompts([ncs.VisualPrompt(mask, image=reference)])
    with torch.inference_mode():
        direct = tiny_model.encode_support(torch.from_numpy(ncs.engineer_visual_prompt(reference, mask))[None])[0]
    torch.testing.assert_close(expected, direct, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((64, 64), bool), "empty"),
        (np.pad(np.ones((1, 1), bool), ((10, 53), (10, 53))), "only 1 pixel"),
        (np.ones((32, 32), bool), "32x32 but its image is 64x64"),
        (np.ones((2, 64, 64), bool)[None], "2D"),
    ],
    ids=["empty", "single-pixel", "other-shape", "not-2d"],
)
def test_bad_support_regions_are_explained(tiny_model, mask, message):
    predictor = ncs.ClipSegPredictor(tiny_model)
    predictor.set_image(np.zeros((64, 64)))
    with pytest.raises(ValueError, match=message):
        predictor.predict([ncs.VisualPrompt(mask)])
    assert predictor.is_image_set  # nothing else changed


def test_visual_prompt_argument_checks(tiny_model):
    mask = np.ones((20, 20), bool)
    with pytest.raises(ValueError, match="unknown visual prompt mode"):
        ncs.VisualPrompt(mask, mode="sepia")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ncs.VisualPrompt(mask, weight=1.5)
    with pytest.raises(ValueError, match="at least one"):
        ncs.VisualPrompt([])
    with pytest.raises(RuntimeError, match="set_image"):
        ncs.ClipSegPredictor(tiny_model).embed_prompts([ncs.VisualPrompt(mask)])


@pytest.mark.parametrize(
    "convert",
    [
        lambda m: m,
        lambda m: m.astype(np.uint16) * 3,
        lambda m: m.astype(np.float32),
        lambda m: m.tolist(),
        lambda m: torch.from_numpy(m),
        lambda m: __import__("dask.array").array.from_array(m, chunks=16),
    ],
    ids=["bool", "labels", "float01", "nested-list", "torch", "dask"],
)
def test_any_2d_array_like_is_one_mask(tiny_model, convert):
    mask = np.zeros((64, 64), bool)
    mask[10:40, 20:50] = True
    prompt = ncs.VisualPrompt(convert(mask))
    assert len(prompt.masks) == 1 and prompt.masks[0].dtype == bool
    np.testing.assert_array_equal(prompt.masks[0], mask)
    several = ncs.VisualPrompt([convert(mask), convert(np.ascontiguousarray(mask[::-1]))])
    assert len(several.masks) == 2


@pytest.mark.parametrize(
    ("mask", "error", "message"),
    [
        (np.ones((64, 64, 1), bool), ValueError, r"2D \(Y, X\); got shape \(64, 64, 1\)"),
        (np.ones((64, 64, 3), np.uint8), ValueError, r"got shape \(64, 64, 3\)"),
        (np.full((64, 64), np.nan), ValueError, "no NaN"),
        (np.full((64, 64), 2.0), ValueError, r"\[0, 1\]"),
        (np.full((64, 64), 1 + 1j), TypeError, "complex"),
    ],
    ids=["yx1", "yx3", "nan", "above-one", "complex"],
)
def test_masks_that_would_be_a_guess_are_refused(mask, error, message):
    with pytest.raises(error, match=message):
        ncs.VisualPrompt(mask)
