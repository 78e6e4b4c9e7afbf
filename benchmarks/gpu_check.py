"""GPU check (issue #14): one short prepared script for a CUDA machine, under 5 minutes.

1. Parity: float32 on the GPU against float32 on the CPU, as guard figures, on the guard model
   of ``bench_predictor.py`` (full-size random towers, a decoder trained for a minute).
2. float16 and bfloat16 autocast on the GPU against float32 on the GPU: guard figures
   (``napari_clipseg.segmentation.guard``) on the same images.
3. Throughput of the image tower + decoder in tiles per second for 352-px tiles at batch 1, 8, 32,
   in float32, float16 and bfloat16.
4. The roofline table of ``bench_roofline.py`` on the GPU (each stage's FLOPs, milliseconds and
   share of a large matrix product's rate there; the decoder's two kernel paths), and the first
   prompt on a new image (image tower + text + decoder) at each precision.

Run: ``python benchmarks/gpu_check.py``; writes benchmarks/results/gpu_check.json. Exits with a
message when no CUDA device is present.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import napari_clipseg as ncs
from _common import guard_images, guard_model, guard_table, median_seconds, write_results
from bench_roofline import measure, show
from napari_clipseg.segmentation.guard import guard_figures, passes


def _tiles_per_second(model, batch: int, seconds: float = 4.0) -> float:
    predictor = ncs.ClipSegPredictor(model, cache_bytes=0)
    rng = np.random.default_rng(0)
    conditionals = predictor.embed_prompts(["cell"])
    done, started = 0, None
    while started is None or time.perf_counter() - started < seconds:
        tiles = [rng.integers(0, 255, (352, 352, 3), dtype=np.uint8) for _ in range(batch)]
        for features in predictor.encode(tiles):
            predictor.decode(features, conditionals, (352, 352))
        torch.cuda.synchronize()
        if started is None:  # the first batch warms up (kernels, autotuning)
            started = time.perf_counter()
        else:
            done += batch
    return done / (time.perf_counter() - started)


def _first_prompt_ms(model) -> float:
    """A new image and a new prompt (never cached): image tower, text tower and decoder, milliseconds."""
    rng = np.random.default_rng(1)
    predictor = ncs.ClipSegPredictor(model, cache_bytes=0)

    def once():
        predictor.set_image(rng.integers(0, 255, (352, 352, 3), dtype=np.uint8))
        predictor.predict([f"a prompt {rng.integers(1 << 30)}"])
        torch.cuda.synchronize()

    return median_seconds(once, 9) * 1000


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; the GPU path stays unmeasured (docs/performance.md)")
    model, prompts = guard_model(device="cuda")
    cpu_model = copy.deepcopy(model).to("cpu")
    cpu_model.info = dataclasses.replace(model.info, precision="float32")
    parity = {}
    for name, image in guard_images().items():
        maps = []
        for candidate in (cpu_model, model):
            predictor = ncs.ClipSegPredictor(candidate, cache_bytes=0)
            predictor.set_image(image)
            maps.append(predictor.predict(prompts))
        parity[name] = guard_figures(*maps)
    reduced = guard_table(model, prompts, ("float32", "float16", "bfloat16"))
    throughput = {
        precision: {batch: _tiles_per_second(model.with_precision(precision), batch) for batch in (1, 8, 32)}
        for precision in ("float32", "float16", "bfloat16")
    }
    roofline = measure(15, "cuda")
    show("CUDA, float32", roofline)
    first_prompt = {p: _first_prompt_ms(model.with_precision(p)) for p in ("float32", "float16", "bfloat16")}
    print("first prompt on a new image (ms):", first_prompt)
    write_results(
        "gpu_check",
        {
            "device": torch.cuda.get_device_name(),
            "compute_capability": list(torch.cuda.get_device_capability()),
            "parity_float32_cpu_vs_gpu": parity,
            "guard_vs_gpu_float32": reduced,
            "passes_guard": {p: all(passes(g) for g in figures.values()) for p, figures in reduced.items()},
            "tiles_per_second_352px": throughput,
            "roofline_float32": roofline,
            "first_prompt_ms": first_prompt,
        },
    )


if __name__ == "__main__":
    main()
