"""Visual prompts: segment by example, with the paper's visual prompt engineering.

A support region (mask) on an image becomes a conditional vector: the image is brought to the
model frame (352x352, ImageNet-normalised, as a query image is), then the background is blurred
and/or darkened *in normalised space*, the region's box (plus 10 % context) is cropped, padded to a
square with zeros (= the mean colour) and resized to 352 with nearest-neighbour interpolation;
CLIP's image tower turns it into the conditional (reference/clipseg.md §2.2, paper Table 2).

Differences from the original code, on purpose: its ``crop_mask`` measures both box axes with the
mask's first dimension (correct only for the square images it was used with); here each axis uses
its own size, which is identical for square inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import DEFAULT_PERCENTILES, INPUT_SIZE
from .transforms import to_model_input

BLUR_SIGMA, BLUR_SIZE, CONTEXT = 3.0, 15, 0.1
#: Smallest support region, in pixels of the image it is drawn on.
MIN_SUPPORT_PIXELS = 9


@dataclass(frozen=True)
class Engineering:
    """One row of the paper's Table 2: crop to the region, blur and/or scale the background."""

    crop: bool
    blur: bool
    background: float  # factor on the (blurred) background in normalised space: 1 keeps it, 0 removes it
    delta_p: float | None = None  # the paper's ΔP(object) for this variant (Table 2)


#: Selectable variants; the default is the paper's best.
RECIPES: dict[str, Engineering] = {
    "crop_blur_darken": Engineering(True, True, 0.1, 23.50),
    "crop_darken": Engineering(True, False, 0.1, 21.73),
    "crop_blur": Engineering(True, True, 1.0, 15.34),
    "crop": Engineering(True, False, 1.0, 13.60),
    "blur_darken": Engineering(False, True, 0.1, 21.73),
    "darken": Engineering(False, False, 0.1, 13.85),
    "blur": Engineering(False, True, 1.0, 13.15),
    "mask": Engineering(False, False, 0.0, 23.40),
    "none": Engineering(False, False, 1.0, None),
}
DEFAULT_MODE = "crop_blur_darken"


@dataclass(frozen=True, eq=False)
class VisualPrompt:
    """A class given by example: one or several support regions, optionally mixed with a text.

    Args:
        mask: ``(Y, X)`` support region, or a list of them (several examples of the same class;
            their conditionals are averaged). Any 2D array-like (numpy, dask, torch, nested
            lists): bool, integer labels (non-zero = inside), or floats in [0, 1] (>= 0.5 = inside).
        image: The image the masks are drawn on (any dtype/channels, as for ``set_image``); a
            sequence gives one image per mask. ``None`` means the predictor's current image.
        text: Optional text for the same class; mixed as ``weight * visual + (1 - weight) * text``.
        weight: Weight ``a`` of the visual part in [0, 1] (only used with ``text``).
        mode: Prompt engineering variant, a key of :data:`RECIPES` (default: the paper's best).
        name: Class name for layers and exports (default: the text, else ``"example"``).
    """

    mask: np.ndarray | Sequence[np.ndarray]
    image: np.ndarray | Sequence[np.ndarray] | None = None
    text: str | None = None
    weight: float = 1.0
    mode: str = DEFAULT_MODE
    name: str | None = None
    masks: tuple[np.ndarray, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "masks", tuple(mask_inside(m) for m in _split_masks(self.mask)))
        if self.mode not in RECIPES:
            raise ValueError(f"unknown visual prompt mode {self.mode!r}; choose one of {', '.join(RECIPES)}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must lie in [0, 1]; got {self.weight}")
        if self.text is not None and not self.text.strip():
            raise ValueError("the text of a visual prompt must not be empty (use text=None)")

    @property
    def label(self) -> str:
        return self.name or self.text or "example"

    def images(self, current: np.ndarray | None) -> list[np.ndarray]:
        """The image of each mask (``current`` where none was given)."""
        if self.image is None:
            if current is None:
                raise RuntimeError("this visual prompt has no image: call set_image(...) first or pass image=")
            return [current] * len(self.masks)
        if isinstance(self.image, np.ndarray) or hasattr(self.image, "shape"):
            return [np.asarray(self.image)] * len(self.masks)
        images = [np.asarray(i) for i in self.image]
        if len(images) != len(self.masks):
            raise ValueError(f"got {len(images)} images for {len(self.masks)} support masks")
        return images


def _split_masks(mask: Any) -> list[Any]:
    """One mask, or the masks of a list of 2D masks (a nested list of numbers is one mask)."""
    if isinstance(mask, list | tuple):
        if not mask:
            raise ValueError("a visual prompt needs at least one support mask")
        if all(np.ndim(m) == 2 for m in mask):
            return list(mask)
    return [mask]


