"""The pixel refiner: *where*, at the image's own pixels (docs/annotation-loop.md, "The pixel refiner").

CLIPSeg decides *what* on a 22 × 22 grid of tokens; its edges are the transposed convolution's
guess. The refiner is a small classifier at the image's resolution whose inputs are the image's
multi-scale filter features (intensity, edges, texture at :data:`SIGMAS`; per channel:
scikit-image's ``multiscale_basic_features``) and the decoder's probabilities with smoothed
versions of them (auto-context, as ilastik's), and whose output is the probability of each class.
It is a torch head (two hidden layers of :data:`HIDDEN`), saved as safetensors beside the decoder
it was learnt on, so loading it never runs a pickle.

The head decides pixel by pixel, so a map learnt from few images keeps specks and broken pieces
of objects, which cost an annotator a deletion or a merge each. A Learn therefore also chooses the
refiner's :attr:`PixelRefiner.min_size` among :data:`SPECK_SIZES`, the one that leaves the fewest
object corrections on the held-out verified images: smaller objects of a refined map are lowered
below :data:`THRESHOLD` (:func:`lower_specks`).

A plane is refined in strips of about :data:`STRIP_PIXELS` pixels (a 1024-wide plane at once)
with :data:`MARGIN` rows on each side (more than the widest filter reaches), so a strip's features
are those of the whole plane (no seams) and the features of a huge plane are never all in memory
at once; the head runs on :data:`CHUNK` pixels at a time, which stay in the CPU's cache (3.7x
faster than the whole plane at once: docs/performance.md, "Roofline"). A model loaded with a decoder
folder that holds a refiner carries it (:func:`attach_refiner`), and the one pipeline refines
every plane with it (Segment mode, ``segment``, ``batch``, a project's workers).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..constants import DEFAULT_PERCENTILES
from ..errors import RecordError

if TYPE_CHECKING:
    import torch

#: Scales of the image's filter features (pixels).
SIGMAS = (1.0, 2.0, 4.0, 8.0)
#: Scales at which the decoder's probabilities are smoothed (auto-context).
CONTEXT_SIGMAS = (2.0, 6.0)
#: Pixels of a strip (whole rows), and rows read on each side of it (beyond 4 sigma of the widest filter).
STRIP_PIXELS, MARGIN = 1 << 20, 40
#: Pixels the head classifies at a time.
CHUNK = 16384
#: Width of the head's hidden layers.
HIDDEN = 32
WEIGHTS_NAME, META_NAME = "refiner.safetensors", "refiner.json"
#: The threshold of refined maps: the head's probabilities are calibrated, so the likeliest class wins.
THRESHOLD = 0.5
SCHEMA = "napari-clipseg.refiner"
#: The smallest object sizes (pixels per plane) a Learn chooses from; 0 keeps every object.
SPECK_SIZES = (0, 5, 10, 20, 40)


class RefinerError(RecordError):
    """A refiner file that cannot be used (damaged, or made for other classes or channels)."""


def refiner_intensities(plane: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """A plane as float32 on its dtype's own scale (uint8 /255, other types as they are; NaN and inf
    0), the refiner's intensities: one scale for every image of a project, as ilastik's features
    (the head standardises them). ``value_range`` stretches it as the model input does instead
    (what refiners of schema version 1 were learnt on): a per-image percentile stretch moved the
    background of a sparse crop into the foreground of a dense one (IoU 0.14 against 0.90 on the
    dtype's scale, one real nuclei crop learnt from another)."""
    from .transforms import normalize_intensity

    return normalize_intensity(plane, DEFAULT_PERCENTILES, value_range)


def pixel_features(plane: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``(Y, X, F)`` features of a plane in [0, 1] (``(Y, X)`` or ``(Y, X, C)``) and the decoder's
    ``(P, Y, X)`` probabilities there."""
    from skimage.feature import multiscale_basic_features
    from skimage.filters import gaussian

    channel_axis = -1 if plane.ndim == 3 else None
    image = multiscale_basic_features(
        plane, sigma_min=SIGMAS[0], sigma_max=SIGMAS[-1], num_sigma=len(SIGMAS), channel_axis=channel_axis
    )
    context = []
    for p in np.asarray(probabilities, dtype=np.float32):
        context += [p] + [gaussian(p, sigma=s, preserve_range=True) for s in CONTEXT_SIGMAS]
    return np.concatenate([image.astype(np.float32), np.stack(context, axis=-1)], axis=-1)


def lower_specks(probabilities: np.ndarray, min_size: int) -> np.ndarray:
    """Halve, in place, the ``(P, ..., Y, X)`` probabilities of the objects (per class and plane,
    8-connected, above :data:`THRESHOLD`) smaller than ``min_size`` pixels, so they fall below it."""
    from .postprocess import labels_from_probabilities, remove_small_objects

    if min_size <= 1:
        return probabilities
    for index in np.ndindex(probabilities.shape[1:-2]):
        plane = probabilities[(slice(None), *index)]
        labels = labels_from_probabilities(plane, THRESHOLD)
        specks = (labels > 0) & (remove_small_objects(labels.copy(), min_size) == 0)
        plane[:, specks] *= 0.5
    return probabilities


def feature_count(channels: int, classes: int) -> int:
    """How many features a pixel has (image features per channel, three per class)."""
    return channels * len(SIGMAS) * 4 + classes * (1 + len(CONTEXT_SIGMAS))


def make_head(features: int, classes: int) -> torch.nn.Module:
    """The classifier: standardised features -> two hidden layers -> background and each class."""
    import torch

    head = torch.nn.Sequential(
        torch.nn.Linear(features, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, classes + 1),
    )
    head.register_buffer("mean", torch.zeros(features))
    head.register_buffer("scale", torch.ones(features))
    return head


@dataclass
class PixelRefiner:
    """A learnt refiner: its head, the classes it outputs, the image channels it was learnt on, and
    the smallest object it keeps (pixels; :func:`lower_specks`)."""

    head: Any
    classes: list[str]
    channels: int
    min_size: int = 0
    #: The intensities it was learnt on: "dtype" (the dtype's own scale) or "image" (stretched
    #: between the image's percentiles: refiners of schema version 1; :func:`refiner_intensities`).
    scale: str = "dtype"

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """``(P, ...)`` class probabilities of ``(..., F)`` features."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32).reshape(-1, features.shape[-1]))
        out = torch.empty(len(x), len(self.classes))
        with torch.inference_mode():
            for start in range(0, len(x), CHUNK):
                chunk = (x[start : start + CHUNK] - self.head.mean) / self.head.scale
                out[start : start + CHUNK] = torch.softmax(self.head(chunk), dim=1)[:, 1:]
        return np.moveaxis(out.numpy().reshape(*features.shape[:-1], len(self.classes)), -1, 0)

    def refine_plane(self, plane: np.ndarray, probabilities: np.ndarray, value_range: Any = None) -> np.ndarray:
        """The refined ``(P, Y, X)`` probabilities of one plane, strip by strip (module docstring).
        ``plane`` may be lazy (a dask or zarr plane): only a strip and its margins are read at a time."""
        channels = plane.shape[-1] if plane.ndim == 3 else 1
        if channels != self.channels:
            raise RefinerError(f"this pixel refiner was learnt on {self.channels} channel(s); the image has {channels}")
        rows, strip = plane.shape[0], max(MARGIN, STRIP_PIXELS // max(plane.shape[1], 1))
        out = np.empty((len(self.classes), *plane.shape[:2]), dtype=np.float32)
        for start in range(0, rows, strip):
            low, high = max(0, start - MARGIN), min(rows, start + strip + MARGIN)
            piece = refiner_intensities(np.asarray(plane[low:high]), value_range if self.scale == "image" else None)
            features = pixel_features(piece, np.asarray(probabilities)[:, low:high])
            inner = slice(start - low, start - low + min(strip, rows - start))
            out[:, start : start + strip] = self.probabilities(features[inner])
        return lower_specks(out, self.min_size)

    def save(self, folder: str | os.PathLike) -> None:
        """``refiner.safetensors`` and ``refiner.json`` in ``folder`` (beside its decoder)."""
        import safetensors.torch

        state = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
        safetensors.torch.save_file(state, str(Path(folder) / WEIGHTS_NAME))
        meta = {"schema": SCHEMA, "schema_version": 2, "classes": self.classes, "channels": self.channels}
        meta |= {"min_size": self.min_size, "intensity": self.scale}
        meta |= {"sigmas": list(SIGMAS), "context_sigmas": list(CONTEXT_SIGMAS), "hidden": HIDDEN}
        (Path(folder) / META_NAME).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_refiner(folder: str | os.PathLike) -> PixelRefiner | None:
    """The refiner kept beside the decoder in ``folder``; None when it has none.

    Raises:
        RefinerError: a damaged file, or one written for other features (what to do is said).
    """
    folder = Path(folder)
    if not (folder / META_NAME).exists() and not (folder / WEIGHTS_NAME).exists():
        return None
    damaged = f"the pixel refiner in {folder} is damaged or incomplete"
    try:
        import safetensors.torch

        meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
        state = safetensors.torch.load_file(str(folder / WEIGHTS_NAME))
        classes, channels, min_size = list(meta["classes"]), int(meta["channels"]), int(meta.get("min_size", 0))
        scale = meta.get("intensity", "image")  # version 1 was learnt on the model input's stretch
        if scale not in ("dtype", "image"):
            raise ValueError(f"unknown intensity scale {scale!r}")
        if meta.get("schema") != SCHEMA or tuple(meta.get("sigmas", ())) != SIGMAS:
            raise ValueError("written for other features")
        head = make_head(feature_count(channels, len(classes)), len(classes))
        head.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - whatever broke, the message says what to do
        raise RefinerError(f"{damaged} ({e}): learn again, or remove {WEIGHTS_NAME} and {META_NAME}") from None
    return PixelRefiner(head.eval(), classes, channels, min_size, scale)


def attach_refiner(model: Any, folder: str | os.PathLike) -> Any:
    """Give ``model`` the refiner kept beside its decoder in ``folder`` (if any), named in
    ``model.info`` (so every record says it); :func:`refiner_of` finds it for the pipeline.

    Raises:
        RefinerError: its files are damaged.
    """
    import dataclasses

    refiner = load_refiner(folder)
    model.pixel_refiner = refiner
    if refiner is not None:
        decoder = {**(model.info.decoder or {}), "refiner": {"file": WEIGHTS_NAME, "threshold": THRESHOLD}}
        model.info = dataclasses.replace(model.info, decoder=decoder)
    return model


def refiner_of(model: Any, classes: list[str]) -> PixelRefiner | None:
    """The refiner a model carries for these classes (None: none, or one learnt for others)."""
    refiner = getattr(model, "pixel_refiner", None)
    return refiner if refiner is not None and refiner.classes == list(classes) else None
