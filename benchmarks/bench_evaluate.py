"""Instance AP: the overlap table (ours) against pycocotools on the same label images.

Prints and writes ``benchmarks/results/evaluate.json``: for fields of N noise objects, the time of
pycocotools' AP (every predicted mask against every true one) and of ours (one pass over the
pixels), side by side in one run and equal in value; then issue 21's case: ``evaluate`` on six
batch output folders of 240 x 240 with about 4,500 objects each, against themselves, and one
image of 10,000 objects.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import napari_clipseg as ncs
from _common import write_results
from napari_clipseg.evaluation.metrics import coco_ap, instance_ap
from napari_clipseg.io.coco import build_coco


def noise_objects(seed: int, size: int, keep: float = 0.3) -> np.ndarray:
    """A random model's output: connected blobs of thresholded smoothed noise, labelled 1..N
    (about one object per 12 pixels)."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random((size, size)), 0.5)
    ids, _ = ndimage.label(field > np.quantile(field, 1 - keep))
    return ids.astype(np.int32)


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _pycocotools_ap(truth: np.ndarray, prediction: np.ndarray, scores: list[float]) -> dict[str, float]:
    names = ["cell"]
    gt = build_coco([("image", truth, [1] * int(truth.max()), None)], names)
    dt = build_coco([("image", prediction, [1] * int(prediction.max()), scores)], names)
    return coco_ap(gt, dt, use_categories=False)


def _batch_folder(root: Path, name: str, ids: np.ndarray, scores: list[float]) -> None:
    from napari_clipseg.io.outputs import write_output_folder
    from napari_clipseg.io.records import build_record

    n = int(ids.max())
    record = build_record(
        ["cell"],
        image={"name": name, "shape": list(ids.shape)},
        instance_classes=[1] * n,
        instance_scores=scores,
    )
    labels = (ids > 0).astype(np.uint8)
    write_output_folder(
        root / name, {"labels": labels, "instances": ids}, record, file_format="npy", staging=root / ".staging"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 96, 144], help="field sizes pycocotools runs on")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    side_by_side = []
    for size in args.sizes:
        truth = noise_objects(1, size)
        prediction = noise_objects(2, size)
        scores = list(rng.random(int(prediction.max())))
        reference, t_ref = _timed(lambda: _pycocotools_ap(truth, prediction, scores))  # noqa: B023
        ours, t_ours = _timed(lambda: instance_ap(truth, prediction, scores=scores))  # noqa: B023
        same = np.allclose([ours["ap"], ours["ap50"]], [reference["ap"], reference["ap50"]], atol=1e-12)
        assert same, (ours, reference)
        side_by_side.append(
            {
                "size": size,
                "objects": [int(truth.max()), int(prediction.max())],
                "pycocotools_s": round(t_ref, 3),
                "ours_s": round(t_ours, 4),
                "ratio": round(t_ref / t_ours, 1),
                "ap": ours,
            }
        )
        print(side_by_side[-1])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counts = []
        for k in range(6):
            ids = noise_objects(10 + k, 240, keep=0.3)
            counts.append(int(ids.max()))
            _batch_folder(root / "out", f"image{k}", ids, list(rng.random(int(ids.max()))))
        report, t_eval = _timed(lambda: ncs.evaluate(root / "out", root / "out"))
        print(f"evaluate: 6 folders with {counts} objects in {t_eval:.2f} s, AP {report.mean['ap']}")
    big = noise_objects(20, 350)
    big_prediction = np.roll(big, 1, axis=1)
    ap, t_big = _timed(lambda: instance_ap(big, big_prediction, scores=list(rng.random(int(big.max())))))
    print(f"one image of {int(big.max())} objects: {t_big:.2f} s")
    write_results(
        "evaluate",
        {
            "side_by_side": side_by_side,
            "issue_case": {"objects_per_image": counts, "evaluate_s": round(t_eval, 2), "ap": report.mean["ap"]},
            "ten_thousand": {"objects": int(big.max()), "seconds": round(t_big, 2), "ap": ap},
        },
    )


if __name__ == "__main__":
    main()
