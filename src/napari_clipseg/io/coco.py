"""COCO instance annotations: from instance labels (RLE masks through pycocotools) and back.

One COCO image per 2D plane: a 2D input is one image, plane ``z`` of a stack is the image
``"<name>#z"``. Categories are the classes (ids 1..N, as in the label images); an annotation's
score is the mean probability of its class inside the object.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _rle(mask: np.ndarray) -> dict[str, Any]:
    """pycocotools' RLE of a 2D boolean mask (``counts`` as bytes)."""
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def _json_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """An RLE with ``counts`` as text, as COCO JSON holds it."""
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def annotations_for_plane(
    ids: np.ndarray, classes: Sequence[int], scores: Sequence[float] | None, image_id: int, first_id: int
) -> list[dict[str, Any]]:
    """One annotation per object present in the 2D instance label image ``ids`` (ids 1..N as in
    :class:`~napari_clipseg.segmentation.postprocess.Instances`; ``classes[i - 1]`` is object ``i``'s class)."""
    from pycocotools import mask as mask_utils

    annotations = []
    for obj in np.unique(ids[ids > 0]):
        rle = _rle(ids == obj)
        annotation = {
            "id": first_id + len(annotations),
            "image_id": image_id,
            "category_id": int(classes[int(obj) - 1]),
            "segmentation": _json_rle(rle),
            "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": 0,
        }
        if scores is not None:
            annotation["score"] = float(scores[int(obj) - 1])
        annotations.append(annotation)
    return annotations


def build_coco(
    items: Iterable[tuple[str, np.ndarray, Sequence[int], Sequence[float] | None]], classes: Sequence[str]
) -> dict:
    """A COCO dataset from ``(name, ids, classes, scores)`` per input (``ids`` 2D, or a stack of planes)."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for name, ids, object_classes, scores in items:
        ids = np.asarray(ids)
        planes = [((), ids)] if ids.ndim == 2 else [((z,), ids[z]) for z in range(ids.shape[0])]
        for index, plane in planes:
            image_id = len(images) + 1
            file_name = name if not index else f"{name}#{index[0]}"
            images.append(
                {"id": image_id, "file_name": file_name, "height": int(plane.shape[0]), "width": int(plane.shape[1])}
            )
            annotations += annotations_for_plane(plane, object_classes, scores, image_id, len(annotations) + 1)
    categories = [{"id": i + 1, "name": c, "supercategory": "object"} for i, c in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def load_coco(path: str | os.PathLike) -> Any:
    """A pycocotools ``COCO`` object of a file (its ``loadRes`` needs scores for predictions)."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        return COCO(str(Path(path)))


def write_coco(path: str | os.PathLike, coco: dict) -> Path:
    """Write a COCO dataset atomically (replacing the previous run's)."""
    from ..atomic import write_json

    return write_json(path, coco, overwrite=True)
