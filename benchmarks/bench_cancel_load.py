"""Cancel while a full-size model loads at precision ``auto``: how long from the stop until the load ends.

Each stage of a first load on a new machine (reading the weights, the one-off timing of a vision
block, building the int8 copy, the check on the weights) is interrupted 0.1 s after it starts, in
a fresh cache folder, as the widget's Cancel does (it sets the load's stop flag). Prints and
writes ``benchmarks/results/cancel_load.json``: per stage, the median over ``--repeats`` of the
time from setting the flag to ``RunCancelled`` in the loading thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import napari_clipseg as ncs
from _common import write_results
from napari_clipseg.errors import RunCancelled
from napari_clipseg.modeling import clipseg, info, weights
from napari_clipseg.precision import choice, timing
from napari_clipseg.precision.measurements import CACHE_ENV
from napari_clipseg.segmentation import precision_check

#: stage -> (module, function name) to interrupt
STAGES = {
    "reading the weights": (weights, "read_state_dict"),
    "checking the weights are finite": (weights, "check_finite"),
    "timing a vision block": (timing, "_time_one_block"),
    "building the int8 copy": (clipseg, "quantize_towers"),
    "hashing the weights": (info, "file_sha256"),
    "checking int8 on the weights": (precision_check, "guard_on_model"),
}


def cancel_latency(source: Path, module, name: str, delay: float = 0.1) -> float:
    """Seconds from the stop flag being set (``delay`` into the stage) until the load raised."""
    stop, set_at = threading.Event(), []
    original = getattr(module, name)

    def interrupted(*args, **kwargs):
        def cancel():
            set_at.append(time.perf_counter())
            stop.set()

        threading.Timer(delay, cancel).start()
        return original(*args, **kwargs)

    setattr(module, name, interrupted)
    try:
        with tempfile.TemporaryDirectory() as cache:
            os.environ[CACHE_ENV] = cache
            timing._speedups.clear()
            try:
                ncs.ModelSpec(str(source), precision="auto").load(stop=stop)
            except RunCancelled:
                return time.perf_counter() - set_at[0]
            raise AssertionError(f"the load went through although stopped during {name}")
    finally:
        setattr(module, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    choice.MIN_SPEEDUP = 0.0  # every stage runs, also on a CPU where int8 would not win
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model"
        weights.save_pretrained(ncs.build_model("rd64-refined", seed=0), source)
        results = {}
        for stage, (module, name) in STAGES.items():
            times = [cancel_latency(source, module, name) for _ in range(args.repeats)]
            results[stage] = {"median_ms": round(1000 * statistics.median(times)), "max_ms": round(1000 * max(times))}
            print(f"{stage:32s} {results[stage]}")
    write_results("cancel_load", {"stages": results, "target_ms": 500})


if __name__ == "__main__":
    main()
