"""Large images and stacks (issue #6), full-size rd64-refined random weights, CPU.

1. A 4096x4096 uint16 image, tiled (352 px tiles, 44 px overlap), three prompts, run in a fresh
   subprocess so its peak RSS is its own. Targets: peak RSS < 3 GiB; time within 1.2x of
   (number of tiles x the time of one tile), the single tile measured in the same process. The
   same again with a pixel refiner for the three prompts (issue 33): at most 1 GiB more.
2. A stack of 16 planes of 352x352: the first run vs. re-prompting (features cached).
   Target: re-prompt >= 20x faster.

Run: ``python benchmarks/bench_large.py``; writes benchmarks/results/large.json.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved_medians, write_results

PROMPTS = ["cell", "nucleus", "membrane"]


def segment_uncached(image, predictor, prompts=PROMPTS, **options):
    """One run with an empty feature cache (every plane and tile goes through the image tower)."""
    import napari_clipseg as ncs

    predictor.feature_cache.clear()
    return ncs.run(ncs.iter_segment(image, prompts, predictor, ncs.SegmentOptions(**options)))


def tiled_run(model_dir: str, refiner: bool = False) -> dict:
    """Inside the subprocess: the 4096^2 run, its single-tile reference, and the peak RSS
    (``refiner``: the model carries a pixel refiner for the prompts, as a learnt decoder does)."""
    import napari_clipseg as ncs
    from napari_clipseg.segmentation.refiner import PixelRefiner, feature_count, make_head
    from napari_clipseg.segmentation.tiling import tile_boxes

    # a one-off run, as segment() does it: no feature cache (see performance.md for the cached case)
    predictor = ncs.ClipSegPredictor(ncs.load_model(model_dir), cache_bytes=0)
    if refiner:  # random weights: what matters here is its memory and time, not its maps
        head = make_head(feature_count(1, len(PROMPTS)), len(PROMPTS)).eval()
        predictor.model.pixel_refiner = PixelRefiner(head, PROMPTS, 1, min_size=10)
    image = np.random.default_rng(0).integers(0, 65535, (4096, 4096), dtype=np.uint16)
    n_tiles = len(tile_boxes(image.shape))
    one_tile = image[:352, :352]
    single = interleaved_medians(
        {"tile": lambda: segment_uncached(one_tile, predictor, mode="tiled", batch_size=1)}, 3
    )["tile"]
    start = time.perf_counter()
    result = segment_uncached(image, predictor, mode="tiled", batch_size=4)
    seconds = time.perf_counter() - start
    return {
        "tiles": n_tiles,
        "seconds": seconds,
        "single_tile_seconds": single,
        "time_over_tiles_x_single_tile": seconds / (n_tiles * single),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "probabilities_dtype": str(result.probabilities.dtype),
    }


def stack_run(model_dir: str) -> dict:
    import napari_clipseg as ncs

    predictor = ncs.ClipSegPredictor(ncs.load_model(model_dir))
    stack = np.random.default_rng(1).integers(0, 4000, (16, 352, 352), dtype=np.uint16)
    start = time.perf_counter()
    segment_uncached(stack, predictor, prompts=["cell"])
    first = time.perf_counter() - start
    options = ncs.SegmentOptions()
    reprompt = interleaved_medians(
        {"r": lambda: ncs.run(ncs.iter_segment(stack, ["a new prompt"], predictor, options))}, 3
    )["r"]
    return {"first_run_seconds": first, "reprompt_seconds": reprompt, "speedup": first / reprompt}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--tiled-child":
        print(json.dumps(tiled_run(sys.argv[2], sys.argv[3] == "refiner")))
        return
    import napari_clipseg as ncs

    model_dir = str(Path(tempfile.mkdtemp()) / "rd64-refined-random")
    ncs.save_pretrained(ncs.build_model("rd64-refined", seed=0), model_dir)
    tiled, refined = (
        json.loads(
            subprocess.run(
                [sys.executable, __file__, "--tiled-child", model_dir, kind], capture_output=True, text=True, check=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for kind in ("plain", "refiner")
    )
    extra = refined["peak_rss_gib"] - tiled["peak_rss_gib"]
    print(f"4096² tiled: peak RSS {tiled['peak_rss_gib']:.2f} GiB, with a pixel refiner {refined['peak_rss_gib']:.2f} "
          f"GiB (+{extra:.2f}); {tiled['seconds']:.0f} s, with the refiner {refined['seconds']:.0f} s")  # fmt: skip
    stack = stack_run(model_dir)
    write_results(
        "large",
        {
            "tiled_4096": tiled,
            "tiled_4096_with_refiner": refined,
            "stack_16": stack,
            "targets": {
                "peak_rss_gib": "< 3",
                "refiner_extra_rss_gib": "<= 1",
                "time_over_tiles_x_single_tile": "<= 1.2",
                "stack_reprompt_speedup": ">= 20",
            },
            "met": {
                "peak_rss": tiled["peak_rss_gib"] < 3,
                "refiner_extra_rss": extra <= 1,
                "tiled_time": tiled["time_over_tiles_x_single_tile"] <= 1.2,
                "stack_reprompt": stack["speedup"] >= 20,
            },
        },
    )


if __name__ == "__main__":
    main()
