"""``finetune``'s defaults against the passes it used to take, on 8 real nuclei crops (issue 32).

Full-size rd64-refined with random weights, float32; the crops of the 2D nuclei image that the
stardist package ships (``pip install stardist --no-deps``; nothing is downloaded at run time),
the first 8 as training pairs (the newest 2 held out, as every Learn holds out), the other 8 never
seen. Each schedule trains from the same encoded taps (a feature store filled once), side by side
in one run: seconds of training, epochs run, held-out IoU, and the IoU of ``segment()`` with the
learnt decoder on the 8 unseen crops.

Run: ``python benchmarks/bench_finetune_schedules.py [--schedules 120:24:0,120:24:240]``; writes
benchmarks/results/finetune_schedules.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results
from bench_loop import stardist_nuclei


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--schedules",
        default="120:24:0,120:24:240",
        help="epochs:patience:max_steps, comma-separated (max_steps 0: unbounded, as before issue 32)",
    )
    args = parser.parse_args()
    import torch

    import napari_clipseg as ncs
    from napari_clipseg.evaluation.metrics import class_scores
    from napari_clipseg.learning.finetune import TrainingPair, finetune
    from napari_clipseg.learning.settings import FineTuneSettings
    from napari_clipseg.modeling.decoder_files import use_result

    torch.set_num_threads(torch.get_num_threads())
    nuclei = stardist_nuclei()
    if nuclei is None:
        sys.exit("needs the stardist package's sample data: pip install stardist --no-deps")
    names = sorted(nuclei)
    pairs = [TrainingPair(*nuclei[name], name=name) for name in names[:8]]
    unseen = names[8:16]
    model = ncs.build_model("rd64-refined", seed=0).eval()
    defaults = FineTuneSettings()
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        finetune(ncs.ClipSegPredictor(model, cache_bytes=0), pairs, ["nucleus"], epochs=1, cache_dir=cache)
        rows["encode_once_s"] = round(time.perf_counter() - started, 1)
        for text in args.schedules.split(","):
            epochs, patience, max_steps = (int(v) for v in text.split(":"))
            started = time.perf_counter()
            result = finetune(
                ncs.ClipSegPredictor(model, cache_bytes=0),
                pairs,
                ["nucleus"],
                epochs=epochs,
                patience=patience,
                max_steps=max_steps or 10**9,
                cache_dir=cache,
            )
            seconds = time.perf_counter() - started
            tuned = use_result(ncs.build_model("rd64-refined", seed=0), result) if result.accepted else model
            scores = [
                class_scores(
                    ncs.segment(nuclei[n][0], ["nucleus"], model=tuned, threshold=result.threshold), nuclei[n][1], 1
                )["iou"]
                for n in unseen
            ]
            bound = f"at most {max_steps} steps" if max_steps else "no step bound"
            default = (epochs, patience, max_steps) == (defaults.epochs, defaults.patience, defaults.max_steps)
            key = f"{epochs} passes, patience {patience}, {bound}" + (" (default)" if default else "")
            rows[key] = {
                "seconds": round(seconds, 1),
                "epochs_run": len(result.history),
                "steps": result.steps,
                "accepted": result.accepted,
                "held_out_iou": {"before": round(result.base_iou, 3), "after": round(result.iou, 3)},
                "unseen_iou": round(float(np.nanmean(scores)), 3),
            }
            print(key, rows[key], flush=True)
    write_results("finetune_schedules", rows)


if __name__ == "__main__":
    main()
