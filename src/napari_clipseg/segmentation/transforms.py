"""Any image -> the model's input frame, and model maps -> the image's frame.

One place for intensity scaling, channel handling, ImageNet normalisation and resizing, so the
predictor, the widget and the CLI see images identically.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import DEFAULT_PERCENTILES, IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE

#: Smallest image side accepted: one 16-pixel patch. Smaller images carry no usable context.
MIN_SIDE = 16

#: Colour channels a plane may have without an explicit channel choice (grey, 2 channels, RGB, RGBA).
MAX_AUTO_CHANNELS = 4

#: Planes longer than this on a side are first reduced by an integer block mean (bounded memory,
#: lazy data read strip by strip); smaller planes go to the antialiased resize as they are.
LARGEST_DIRECT_RESIZE = 4096


def check_dtype(dtype: np.dtype) -> None:
    """Refuse pixel types that have no intensity meaning (complex, object, strings).

    Raises:
        TypeError: naming the dtype and what to pass instead.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "buif":
        raise TypeError(
            f"image data of type {dtype} cannot be segmented: pass real numbers (bool, integers or floats)"
            + ("; e.g. the magnitude np.abs(image)" if dtype.kind == "c" else "")
        )


def check_plane_shape(shape: tuple[int, ...], channels: tuple[int, ...] | None = None) -> tuple[int, int]:
    """The ``(Y, X)`` of a 2D plane of ``shape``; refuses shapes whose meaning would be a guess.

    A plane is ``(Y, X)`` or ``(Y, X, C)``: with ``C`` up to 4 colour channels, or any ``C`` when
    ``channels`` says which three to use.

    Raises:
        ValueError: naming the shape and the way to pass such data.
    """
    if 0 in shape:
        raise ValueError(f"image is empty (shape {tuple(shape)})")
    if len(shape) == 3 and (1 <= shape[-1] <= MAX_AUTO_CHANNELS or (channels is not None and shape[-1] >= 1)):
        spatial = shape[:2]
    elif len(shape) == 2:
        spatial = shape
    elif len(shape) == 3 and shape[-1] > MAX_AUTO_CHANNELS:
        raise ValueError(
            f"image of shape {tuple(shape)} is ambiguous: a 2D image is (Y, X) or (Y, X, C) with C <= "
            f"{MAX_AUTO_CHANNELS} colour channels. For a stack or time series use ncs.segment / "
            "ncs.iter_segment (every plane is segmented); for more channels pass channels=(r, g, b)"
        )
    else:
        raise ValueError(
            f"image must be (Y, X) grey or (Y, X, C) with C in 1..{MAX_AUTO_CHANNELS} channels; got shape "
            f"{tuple(shape)} (stacks go to ncs.segment / ncs.iter_segment)"
        )
    if min(spatial) < MIN_SIDE:
        raise ValueError(f"image is {spatial[0]}x{spatial[1]} pixels; CLIPSeg needs at least {MIN_SIDE}x{MIN_SIDE}")
    return int(spatial[0]), int(spatial[1])


#: Pixels read to estimate percentiles of a large or lazy image (a strided sample).
PERCENTILE_SAMPLE = 4_000_000


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_float32(values: np.ndarray) -> np.ndarray:
    """``values`` as float32, on purpose for values beyond float32's range (float64 data): they
    saturate at float32's largest finite value instead of overflowing to inf; inf and NaN stay
    what they are (and count as missing everywhere)."""
    values = np.asarray(values)
    if values.dtype.kind == "f" and values.dtype.itemsize > 4:
        values = np.where(np.isfinite(values), np.clip(values, -_FLOAT32_MAX, _FLOAT32_MAX), values)
    return values.astype(np.float32)