def mask_inside(mask: Any) -> np.ndarray:
    """A support mask as ``(Y, X)`` bool: bool as is, integers non-zero, floats in [0, 1] at >= 0.5.

    Raises:
        ValueError: not 2D, or floats outside [0, 1] (NaN included).
        TypeError: another kind of data (complex, text, objects).
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(
            f"a support mask must be 2D (Y, X); got shape {array.shape}: pass one mask per example, "
            "e.g. VisualPrompt([mask_a, mask_b]) for several"
        )
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind in "iu":
        return array != 0
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or array.min(initial=0) < 0 or array.max(initial=0) > 1:
            raise ValueError(
                "a float support mask must hold values in [0, 1] (>= 0.5 is inside) and no NaN or inf; "
                "use a bool or integer label mask otherwise"
            )
        return array >= 0.5
    raise TypeError(f"a support mask must be bool, integer labels or floats in [0, 1]; got {array.dtype}")


def _check_mask(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"the support mask is {mask.shape[0]}x{mask.shape[1]} but its image is "
            f"{image.shape[0]}x{image.shape[1]}: draw the example on the image it belongs to"
        )
    inside = mask_inside(mask)
    n = int(inside.sum())
    if n == 0:
        raise ValueError("the support region is empty (or lies outside the image): mark an example first")
    if n < MIN_SUPPORT_PIXELS:
        raise ValueError(
            f"the support region has only {n} pixel(s): outline a whole example (at least {MIN_SUPPORT_PIXELS})"
        )
    return inside


def _gaussian_blur(x: torch.Tensor) -> torch.Tensor:
    """15x15 Gaussian, sigma 3, border reflected without repeating the edge (cv2's default)."""
    radius = BLUR_SIZE // 2
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * BLUR_SIGMA**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def crop_box(mask: torch.Tensor, context: float = CONTEXT) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``, half-open, of the mask's bounding box enlarged by ``context`` of its
    extent on each side and clipped to the image (coordinates truncated as the reference does)."""
    rows, cols = torch.nonzero(mask.any(dim=1)), torch.nonzero(mask.any(dim=0))
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    h, w = y1 - y0, x1 - x0
    height, width = mask.shape
    return (
        int(max(0, y0 - context * h)),
        int(min(height, y1 + context * h)),
        int(max(0, x0 - context * w)),
        int(min(width, x1 + context * w)),
    )


def pad_to_square(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad ``(C, H, W)`` to a square, centred (the extra pixel, if any, goes right/bottom)."""
    h, w = x.shape[-2:]
    if h > w:
        left = (h - w) // 2
        return F.pad(x, (left, h - w - left, 0, 0))
    top = (w - h) // 2
    return F.pad(x, (0, 0, top, w - h - top))


def engineer_support(
    pixels: torch.Tensor, mask: torch.Tensor, mode: str = DEFAULT_MODE, size: int = INPUT_SIZE
) -> torch.Tensor:
    """The recipe on tensors in the model frame.

    Args:
        pixels: ``(3, S, S)`` ImageNet-normalised image.
        mask: ``(S, S)`` bool support region.

    Returns:
        ``(3, size, size)`` support image, ready as ``conditional_pixel_values``.
    """
    recipe = RECIPES[mode]
    m = mask.to(pixels.dtype)[None]
    background = _gaussian_blur(pixels[None])[0] if recipe.blur else pixels
    out = pixels * m + recipe.background * background * (1 - m)
    if recipe.crop:
        y0, y1, x0, x1 = crop_box(mask)
        out = pad_to_square(out[:, y0:y1, x0:x1])
    if tuple(out.shape[-2:]) != (size, size):
        out = F.interpolate(out[None], size=(size, size))[0]  # nearest, as the reference
    return out


def _model_frame_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """Nearest-neighbour resize of a support mask to the model frame; tiny regions survive."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    resized = F.interpolate(m, size=(size, size))[0, 0] > 0
    if not resized.any():  # a region thinner than one model pixel: keep every pixel it touches
        resized = F.adaptive_max_pool2d(m, (size, size))[0, 0] > 0
    return resized


def support_pixels(
    image: np.ndarray,
    mask: np.ndarray,
    mode: str = DEFAULT_MODE,
    *,
    size: int = INPUT_SIZE,
    device: torch.device | str = "cpu",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> torch.Tensor:
    """``(3, size, size)`` engineered support tensor for one example (see :func:`engineer_visual_prompt`)."""
    inside = _check_mask(mask, np.asarray(image))
    pixels = to_model_input(image, size, device, percentiles)[0]
    return engineer_support(pixels, _model_frame_mask(inside, size).to(pixels.device), mode, size)


def engineer_visual_prompt(
    image: np.ndarray, mask: np.ndarray, mode: str = DEFAULT_MODE, *, size: int = INPUT_SIZE
) -> np.ndarray:
    """What the model sees for a support region: ``(3, size, size)`` float32, ImageNet-normalised.

    Args:
        image: ``(Y, X)`` or ``(Y, X, C)`` image, any dtype (as for ``set_image``).
        mask: ``(Y, X)`` support region on that image (non-zero = inside).
        mode: A key of :data:`RECIPES`; the default is the paper's best (crop, blur, darken to 10 %).

    Raises:
        ValueError: unknown mode, a mask of another shape, an empty or tiny region.
    """
    if mode not in RECIPES:
        raise ValueError(f"unknown visual prompt mode {mode!r}; choose one of {', '.join(RECIPES)}")
    with torch.inference_mode():
        return support_pixels(image, mask, mode, size=size).cpu().numpy()
