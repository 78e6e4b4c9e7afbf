"""Fine-tuning the decoder on CPU (issue #13): full-size rd64-refined random weights, 20 corrected
512x512 images of the synthetic striped-discs task (``napari_clipseg.samples.striped_discs``).

Reports the time to encode and cache the features (4 augmentations per image), seconds per epoch,
total time to the early stop, peak RSS, and the held-out IoU before and after, plus the IoU of
``segment()`` with the base and the fine-tuned decoder on 5 images never used in training.

Run: ``python benchmarks/bench_finetune.py [--images 20] [--epochs 40]``; writes
benchmarks/results/finetune.json.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results


def _segment_iou(model, seeds, size) -> float:
    import napari_clipseg as ncs
    from napari_clipseg.evaluation.metrics import class_scores
    from napari_clipseg.samples import striped_discs

    scores = []
    for seed in seeds:
        image, truth = striped_discs(seed, size)
        scores.append(class_scores(ncs.segment(image, ["disc"], model=model), truth, 1)["iou"])
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    import napari_clipseg as ncs
    from napari_clipseg.learning.finetune import TrainingPair, TrainingProgress, iter_finetune
    from napari_clipseg.modeling.decoder_files import use_result
    from napari_clipseg.samples import striped_discs

    model = ncs.build_model("rd64-refined", seed=0)
    pairs = [TrainingPair(*striped_discs(seed, args.size), name=str(seed)) for seed in range(args.images)]
    started = time.perf_counter()
    marks: dict[str, float] = {}
    events = iter_finetune(ncs.ClipSegPredictor(model, cache_bytes=0), pairs, ["disc"], epochs=args.epochs)
    try:
        while True:
            event = next(events)
            if isinstance(event, TrainingProgress):
                marks.setdefault("first_epoch_start", marks.get("encoded", time.perf_counter()))
                print(event.stage, flush=True)
            else:
                marks["encoded"] = time.perf_counter()
    except StopIteration as stop:
        result = stop.value
    total = time.perf_counter() - started
    epochs = len(result.history)
    encode = marks["encoded"] - started
    unseen = range(1000, 1005)
    base_iou = _segment_iou(model, unseen, args.size)
    tuned = use_result(ncs.build_model("rd64-refined", seed=0), result)
    write_results(
        "finetune",
        {
            "images": args.images,
            "size": args.size,
            "encode_and_cache_s": round(encode, 2),
            "seconds_per_epoch": round((total - encode) / epochs, 2),
            "epochs_run": epochs,
            "best_epoch": result.best_epoch,
            "total_s": round(total, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "held_out_iou": {"base": round(result.base_iou, 3), "fine_tuned": round(result.iou, 3)},
            "unseen_segment_iou": {
                "base": round(base_iou, 3),
                "fine_tuned": round(_segment_iou(tuned, unseen, args.size), 3),
            },
        },
    )


if __name__ == "__main__":
    main()
