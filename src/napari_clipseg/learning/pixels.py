"""Learning the pixel refiner (:mod:`napari_clipseg.segmentation.refiner`) from verified images.

Each verified plane gives :data:`SAMPLES` pixels: half drawn from the thick boundaries of the
verified labels (the pixels on both sides of every edge, where annotators correct), half spread
evenly over the classes (the background included), so a small class and the edges weigh as much as the bulk.
The head trains with Adam on a class-balanced cross-entropy for :data:`STEPS` steps of
:data:`BATCH` pixels: about a second on a CPU, whatever the number of images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import RunCancelled
from ..segmentation.refiner import PixelRefiner, feature_count, make_head, pixel_features, refiner_intensities

#: Pixels sampled per verified plane, and the training schedule.
SAMPLES = 6000
STEPS, BATCH, RATE = 300, 2048, 1e-2
#: Largest side of a plane's window that features are computed on while learning.
WINDOW = 1024


@dataclass(frozen=True)
class PixelSamples:
    """Features ``(N, F)`` and labels ``(N,)`` of the pixels sampled from one plane."""

    features: np.ndarray
    labels: np.ndarray


def sample_plane(
    plane: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
    classes: int,
    rng: np.random.Generator,
) -> PixelSamples:
    """The sampled pixels of one verified plane (see the module docstring), its intensities on the
    dtype's own scale (:func:`~napari_clipseg.segmentation.refiner.refiner_intensities`)."""
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    window = tuple(slice(0, min(n, WINDOW)) for n in labels.shape)  # a bound on memory for huge planes
    features = pixel_features(
        refiner_intensities(np.asarray(plane[window])), np.asarray(probabilities)[(slice(None), *window)]
    )
    labels = labels[window].astype(np.int64)
    flat = labels.ravel()
    band = np.flatnonzero(find_boundaries(labels, mode="thick"))
    picked = [rng.choice(band, size=min(len(band), SAMPLES // 2), replace=False)] if len(band) else []
    present = [v for v in range(classes + 1) if np.any(flat == v)]
    for value in present:
        where = np.flatnonzero(flat == value)
        picked.append(rng.choice(where, size=min(len(where), SAMPLES // (2 * len(present))), replace=False))
    index = np.concatenate(picked)
    return PixelSamples(features.reshape(-1, features.shape[-1])[index], flat[index])


def learn_refiner(
    samples: Sequence[PixelSamples],
    classes: list[str],
    channels: int,
    stop: object,
    seed: int = 0,
    context: bool = True,
) -> PixelRefiner:
    """A refiner trained on ``samples`` (see the module docstring); ``stop`` (an Event) cancels.
    ``context=False``: a head on the image's features alone, whose weights on the decoder's maps
    are zero (the same file format; it ignores them)."""
    torch.manual_seed(seed)
    x = torch.from_numpy(np.concatenate([s.features for s in samples]).astype(np.float32))
    y = torch.from_numpy(np.concatenate([s.labels for s in samples]))
    head = make_head(feature_count(channels, len(classes)), len(classes))
    head.mean.copy_(x.mean(dim=0))
    head.scale.copy_(x.std(dim=0).clamp(min=1e-3))
    x = (x - head.mean) / head.scale
    maps = slice(feature_count(channels, 0), None)  # the decoder's maps follow the image's features
    if not context:
        x[:, maps] = 0.0
    counts = torch.bincount(y, minlength=len(classes) + 1).float()
    weights = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * len(counts)), torch.zeros_like(counts))
    optimiser = torch.optim.Adam(head.parameters(), lr=RATE)
    generator = torch.Generator().manual_seed(seed)
    for step in range(STEPS):
        if getattr(stop, "is_set", lambda: False)():
            raise RunCancelled("stopped on request")
        batch = torch.randint(0, len(y), (min(BATCH, len(y)),), generator=generator)
        loss = torch.nn.functional.cross_entropy(head(x[batch]), y[batch], weight=weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        for group in optimiser.param_groups:  # halve the rate twice, for a steady end
            group["lr"] = RATE * (0.5 ** (3 * step // STEPS))
    if not context:
        with torch.no_grad():
            head[0].weight[:, maps] = 0.0
    return PixelRefiner(head.eval(), list(classes), channels)
