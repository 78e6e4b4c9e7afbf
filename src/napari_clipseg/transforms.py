"""Any image -> the model's input frame, and model maps -> the image's frame.

One place for intensity scaling, channel handling, ImageNet normalisation and resizing, so the
predictor, the widget and the CLI see images identically.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .constants import DEFAULT_PERCENTILES, IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE

#: Smallest image side accepted: one 16-pixel patch. Smaller images carry no usable context.
MIN_SIDE = 16


def _check_shape(image: np.ndarray) -> None:
    if image.ndim == 3 and image.shape[-1] in (1, 2, 3, 4):
        spatial = image.shape[:2]
    elif image.ndim == 2:
        spatial = image.shape
    else:
        raise ValueError(f"image must be (Y, X) grey or (Y, X, C) with C in 1..4 channels; got shape {image.shape}")
    if min(spatial) < MIN_SIDE:
        raise ValueError(f"image is {spatial[0]}x{spatial[1]} pixels; CLIPSeg needs at least {MIN_SIDE}x{MIN_SIDE}")


def normalize_intensity(image: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Scale intensities to float32 in [0, 1].

    uint8 is divided by 255 and bool maps to {0, 1}; floats already in [0, 1] are kept, so photos
    look as they were trained. Everything else (uint16, int, other floats) is stretched between
    the given percentiles of its finite values, jointly over channels (colour balance is kept).
    NaN and inf become 0; a constant image becomes all 0.
    """
    image = np.asarray(image)
    if image.dtype == bool:
        return image.astype(np.float32)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    data = image.astype(np.float32)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros_like(data)
    values = data[finite]
    if np.issubdtype(image.dtype, np.floating) and values.min() >= 0.0 and values.max() <= 1.0:
        return np.where(finite, data, 0.0).astype(np.float32)
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:
        return np.zeros_like(data)
    scaled = (data - lo) / (hi - lo)
    return np.where(finite, np.clip(scaled, 0.0, 1.0), 0.0).astype(np.float32)


def to_rgb_float(image: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Any supported 2D image -> ``(Y, X, 3)`` float32 RGB in [0, 1].

    Grey (and single-channel) images are replicated to RGB, two channels map to (R, G, 0) and
    RGBA drops its alpha.

    Raises:
        ValueError: unsupported shape, or an image smaller than :data:`MIN_SIDE`.
    """
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError("image is empty")
    _check_shape(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    scaled = normalize_intensity(image, percentiles)
    if scaled.ndim == 2:
        scaled = scaled[..., None]
    channels = scaled.shape[-1]
    if channels == 1:
        return np.repeat(scaled, 3, axis=-1)
    if channels == 2:
        return np.concatenate([scaled, np.zeros_like(scaled[..., :1])], axis=-1)
    return np.ascontiguousarray(scaled)


def normalize_pixels(rgb: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise ``(B, 3, H, W)`` RGB in [0, 1] (CLIPSeg's statistics, not CLIP's)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb - mean) / std


def resize(maps: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` maps to ``shape``, antialiased when shrinking."""
    if tuple(maps.shape[-2:]) == tuple(shape):
        return maps
    shrinking = shape[0] < maps.shape[-2] or shape[1] < maps.shape[-1]
    return F.interpolate(maps, size=shape, mode="bilinear", align_corners=False, antialias=shrinking)


def to_model_input(
    image: np.ndarray,
    size: int = INPUT_SIZE,
    device: torch.device | str = "cpu",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> torch.Tensor:
    """Any supported 2D image -> ``(1, 3, size, size)`` normalised pixels on ``device``.

    Order as transformers' processor: resize (bilinear, antialiased), then normalise.
    """
    rgb = torch.from_numpy(to_rgb_float(image, percentiles)).to(device).permute(2, 0, 1)[None]
    return normalize_pixels(resize(rgb, (size, size)))
