"""Memory of a tiled 4096 x 4096 uint16 run with the feature cache on (as the widget keeps it).

Each case runs in a fresh process with a full-size random model (three prompts, ``mode="tiled"``,
196 tiles): at float32 and int8, with freed heap pages handed back after each tile batch (the
default, ``predictor.release_freed_memory``) and, for comparison, without. Prints and writes
``benchmarks/results/cache_memory.json``: peak RSS of the whole process, seconds, cache size.
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

from _common import write_results

CASES = [("float32", True), ("int8", True), ("int8", False)]


def child(model_dir: str, precision: str, release: bool) -> dict:
    import napari_clipseg as ncs
    from napari_clipseg.segmentation import predictor as predictor_module

    if not release:
        predictor_module.release_freed_memory = lambda: None
    predictor = ncs.ClipSegPredictor(ncs.load_model(model_dir, dtype=precision))  # default cache (1 GiB)
    image = np.random.default_rng(0).integers(0, 65535, (4096, 4096), dtype=np.uint16)
    start = time.perf_counter()
    ncs.run(ncs.iter_segment(image, ["cell", "nucleus", "membrane"], predictor, ncs.SegmentOptions(mode="tiled")))
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "cache_mb": round(predictor.feature_cache.total_size / 1e6, 1),
    }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4] == "1")))
        return
    import napari_clipseg as ncs

    model_dir = str(Path(tempfile.mkdtemp()) / "rd64-refined-random")
    ncs.save_pretrained(ncs.build_model("rd64-refined", seed=0), model_dir)
    results = {}
    for precision, release in CASES:
        argv = [sys.executable, __file__, "--child", model_dir, precision, "1" if release else "0"]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        name = f"{precision}, {'pages released' if release else 'not released (before)'}"
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    write_results("cache_memory", {"cases": results, "target_peak_rss_gib": 2.5})


if __name__ == "__main__":
    main()
