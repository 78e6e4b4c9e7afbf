"""Engines for the image tower: eager torch against OpenVINO, every precision, side by side.

Full-size rd64-refined with random weights (transformers' initialisation, the same weights in
both), 352 x 352, CPU, the threads torch uses. Paths: torch float32 (exact), torch int8 and
bfloat16 (the approximate paths "auto" may pick; bfloat16 only where native), OpenVINO float32
(``INFERENCE_PRECISION_HINT=f32``: exact within float32 rounding), OpenVINO bfloat16 (where
native) and OpenVINO int8 (NNCF post-training quantization of the converted tower on 8
calibration images; only with ``pip install nncf``). Cases, each as the ratio to transformers'
float32 forward timed in the same run, round-robin: the first prompt on a new image, a new prompt
on a cached image (no tower: the same for every engine), 8 prompts on a new image, and the tower
alone on a batch of 4 tiles (tiles per second). Accuracy: the largest difference of the deepest
tap and of the logits from torch float32, relative to their range, for every path. Also timed:
the first load's conversion and a later load from the cache.

Run: ``python benchmarks/bench_openvino.py [--repeats N]``; writes benchmarks/results/openvino.json.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ["NAPARI_CLIPSEG_OPENVINO"] = "0"  # the torch baseline is loaded eager; engines are built here
sys.path.insert(0, str(Path(__file__).parent))
import napari_clipseg as ncs
from _common import (
    EIGHT,
    full_size_pair,
    guard_model,
    guard_table_of,
    interleaved_medians,
    transformers_cases,
    write_results,
)
from napari_clipseg.modeling import openvino_engine
from napari_clipseg.precision.choice import native_bfloat16
from napari_clipseg.segmentation.prompts import tokenize
from napari_clipseg.segmentation.transforms import to_model_input


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((352, 352, 3)).astype(np.float32) for _ in range(n)]


def openvino_engines(model, cache: Path) -> tuple[dict, dict]:
    """OpenVINO engines for the tower (float32; bfloat16 where native; int8 with NNCF), and the
    conversion and cached-load seconds."""
    import openvino as ov

    layers = model.config.extract_layers
    started = time.perf_counter()
    exact = openvino_engine.vision_engine(model.clip.visual, layers, 352, cache)
    convert_s = time.perf_counter() - started
    started = time.perf_counter()
    openvino_engine.vision_engine(model.clip.visual, layers, 352, cache)
    cached_s = time.perf_counter() - started
    engines = {"openvino_float32": exact}
    (folder,) = (cache / "openvino").iterdir()
    graph = ov.Core().read_model(str(folder / openvino_engine.GRAPH_NAME))
    threads = torch.get_num_threads()
    if native_bfloat16(torch.device("cpu")):
        engines["openvino_bfloat16"] = openvino_engine.vision_engine(
            model.clip.visual, layers, 352, cache, precision="bfloat16"
        )
    try:
        import nncf
    except ImportError:
        nncf = None
    if nncf is not None:
        calibration = [to_model_input(image).numpy() for image in _images(8)]
        quantized = nncf.quantize(graph, nncf.Dataset(calibration), subset_size=len(calibration))
        config = openvino_engine.compile_config("float32", threads)  # int8 kernels where quantized, f32 elsewhere
        engines["openvino_int8"] = openvino_engine.VisionEngine(
            ov.Core().compile_model(quantized, "CPU", config), 352, exact.grid, len(layers), "float32"
        )
    return engines, {"first_load_conversion_s": convert_s, "cached_load_s": cached_s}


def cases(model, images, counter) -> dict:
    pred = ncs.ClipSegPredictor(model, cache_bytes=0)
    pred.set_image(images[0])
    tiles = torch.cat([to_model_input(image) for image in images[:4]])

    def first_prompt_new_image():
        pred.set_image(images[next(counter) % len(images)])
        pred.predict([f"object number {next(counter)}"])

    def new_prompt_cached_image():
        pred.predict([f"object number {next(counter)}"])

    def eight_prompts_new_image():
        pred.set_image(images[next(counter) % len(images)])
        pred.predict([f"{p} {next(counter)}" for p in EIGHT])

    def four_tiles():
        with model.inference():  # autocast where the path runs under it (torch bfloat16)
            model.encode_image(tiles)

    return {
        "first_prompt_new_image": first_prompt_new_image,
        "new_prompt_cached_image": new_prompt_cached_image,
        "eight_prompts_new_image": eight_prompts_new_image,
        "four_tiles": four_tiles,
    }


def accuracy(reference, model, pixels, ids) -> dict:
    with reference.inference():
        want_tap = reference.encode_image(pixels).reduced[-1].float()
        want = reference(pixels, input_ids=ids).float()
    with model.inference():  # under autocast where the path runs under it
        got_tap = model.encode_image(pixels).reduced[-1].float()
        got = model(pixels, input_ids=ids).float()
    span = lambda t: float(t.max() - t.min())  # noqa: E731
    return {
        "deepest_tap": float((got_tap - want_tap).abs().max()) / span(want_tap),
        "logits": float((got - want).abs().max()) / span(want),
    }


def guard_figures_of_paths() -> dict:
    """The accuracy guard (napari_clipseg.segmentation.guard) of every path against torch float32,
    on the guard's model (a trained decoder) and images; per path: passes on every image, and the
    worst figures."""
    from napari_clipseg.segmentation.guard import passes

    model, prompts = guard_model()
    models = {"torch_float32": model, "torch_int8": model.with_precision("int8")}
    if native_bfloat16(torch.device("cpu")):
        models["torch_bfloat16"] = model.with_precision("bfloat16")
    with tempfile.TemporaryDirectory() as tmp:
        engines, _ = openvino_engines(model, Path(tmp))
    for name, engine in engines.items():
        base = model if engine.precision == "float32" else model.with_precision(engine.precision)
        models[name] = base.with_engine(engine)
    table = guard_table_of(models, prompts)
    summary = {}
    for name, per_image in table.items():
        worst = {k: max(f[k] for f in per_image.values()) for k in next(iter(per_image.values()))}
        summary[name] = {"passes_every_image": all(passes(f) for f in per_image.values()), "worst": worst}
        print(f"guard {name:18s} passes: {summary[name]['passes_every_image']}, worst flipped {worst['flipped']:.4f}")
    return {"summary": summary, "per_image": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--guard", action="store_true", help="also the accuracy guard's figures of every path")
    args = parser.parse_args()
    hf, ours = full_size_pair()
    images = _images(16)
    paths = {"torch_float32": ours, "torch_int8": ours.with_precision("int8")}
    if native_bfloat16(torch.device("cpu")):
        paths["torch_bfloat16"] = ours.with_precision("bfloat16")
    with tempfile.TemporaryDirectory() as tmp:
        engines, loading = openvino_engines(ours, Path(tmp))
    paths |= {
        name: (ours if engine.precision == "float32" else ours.with_precision(engine.precision)).with_engine(engine)
        for name, engine in engines.items()
    }
    pixels = to_model_input(images[0])
    ids = tokenize(["a photo of a nucleus"])
    timed = {}
    counter = itertools.count()
    for name, model in paths.items():
        for case, fn in cases(model, images, counter).items():
            timed[f"{name}/{case}"] = fn
    timed |= {f"transformers/{case}": fn for case, fn in transformers_cases(hf, images[0]).items()}
    seconds = interleaved_medians(timed, args.repeats)
    vs = {"first_prompt_new_image": "one", "new_prompt_cached_image": "one", "eight_prompts_new_image": "eight"}
    table = {}
    for name in paths:
        row = {case: seconds[f"transformers/{hf_case}"] / seconds[f"{name}/{case}"] for case, hf_case in vs.items()}
        row["tiles_per_second"] = 4 / seconds[f"{name}/four_tiles"]
        row["tower_speedup_vs_torch_float32"] = seconds["torch_float32/four_tiles"] / seconds[f"{name}/four_tiles"]
        table[name] = row
    figures = {name: accuracy(ours, model, pixels, ids) for name, model in paths.items() if name != "torch_float32"}
    for name, row in table.items():
        print(
            f"{name:18s} first prompt {row['first_prompt_new_image']:5.2f}x  8 prompts "
            f"{row['eight_prompts_new_image']:5.2f}x  new prompt {row['new_prompt_cached_image']:5.1f}x  "
            f"tiles {row['tiles_per_second']:5.2f}/s ({row['tower_speedup_vs_torch_float32']:.2f}x torch float32)"
        )
    guard = guard_figures_of_paths() if args.guard else None
    import openvino

    os.environ["NAPARI_CLIPSEG_OPENVINO"] = "1"
    from napari_clipseg.precision.choice import auto_precision, engine_for, measured_speedups
    from napari_clipseg.precision.timing import _time_one_block

    cpu = torch.device("cpu")
    block = measured_speedups(cpu)  # the one-off timing "auto" decides by (remembered per machine)
    per_block_ms = _time_one_block(tuple(block))  # one vision block (485 tokens) on each path, again
    print("one vision block:", {k: round(v, 1) for k, v in per_block_ms.items()})
    chosen = {"precision": auto_precision(cpu), "block_speedups": block}
    chosen["engine"] = engine_for(chosen["precision"], cpu)
    print(f"auto here: {chosen['precision']} on {chosen['engine']} (timed block: {block})")
    write_results(
        "openvino",
        {
            "openvino": openvino.__version__,
            "ratios_vs_transformers_float32": table,
            "seconds": seconds,
            "relative_difference_from_torch_float32": figures,
            "loading": loading,
            "auto": chosen,
            "one_block_ms": per_block_ms,
            "guard": guard,
        },
    )


if __name__ == "__main__":
    main()
