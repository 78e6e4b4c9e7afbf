"""Instance AP from the overlap table equals pycocotools' AP on the same objects."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from skimage.draw import disk

from napari_clipseg.evaluation.matching import overlap_table
from napari_clipseg.evaluation.metrics import coco_ap, instance_ap
from napari_clipseg.io.coco import build_coco


def _field(rng, shape, count):
    """Overlapping random discs painted in order: later ids cover earlier ones, some vanish."""
    ids = np.zeros(shape, np.int32)
    for i in range(1, count + 1):
        centre = rng.integers(0, shape[-2]), rng.integers(0, shape[-1])
        rr, cc = disk(centre, rng.integers(2, 9), shape=shape[-2:])
        if ids.ndim == 2:
            ids[rr, cc] = i
        else:
            ids[rng.integers(0, shape[0]), rr, cc] = i
    return ids


def _pycocotools(truth, prediction, truth_classes, prediction_classes, scores):
    """pycocotools' own summary (fields of under 100 objects, where its maxDets of 100 keeps all)."""
    use = truth_classes is not None and prediction_classes is not None
    n_t, n_p = int(truth.max()), int(prediction.max())
    assert n_p < 100
    t_classes = list(truth_classes) if use else [1] * n_t
    p_classes = list(prediction_classes) if use else [1] * n_p
    names = [str(c) for c in range(1, max([1, *t_classes, *p_classes]) + 1)]
    gt_data = build_coco([("image", truth, t_classes, None)], names)
    results = build_coco([("image", prediction, p_classes, scores)], names)["annotations"]
    if not results:
        return {"ap": 0.0, "ap50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_data
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes([{**r, "score": r.get("score", 1.0)} for r in results]), "segm")
        evaluation.params.useCats = int(use)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"ap": max(evaluation.stats[0], 0.0), "ap50": max(evaluation.stats[1], 0.0)}


@pytest.mark.parametrize("seed", range(12))
def test_equals_pycocotools_on_random_fields(seed):
    rng = np.random.default_rng(seed)
    shape = (64, 64) if seed % 3 else (3, 48, 48)
    truth = _field(rng, shape, 30)
    # a prediction: the truth moved, some objects dropped, some invented, ids shuffled
    prediction = np.roll(truth, (rng.integers(-2, 3), rng.integers(-2, 3)), axis=(-2, -1))
    prediction = np.where(rng.random(int(prediction.max()) + 1)[prediction] < 0.2, 0, prediction)
    extra = _field(rng, shape, 8)
    prediction = np.where(extra > 0, extra + prediction.max(), prediction)
    permutation = np.concatenate([[0], rng.permutation(int(prediction.max())) + 1])
    prediction = permutation[prediction].astype(np.int32)
    n_t, n_p = int(truth.max()), int(prediction.max())
    classed = seed % 2 == 0
    truth_classes = list(rng.integers(1, 3, n_t)) if classed else None
    prediction_classes = list(rng.integers(1, 4, n_p)) if classed else None
    # scores with ties (rounded), or none at all (every detection scores 1)
    scores = list(np.round(rng.random(n_p), 1)) if seed % 4 != 1 else None
    ours = instance_ap(
        truth, prediction, truth_classes=truth_classes, prediction_classes=prediction_classes, scores=scores
    )
    reference = _pycocotools(truth, prediction, truth_classes, prediction_classes, scores)
    assert ours == pytest.approx(reference, abs=1e-12)
    assert 0 < reference["ap50"] < 1  # a case with matches and misses, not a trivial one


def test_equal_iou_ties_and_threshold_edges():
    # IoU exactly 0.5 matches at 0.5; two truths equally good for one detection: COCO takes the later
    truth = np.zeros((8, 16), np.int32)
    truth[0:4, 0:4], truth[0:4, 8:12] = 1, 2
    prediction = np.zeros_like(truth)
    prediction[0:4, 2:10] = 1  # 8 px of each truth: IoU 8 / (16 + 32 - 8) = 0.2 with both
    prediction[4:8, 0:8] = 2
    half = np.zeros_like(truth)
    half[0:4, 2:6] = 1  # IoU 8 / 24 = 1/3
    for pred in (prediction, half, truth, np.zeros_like(truth)):
        assert instance_ap(truth, pred) == pytest.approx(_pycocotools(truth, pred, None, None, None), abs=1e-12)


def test_overlap_table_counts_pairs():
    truth = np.array([[1, 1, 0], [2, 2, 2]])
    prediction = np.array([[3, 0, 0], [3, 1, 1]])
    table = overlap_table(truth, prediction)
    assert table.truth_area.tolist() == [[1, 2, 3]]  # id 0 is the background
    assert table.prediction_area.tolist() == [[2, 2, 0, 2]]
    assert table.pairs == {0: {3: {1: 1, 2: 1}, 1: {2: 2}}}
    with pytest.raises(ValueError, match="shapes differ"):
        overlap_table(truth, prediction[:1])


def test_more_than_100_objects_per_image_keep_their_ap():
    # COCOeval.summarize reads AP 0.5:0.95 at maxDets 100 only (-1, then 0, once that grows)
    rng = np.random.default_rng(5)
    truth = np.zeros((120, 120), np.int32)
    for i in range(144):
        r, c = divmod(i, 12)
        truth[10 * r : 10 * r + 6, 10 * c : 10 * c + 6] = i + 1
    coco = build_coco([("a", truth, [1] * 144, None)], ["cell"])
    predicted = build_coco([("a", truth, [1] * 144, list(rng.random(144)))], ["cell"])
    assert coco_ap(coco, predicted) == {"ap": 1.0, "ap50": 1.0}
    assert instance_ap(truth, truth) == {"ap": 1.0, "ap50": 1.0}
