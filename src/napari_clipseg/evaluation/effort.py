"""What an annotator feels: boundary IoU and the object-level corrections between two label images.

Changed pixels say how much paint moves; an annotator works in objects and edges. Two measures
say that:

- **Boundary IoU** (Cheng et al., CVPR 2021): the IoU of the bands of ``band`` pixels inside each
  contour of the two masks. A map right in the middle of every object but ragged at its edges
  scores high in IoU and low here; the edges are most of what an annotator repaints.
- **Object corrections**, as the Cell Tracking Challenge weighs a person's work (AOGM's weights):
  objects are the connected regions of each class (or given instance ids), matched by majority
  overlap. A pre-label object that holds the majority of ``k`` corrected objects must be **split**
  (5 each past the first); one that holds none but lies mostly inside a corrected object is a
  fragment, to be **merged** into it (5 each past the first piece when no pre-label object holds
  it); one that lies mostly in the background must be **deleted** (1); a corrected object found
  in no pre-label object must be **added** (10). The cost of a pre-label is the weighted sum; 0
  means nothing to fix at the level of objects (edges aside: boundary IoU says those).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: The Cell Tracking Challenge's weights of a person's corrections (add, delete, split, merge).
WEIGHTS = {"add": 10, "delete": 1, "split": 5, "merge": 5}


def inner_band(mask: np.ndarray, band: int) -> np.ndarray:
    """The pixels of ``mask`` within ``band`` pixels of its contour (inside it)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[(slice(1, -1),) * mask.ndim]
    return mask & (distance <= band)


def boundary_iou(prediction: np.ndarray, truth: np.ndarray, value: int, band: int = 2) -> float:
    """Boundary IoU of class ``value`` (NaN when neither side has it)."""
    p, t = inner_band(prediction == value, band), inner_band(truth == value, band)
    union = np.count_nonzero(p | t)
    return float(np.count_nonzero(p & t) / union) if union else float("nan")


def objects(labels: np.ndarray, instances: np.ndarray | None = None) -> np.ndarray:
    """Object ids: ``instances`` as given, else the connected regions of each class (one id each)."""
    if instances is not None:
        return np.asarray(instances).astype(np.int64)
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.int64)
    for value in (int(v) for v in np.unique(labels) if v > 0):
        regions, _ = ndimage.label(labels == value)
        out[regions > 0] = regions[regions > 0] + out.max()
    return out


@dataclass(frozen=True)
class ObjectCorrections:
    """Objects to add, delete, split and merge to turn a pre-label into the corrected labels."""

    add: int
    delete: int
    split: int
    merge: int
    objects: int  # objects in the corrected labels

    @property
    def cost(self) -> int:
        """The weighted corrections (:data:`WEIGHTS`)."""
        return sum(WEIGHTS[k] * getattr(self, k) for k in WEIGHTS)

    def to_dict(self) -> dict[str, int]:
        return {"add": self.add, "delete": self.delete, "split": self.split, "merge": self.merge, "cost": self.cost}


def object_corrections(prelabel_ids: np.ndarray, corrected_ids: np.ndarray) -> ObjectCorrections:
    """The corrections between two object-id images (0 = background; :func:`objects` makes them)."""
    p, t = np.asarray(prelabel_ids).ravel(), np.asarray(corrected_ids).ravel()
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: pre-labels {np.shape(prelabel_ids)}, corrected {np.shape(corrected_ids)}")
    p_ids, p_index = np.unique(p, return_inverse=True)
    t_ids, t_index = np.unique(t, return_inverse=True)
    overlap = np.zeros((len(p_ids), len(t_ids)), dtype=np.int64)
    np.add.at(overlap, (p_index, t_index), 1)
    p_fg, t_fg = p_ids > 0, t_ids > 0
    overlap = overlap[p_fg][:, t_fg]
    p_area = np.bincount(p_index, minlength=len(p_ids))[p_fg]
    t_area = np.bincount(t_index, minlength=len(t_ids))[t_fg]
    n_p, n_t = len(p_area), len(t_area)
    if n_t == 0 or n_p == 0:
        return ObjectCorrections(add=n_t, delete=n_p, split=0, merge=0, objects=n_t)
    best_p = overlap.argmax(axis=0)  # where most of each corrected object lies
    covered = overlap[best_p, np.arange(n_t)] * 2 > t_area
    holds = np.bincount(best_p[covered], minlength=n_p)  # corrected objects each pre-label object holds
    best_t = overlap.argmax(axis=1)  # where most of each pre-label object lies
    inside = overlap[np.arange(n_p), best_t] * 2 > p_area
    fragment = (holds == 0) & inside  # a piece of a corrected object another piece (or none) holds
    pieces = np.bincount(best_t[fragment], minlength=n_t)
    merge = pieces[covered].sum() + np.clip(pieces[~covered] - 1, 0, None).sum()
    return ObjectCorrections(
        add=int(np.count_nonzero(~covered & (pieces == 0))),
        delete=int(np.count_nonzero((holds == 0) & ~inside)),
        split=int(np.clip(holds - 1, 0, None).sum()),
        merge=int(merge),
        objects=n_t,
    )


def effort(
    prelabels: np.ndarray,
    corrected: np.ndarray,
    *,
    corrected_instances: np.ndarray | None = None,
    band: int = 2,
) -> dict[str, float]:
    """Changed pixels, mean boundary IoU over classes and the object corrections of one image."""
    values = sorted({int(v) for v in np.unique(np.concatenate([np.unique(prelabels), np.unique(corrected)])) if v > 0})
    bands = [boundary_iou(prelabels, corrected, v, band) for v in values]
    found = object_corrections(objects(prelabels), objects(corrected, corrected_instances))
    return {
        "changed_fraction": float(np.count_nonzero(prelabels != corrected) / prelabels.size),
        "boundary_iou": float(np.nanmean(bands)) if any(b == b for b in bands) else float("nan"),
        **{f"objects_{k}": float(v) for k, v in found.to_dict().items()},
        "objects": float(found.objects),
    }
