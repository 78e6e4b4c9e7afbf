"""Instance AP of label images from their overlap table: COCO's segmentation AP, without comparing
every object with every other.

pycocotools computes the IoU of every predicted mask with every true one (per image and class),
which is quadratic in objects: a dense field of thousands of cells takes minutes. Two label
images give all the IoUs that are not zero in one pass over the pixels (the table of overlapping
id pairs and their counts); matching and accumulation then follow ``COCOeval.evaluateImg`` and
``COCOeval.accumulate`` step for step (area range "all", every detection kept, ``iscrowd`` 0), so
the figures equal pycocotools' (tested against it). Each plane of a stack is one COCO image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: COCO's IoU thresholds (0.5:0.05:0.95) and recall points (0:0.01:1), computed as pycocotools does.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass(frozen=True)
class OverlapTable:
    """Per plane: each object's area and the pixel count of every overlapping (truth, prediction) pair."""

    truth_area: np.ndarray  # (planes, max truth id + 1)
    prediction_area: np.ndarray  # (planes, max prediction id + 1)
    pairs: dict[int, dict[int, dict[int, int]]]  # plane -> prediction id -> truth id -> overlap


def overlap_table(truth_ids: np.ndarray, prediction_ids: np.ndarray) -> OverlapTable:
    """Areas and overlaps of two instance label images of one shape (2D, or a stack of planes)."""
    truth_ids, prediction_ids = np.asarray(truth_ids), np.asarray(prediction_ids)
    if truth_ids.shape != prediction_ids.shape:
        raise ValueError(f"shapes differ: truth {truth_ids.shape}, prediction {prediction_ids.shape}")
    planes = 1 if truth_ids.ndim == 2 else truth_ids.shape[0]
    t = truth_ids.reshape(planes, -1).astype(np.int64)
    p = prediction_ids.reshape(planes, -1).astype(np.int64)
    if (t < 0).any() or (p < 0).any():
        raise ValueError("instance ids must not be negative")
    n_t, n_p = int(t.max(initial=0)) + 1, int(p.max(initial=0)) + 1
    plane = np.arange(planes, dtype=np.int64)[:, None]
    truth_area = np.bincount((plane * n_t + t).ravel(), minlength=planes * n_t).reshape(planes, n_t)
    prediction_area = np.bincount((plane * n_p + p).ravel(), minlength=planes * n_p).reshape(planes, n_p)
    both = (t > 0) & (p > 0)
    keys, counts = np.unique(((plane * n_t + t) * n_p + p)[both], return_counts=True)
    pairs: dict[int, dict[int, dict[int, int]]] = {}
    for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
        rest, pred = divmod(key, n_p)
        z, truth = divmod(rest, n_t)
        pairs.setdefault(z, {}).setdefault(pred, {})[truth] = count
    return OverlapTable(truth_area, prediction_area, pairs)


def _match(
    truths: list[int], detections: list[int], ious: dict[int, dict[int, float]]
) -> np.ndarray:  # (thresholds, detections): matched or not
    """COCO's greedy matching of one image and class: detections in score order, each taking the
    unmatched truth of highest IoU at or above the threshold (the later truth on a tie)."""
    order = {g: i for i, g in enumerate(truths)}
    candidates = [sorted(ious.get(det, {}).items(), key=lambda pair: order[pair[0]]) for det in detections]
    matched = np.zeros((len(IOU_THRESHOLDS), len(detections)), bool)
    for k, threshold in enumerate(IOU_THRESHOLDS):
        taken: set[int] = set()
        for d, overlapping in enumerate(candidates):
            best, best_iou = -1, min(float(threshold), 1 - 1e-10)
            for g, iou in overlapping:  # in truth order, as COCO walks them
                if g in taken or iou < best_iou:
                    continue
                best, best_iou = g, iou
            if best >= 0:
                taken.add(best)
                matched[k, d] = True
    return matched


def table_ap(
    table: OverlapTable,
    *,
    truth_classes: Sequence[int] | None = None,
    prediction_classes: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
) -> dict[str, float]:
    """COCO segmentation AP (0.5:0.95) and AP50 from an overlap table; see :func:`instance_ap`."""
    use = truth_classes is not None and prediction_classes is not None
    t_class = (lambda i: int(truth_classes[i - 1])) if use else (lambda i: 1)  # type: ignore[index]
    p_class = (lambda i: int(prediction_classes[i - 1])) if use else (lambda i: 1)  # type: ignore[index]
    score = (lambda i: float(scores[i - 1])) if scores is not None else (lambda i: 1.0)
    planes = table.truth_area.shape[0]
    categories = sorted(
        {t_class(i) for z in range(planes) for i in np.flatnonzero(table.truth_area[z, 1:]) + 1}
        | {p_class(i) for z in range(planes) for i in np.flatnonzero(table.prediction_area[z, 1:]) + 1}
    )
    precision = -np.ones((len(IOU_THRESHOLDS), len(RECALL_POINTS), max(len(categories), 1)))
    for k, category in enumerate(categories):
        all_scores, all_matches, n_truth = [], [], 0
        for z in range(planes):
            truths = [int(i) for i in np.flatnonzero(table.truth_area[z, 1:]) + 1 if t_class(i) == category]
            detections = [int(i) for i in np.flatnonzero(table.prediction_area[z, 1:]) + 1 if p_class(i) == category]
            if not truths and not detections:
                continue
            order = np.argsort([-score(i) for i in detections], kind="mergesort")
            detections = [detections[i] for i in order]
            wanted = set(truths)
            ious = {
                d: {
                    g: overlap / (table.truth_area[z, g] + table.prediction_area[z, d] - overlap)
                    for g, overlap in table.pairs.get(z, {}).get(d, {}).items()
                    if g in wanted
                }
                for d in detections
            }
            n_truth += len(truths)
            all_scores.append(np.array([score(i) for i in detections], float))
            all_matches.append(_match(truths, detections, ious))
        if n_truth == 0:
            continue  # COCO leaves a class without ground truth out of the mean
        scores_k = np.concatenate(all_scores)
        inds = np.argsort(-scores_k, kind="mergesort")
        matches = np.concatenate(all_matches, axis=1)[:, inds]
        tp_sum = np.cumsum(matches, axis=1).astype(float)
        fp_sum = np.cumsum(~matches, axis=1).astype(float)
        for t in range(len(IOU_THRESHOLDS)):
            tp, fp = tp_sum[t], fp_sum[t]
            recall = tp / n_truth
            precise = tp / (fp + tp + np.spacing(1))
            envelope = np.maximum.accumulate(precise[::-1])[::-1]  # COCO's interpolated precision
            points = np.searchsorted(recall, RECALL_POINTS, side="left")
            q = np.zeros(len(RECALL_POINTS))
            inside = points < len(envelope)
            q[inside] = envelope[points[inside]]
            precision[t, :, k] = q
    return ap_summary(precision)


def ap_summary(precision: np.ndarray) -> dict[str, float]:
    """AP (mean over IoU thresholds, recall points and classes with ground truth) and AP50 of a
    COCO precision table ``(thresholds, recall points, classes)``, whose -1 marks a class
    without ground truth (0 when no class has any), as ``COCOeval.summarize`` reports them."""
    at_50 = precision[IOU_THRESHOLDS == 0.5]
    mean = lambda s: float(np.mean(s[s > -1])) if (s > -1).any() else 0.0  # noqa: E731
    return {"ap": mean(precision), "ap50": mean(at_50)}
