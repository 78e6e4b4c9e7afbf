"""Metrics against hand-computed values on tiny arrays and against pycocotools on a small COCO pair."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import tifffile

import napari_clipseg as ncs
from napari_clipseg.evaluation.metrics import (
    changed_fraction,
    class_scores,
    coco_ap,
    instance_ap,
    matting_errors,
)
from napari_clipseg.io.coco import build_coco

TRUTH = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 0, 2],
        [0, 0, 2, 2],
    ]
)
PRED = np.array(
    [
        [1, 1, 1, 0],
        [1, 0, 0, 2],
        [0, 0, 0, 2],
    ]
)


def test_class_scores_by_hand():
    one = class_scores(PRED, TRUTH, 1)  # TP 3, FP 1, FN 1
    assert one == pytest.approx({"iou": 3 / 5, "dice": 6 / 8, "precision": 3 / 4, "recall": 3 / 4})
    two = class_scores(PRED, TRUTH, 2)  # TP 2, FP 0, FN 1
    assert two == pytest.approx({"iou": 2 / 3, "dice": 4 / 5, "precision": 1.0, "recall": 2 / 3})
    absent = class_scores(PRED, TRUTH, 3)
    assert all(math.isnan(v) for v in absent.values())  # 0/0: left out of means, never counted as 0 or 1


def test_changed_fraction_and_matting_errors_by_hand():
    assert changed_fraction(PRED, TRUTH) == pytest.approx(3 / 12)
    with pytest.raises(ValueError, match="shapes differ"):
        changed_fraction(PRED, TRUTH[:2])
    probability = np.array([[0.0, 0.5], [1.0, 0.25]])
    alpha = np.array([[0.0, 1.0], [0.5, 0.25]])
    errors = matting_errors(probability, alpha)  # |d| = 0, .5, .5, 0
    assert errors == pytest.approx({"mad": 0.25, "mse": 0.125, "sad": 1.0 / 1000})


def _instances():
    truth = np.zeros((20, 20), np.int32)
    truth[2:8, 2:8] = 1
    truth[10:18, 10:18] = 2
    return truth


def test_instance_ap_by_hand():
    truth = _instances()
    assert instance_ap(truth, truth) == {"ap": 1.0, "ap50": 1.0}
    half = np.where(truth == 1, 1, 0)  # one of two objects found, perfectly: precision 1 up to recall 0.5
    assert instance_ap(truth, half)["ap50"] == pytest.approx(51 / 101)  # COCO's 101-point interpolation
    shifted = np.zeros_like(truth)
    shifted[2:8, 4:10] = 1  # IoU 24 / 48 = 0.5 with the first object, nothing for the second
    result = instance_ap(truth, shifted)
    assert result["ap50"] == pytest.approx(51 / 101) and result["ap"] == pytest.approx(51 / 101 / 10)
    wrong_class = instance_ap(truth, truth, truth_classes=[1, 1], prediction_classes=[2, 2])
    assert wrong_class["ap"] == 0.0  # classes are matched when both sides give them


def test_coco_ap_agrees_with_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth_ids = _instances()
    pred_ids = np.zeros_like(truth_ids)
    pred_ids[2:8, 3:8] = 1
    pred_ids[11:18, 10:18] = 2
    pred_ids[0:2, 15:20] = 3  # a false positive
    truth = build_coco([("a", truth_ids, [1, 1], None)], ["cell"])
    pred = build_coco([("a", pred_ids, [1, 1, 1], [0.9, 0.8, 0.95])], ["cell"])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(pred["annotations"]), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert coco_ap(truth, pred) == pytest.approx({"ap": evaluation.stats[0], "ap50": evaluation.stats[1]})
    assert 0 < evaluation.stats[0] < 1


def test_coco_files_are_evaluated_by_pycocotools(tmp_path):
    truth_ids = _instances()
    truth = build_coco([("a", truth_ids, [1, 1], None)], ["cell"])
    pred = build_coco([("a", truth_ids, [1, 1], [0.9, 0.9])], ["cell"])
    (tmp_path / "t.json").write_text(json.dumps(truth))
    (tmp_path / "p.json").write_text(json.dumps(pred))
    assert ncs.evaluate(tmp_path / "p.json", tmp_path / "t.json").mean == {"ap": 1.0, "ap50": 1.0}


def test_evaluate_matches_files_by_name_and_writes_csv_json_plot(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    for folder in (pred, truth):
        folder.mkdir()
    tifffile.imwrite(pred / "a.tif", PRED.astype(np.uint8))
    tifffile.imwrite(truth / "a.tif", TRUTH.astype(np.uint8))
    tifffile.imwrite(pred / "b.tif", TRUTH.astype(np.uint8))
    tifffile.imwrite(truth / "b.tif", TRUTH.astype(np.uint8))
    tifffile.imwrite(truth / "only-truth.tif", TRUTH.astype(np.uint8))
    report = ncs.evaluate(pred, truth, tmp_path / "metrics")
    assert report.unmatched == ["only-truth"]
    a = next(i for i in report.images if i["image"] == "a")
    assert a["iou"] == pytest.approx((3 / 5 + 2 / 3) / 2) and a["changed_fraction"] == pytest.approx(0.25)
    assert report.per_class["1"]["iou"] == pytest.approx((3 / 5 + 1) / 2)
    assert report.mean["changed_fraction"] == pytest.approx(0.125)
    rows = (tmp_path / "metrics" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "image,class,iou,dice,precision,recall" and len(rows) == 1 + 4
    assert json.loads((tmp_path / "metrics" / "metrics.json").read_text())["unmatched"] == ["only-truth"]
    assert (tmp_path / "metrics" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no prediction matches"):
        ncs.evaluate(pred / "a.tif", truth / "b.tif")


def test_probabilities_against_an_alpha_matte(tmp_path, tiny_model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 56, 3), dtype=np.uint8)
    np.save(tmp_path / "img.npy", image)
    ncs.segment_dataset(tmp_path / "img.npy", ["cat"], tmp_path / "out", model=tiny_model, probabilities=True)
    alpha = np.zeros((48, 56), np.float32)
    alpha[10:30, 10:30] = 1.0
    (tmp_path / "alpha").mkdir()
    tifffile.imwrite(tmp_path / "alpha" / "img.tif", alpha)
    with pytest.raises(ValueError, match=r"img: the ground truth is a float image .* say which"):
        ncs.evaluate(tmp_path / "out", tmp_path / "alpha")  # a float image is never guessed
    report = ncs.evaluate(tmp_path / "out", tmp_path / "alpha", truth_kind="matte")
    from napari_clipseg.io.outputs import read_output

    probability = np.asarray(read_output(tmp_path / "out" / "img", "probabilities"))[0]
    assert report.images[0] == pytest.approx({"image": "img", **matting_errors(probability, alpha)})


def test_boundary_iou_and_object_corrections_by_hand():
    from napari_clipseg.evaluation.effort import boundary_iou, object_corrections, objects

    truth = np.zeros((20, 40), int)
    truth[2:10, 2:10], truth[2:10, 10:18], truth[12:18, 25:35] = 1, 2, 3  # two touching objects and one apart
    merged = np.zeros_like(truth)
    merged[2:10, 2:18], merged[15:19, 0:3] = 1, 2  # the touching pair as one, the third missed, one spurious
    found = object_corrections(merged, truth)
    assert (found.add, found.delete, found.split, found.merge) == (1, 1, 1, 0) and found.cost == 10 + 1 + 5
    halves = truth.copy()
    halves[12:18, 30:35] = 4  # the third object in two pieces
    assert object_corrections(halves, truth).to_dict() == {"add": 0, "delete": 0, "split": 0, "merge": 1, "cost": 5}
    assert object_corrections(truth, truth).cost == 0
    assert object_corrections(objects(truth > 0), truth).split == 1  # a perfect class mask of touching objects
    square = np.zeros((12, 12), int)
    square[2:10, 2:10] = 1
    ragged = square.copy()
    ragged[2, 2:10:2] = 0  # an edge repainted here and there: a small change in IoU, a large one at the edge
    assert boundary_iou(square, square, 1) == 1.0
    assert boundary_iou(ragged, square, 1) < class_scores(ragged, square, 1)["iou"]
