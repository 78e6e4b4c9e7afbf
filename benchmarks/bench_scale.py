"""Detail for time on a big image: the read scale (``SegmentOptions.scale``) against native tiling.

A 4096 x 4096 mosaic of the striped-discs task at its native detail (12 x 12 images of 352 px,
cropped), segmented by the full-size random towers with a decoder trained for a minute on that
task (``_common.guard_model``), at precision ``auto``: native tiles (scale 1), scales 0.5 and
0.25, and the whole image squeezed into one frame (mode ``whole``). Prints and writes
``benchmarks/results/scale.json``: per scale the tiles, seconds, time relative to native, and
the IoU of the disc mask with native tiling's and with the truth.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import napari_clipseg as ncs
from _common import guard_model, write_results
from napari_clipseg.samples import striped_discs
from napari_clipseg.segmentation.tiling import tile_boxes


def mosaic(size: int, seed: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Striped-discs images of 352 px side by side (the task's native detail everywhere)."""
    n = -(-size // 352)
    image, truth = np.zeros((n * 352, n * 352), np.float32), np.zeros((n * 352, n * 352), np.uint8)
    for k in range(n * n):
        r, c = divmod(k, n)
        tile, labels = striped_discs(seed + k, 352)
        image[352 * r : 352 * (r + 1), 352 * c : 352 * (c + 1)] = tile
        truth[352 * r : 352 * (r + 1), 352 * c : 352 * (c + 1)] = labels
    return image[:size, :size], truth[:size, :size]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    args = parser.parse_args()
    trained, prompts = guard_model()
    from napari_clipseg.segmentation.model_spec import with_chosen_precision

    model = with_chosen_precision(trained, "auto")
    predictor = ncs.ClipSegPredictor(model, cache_bytes=0)
    image, truth = mosaic(args.size)
    runs = {f"scale {s:g}": ncs.SegmentOptions(mode="tiled", scale=s) for s in args.scales}
    runs["whole (one frame)"] = ncs.SegmentOptions(mode="whole")
    masks, rows = {}, {}
    for name, options in runs.items():
        start = time.perf_counter()
        result = ncs.run(ncs.iter_segment(image, [prompts[0]], predictor, options))
        seconds = time.perf_counter() - start
        masks[name] = result.labels == 1
        tiles = len(tile_boxes(image.shape, options.tile_size, options.tile_overlap)) if options.mode == "tiled" else 1
        rows[name] = {"tiles": tiles, "seconds": round(seconds, 1), "iou_truth": round(iou(masks[name], truth > 0), 3)}
        print(name, rows[name], flush=True)
    native = next(iter(runs))
    for name, row in rows.items():
        row["time_vs_native"] = round(row["seconds"] / rows[native]["seconds"], 3)
        row["iou_with_native"] = round(iou(masks[name], masks[native]), 3)
    write_results("scale", {"size": args.size, "precision": model.info.precision, "prompt": prompts[0], "runs": rows})


if __name__ == "__main__":
    main()