def intensity_range(image, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> tuple[float, float] | None:
    """The value range mapped to [0, 1], or None where the dtype fixes it.

    None for bool, uint8 (/255) and floats already within [0, 1]; otherwise the given percentiles
    of the finite values (jointly over channels). Large and lazy (dask, zarr) images are sampled
    with a stride, so this never loads more than about :data:`PERCENTILE_SAMPLE` pixels. Computing
    it once for a whole image or stack keeps tiles and planes on one scale (no seams).
    """
    dtype = np.dtype(image.dtype)
    if dtype in (np.dtype(bool), np.dtype(np.uint8)):
        return None
    stride = max(1, int(np.ceil((int(np.prod(image.shape)) / PERCENTILE_SAMPLE) ** (1 / max(image.ndim, 1)))))
    sample = as_float32(np.asarray(image[(slice(None, None, stride),) * image.ndim]))
    values = sample[np.isfinite(sample)]
    if values.size == 0:
        return (0.0, 0.0)
    if np.issubdtype(dtype, np.floating) and values.min() >= 0.0 and values.max() <= 1.0:
        return None
    lo, hi = np.percentile(values, percentiles)
    return float(lo), float(hi)


def normalize_intensity(
    image: np.ndarray,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    value_range: tuple[float, float] | str | None = "auto",
) -> np.ndarray:
    """Scale intensities to float32 in [0, 1].

    uint8 is divided by 255 and bool maps to {0, 1}; floats already in [0, 1] are kept, so photos
    look as they were trained. Everything else (uint16, int, other floats) is stretched between
    the given percentiles of its finite values, jointly over channels (colour balance is kept).
    NaN and inf become 0; a constant image becomes all 0.

    Args:
        value_range: ``"auto"`` computes :func:`intensity_range` of ``image``; pass one computed
            for a whole image or stack (or a layer's contrast limits) to scale parts of it alike.
    """
    image = np.asarray(image)
    if isinstance(value_range, str):
        value_range = intensity_range(image, percentiles)
    if value_range is None:
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        data = as_float32(image) / scale
        return np.where(np.isfinite(data), data, 0.0).astype(np.float32)
    lo, hi = (min(max(float(v), -_FLOAT32_MAX), _FLOAT32_MAX) for v in value_range)  # the data's own scale
    data = as_float32(image)
    if hi <= lo:
        return np.zeros_like(data)
    scale = 1.0 / (float(hi) - float(lo))  # in float64: a range as wide as float32's own stays finite
    with np.errstate(over="ignore"):  # values near float32's limits saturate to +-inf, clipped next
        scaled = (data - np.float32(lo)) * scale
    return np.where(np.isfinite(data), np.clip(scaled, 0.0, 1.0), 0.0).astype(np.float32)


def guess_rgb(shape: tuple[int, ...]) -> bool:
    """Whether the last axis is colour channels: 3 or 4 values after at least two spatial axes."""
    return len(shape) >= 3 and shape[-1] in (3, 4)


def select_channels(image: np.ndarray, channels: tuple[int, ...] | None) -> np.ndarray:
    """Pick the channels that become R, G, B from a ``(Y, X, C)`` image (-1: an empty channel).

    ``None`` chooses: 1 channel grey, 2 channels (R, G, -), 3 RGB, and 4 RGBA (alpha dropped).
    More channels need an explicit choice (:func:`check_plane_shape` refuses them).
    """
    if image.ndim == 2:
        return image
    n = image.shape[-1]
    if channels is None:
        if n <= 3:
            return image
        channels = (0, 1, 2)
    if len(channels) != 3 or any(c >= n or c < -1 for c in channels):
        raise ValueError(f"channels must be three indices in [-1, {n - 1}] (-1 = empty); got {channels}")
    picked = [image[..., c] if c >= 0 else np.zeros_like(image[..., 0]) for c in channels]
    return np.stack(picked, axis=-1)


def _block_mean(image: Any, factors: tuple[int, int]) -> np.ndarray:
    """Mean over ``factors`` blocks of a (lazy) ``(Y, X[, C])`` image, read strip by strip.

    The last block of each axis may be partial (it is averaged over what it holds), so the
    result covers the whole image. Integers are rounded back to their dtype and bool becomes
    float32, so intensity scaling treats the result like the original.
    """
    fy, fx = factors
    height = image.shape[0]
    rows_per_strip = fy * max(1, (64 << 20) // max(1, fy * int(np.prod(image.shape[1:])) * 4))
    strips = []
    for y in range(0, height, rows_per_strip):
        strip = np.asarray(image[y : y + rows_per_strip], dtype=np.float32)
        for axis, factor in ((0, fy), (1, fx)):
            starts = np.arange(0, strip.shape[axis], factor)
            counts = np.diff(np.append(starts, strip.shape[axis])).reshape((-1,) + (1,) * (strip.ndim - axis - 1))
            strip = np.add.reduceat(strip, starts, axis=axis) / counts
        strips.append(strip)
    reduced = np.concatenate(strips)
    dtype = np.dtype(image.dtype)
    if dtype.kind in "iu":
        return np.rint(reduced).astype(dtype)
    return reduced


def shrink_for_resize(image: Any) -> Any:
    """``image`` itself, or for a side over :data:`LARGEST_DIRECT_RESIZE` an integer block mean of it.

    Each axis keeps at least ``LARGEST_DIRECT_RESIZE / 2`` pixels, far above the model input: the
    antialiased resize that follows sees the same content, with bounded memory.
    """
    factors = tuple(
        max(1, int(side) // (LARGEST_DIRECT_RESIZE // 2)) if side > LARGEST_DIRECT_RESIZE else 1
        for side in image.shape[:2]
    )
    return image if factors == (1, 1) else _block_mean(image, factors)


def to_rgb_float(
    image: np.ndarray,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    value_range: tuple[float, float] | str | None = "auto",
    channels: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Any supported 2D image -> ``(Y, X, 3)`` float32 RGB in [0, 1].

    Grey (and single-channel) images are replicated to RGB, two channels map to (R, G, 0), RGBA
    drops its alpha, and more channels are chosen by ``channels`` (see :func:`select_channels`).

    Raises:
        ValueError: unsupported shape, or an image smaller than :data:`MIN_SIDE`.
        TypeError: complex, object or string data.
    """
    image = np.asarray(image)
    check_dtype(image.dtype)
    check_plane_shape(image.shape, channels)
    image = select_channels(image, channels)
    scaled = normalize_intensity(image, percentiles, value_range)
    if scaled.ndim == 2:
        scaled = scaled[..., None]
    n = scaled.shape[-1]
    if n == 1:
        return np.repeat(scaled, 3, axis=-1)
    if n == 2:
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
    image: Any,
    size: int = INPUT_SIZE,
    device: torch.device | str = "cpu",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    value_range: tuple[float, float] | str | None = "auto",
    channels: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Any supported 2D image (numpy or lazy) -> ``(1, 3, size, size)`` normalised pixels on ``device``.

    The one way into the model frame, for whole images, tiles and visual-prompt supports alike:
    the intensity range is taken from the full image, then planes larger than
    :data:`LARGEST_DIRECT_RESIZE` are block-averaged (:func:`shrink_for_resize`), then as
    transformers' processor: resize (bilinear, antialiased), normalise. Computed on the CPU, so
    the same image gives the same pixels (and cache key) on every device.
    """
    check_dtype(np.dtype(image.dtype))
    check_plane_shape(tuple(image.shape), channels)
    if isinstance(value_range, str):
        value_range = intensity_range(image, percentiles)
    rgb = torch.from_numpy(to_rgb_float(shrink_for_resize(image), percentiles, value_range, channels))
    pixels = normalize_pixels(resize(rgb.permute(2, 0, 1)[None], (size, size)))
    return pixels.to(device)
