"""Segmentation metrics on arrays: per-class overlap, instance AP (COCO's, from label images or COCO files),
referring-matting errors, and the share of pixels an annotator changed. Formulas: docs/datasets.md."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from .matching import ap_summary, overlap_table, table_ap

#: The per-class overlap scores, in the order tables show them.
SEMANTIC_KEYS = ("iou", "dice", "precision", "recall")


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def class_scores(prediction: np.ndarray, truth: np.ndarray, value: int) -> dict[str, float]:
    """IoU, Dice, precision and recall of class ``value`` (NaN where the ratio is 0/0)."""
    p, t = prediction == value, truth == value
    tp = float(np.count_nonzero(p & t))
    fp = float(np.count_nonzero(p & ~t))
    fn = float(np.count_nonzero(~p & t))
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def changed_fraction(prelabels: np.ndarray, corrected: np.ndarray) -> float:
    """Share of pixels whose label differs between the pre-labels and the corrected masks (the
    annotator's work; 1 minus it is the effort the pre-labels saved)."""
    if prelabels.shape != corrected.shape:
        raise ValueError(f"shapes differ: pre-labels {prelabels.shape}, corrected {corrected.shape}")
    return float(np.count_nonzero(prelabels != corrected) / prelabels.size)


def matting_errors(probability: np.ndarray, alpha: np.ndarray) -> dict[str, float]:
    """Referring-matting errors of a probability map against an alpha matte (both in [0, 1]):
    MAD (mean absolute difference), MSE (mean squared error), and SAD (sum of absolute
    differences, in thousands, as RefMatte reports it)."""
    p = np.asarray(probability, np.float64)
    a = np.asarray(alpha, np.float64)
    if p.shape != a.shape:
        raise ValueError(f"shapes differ: probabilities {p.shape}, alpha {a.shape}")
    difference = np.abs(p - a)
    return {
        "mad": float(difference.mean()),
        "mse": float((difference**2).mean()),
        "sad": float(difference.sum() / 1000),
    }


def coco_ap(truth: dict, prediction: dict, *, use_categories: bool = True) -> dict[str, float]:
    """COCO AP at IoU 0.5 and averaged over 0.5:0.95 (segmentation masks), by pycocotools.

    As COCO, except that every detection of an image counts (COCO stops at 100), since a
    microscopy image often holds more objects than that.

    Args:
        truth: A COCO dataset (images, annotations, categories).
        prediction: A COCO dataset or a list of result annotations (each with a ``score``) for
            the same image ids.
        use_categories: False matches objects regardless of class.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = prediction["annotations"] if isinstance(prediction, dict) else prediction
    if not annotations:
        return {"ap": 0.0, "ap50": 0.0}
    results = [{**a, "score": a.get("score", 1.0)} for a in annotations]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {**truth, "annotations": [{**a, "iscrowd": a.get("iscrowd", 0)} for a in truth["annotations"]]}
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluation = COCOeval(gt, dt, "segm")
        evaluation.params.useCats = int(use_categories)
        # COCO keeps the best 100 detections per image; a field of cells has more objects than that
        per_image = np.bincount([r["image_id"] for r in results]).max()
        evaluation.params.maxDets = [1, 10, max(100, int(per_image))]
        evaluation.evaluate()
        evaluation.accumulate()
    # summarize() reads AP 0.5:0.95 at maxDets 100 only, which is -1 once maxDets had to grow
    # past 100: take both figures from the table of every detection instead
    return ap_summary(evaluation.eval["precision"][:, :, :, 0, -1])


def instance_ap(
    truth_ids: np.ndarray,
    prediction_ids: np.ndarray,
    *,
    truth_classes: Sequence[int] | None = None,
    prediction_classes: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
) -> dict[str, float]:
    """COCO segmentation AP and AP50 of instance label images (2D, or stacks of planes), equal to
    pycocotools' on the same objects but from the images' overlap table (linear in pixels, not
    quadratic in objects; :mod:`.matching`).

    Classes (``classes[i - 1]`` of object ``i``) are matched when both sides give them; else
    objects are matched regardless of class. Scores rank the predictions (1 when not given).
    """
    return table_ap(
        overlap_table(truth_ids, prediction_ids),
        truth_classes=truth_classes,
        prediction_classes=prediction_classes,
        scores=scores,
    )


def mean_ignoring_nan(values: Sequence[float]) -> float:
    """Mean of the defined values (NaN when none is)."""
    defined = [v for v in values if v == v]
    return float(np.mean(defined)) if defined else float("nan")


def summarise(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """Mean of each key over rows (NaN values left out)."""
    return {k: mean_ignoring_nan([r[k] for r in rows if k in r]) for k in keys}
