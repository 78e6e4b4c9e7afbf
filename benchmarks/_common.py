"""Helpers shared by the benchmarks: timing, a full-size random model pair, result output."""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from napari_clipseg.modeling.cpu import cpu_name

RESULTS = Path(__file__).parent / "results"


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each function, run round-robin so machine drift hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def full_size_pair(seed: int = 0):
    """(transformers model, our model) with the same random rd64-refined weights, both in eval mode."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    import napari_clipseg as ncs

    torch.manual_seed(seed)
    hf = CLIPSegForImageSegmentation(
        CLIPSegConfig(vision_config={"patch_size": 16}, use_complex_transposed_convolution=True)
    ).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = ncs.load_model(tmp)
    return hf, ours


def write_results(name: str, results: dict) -> Path:
    """Print results as a table and write them (with machine facts) to benchmarks/results/NAME.json."""
    RESULTS.mkdir(exist_ok=True)
    record = {
        "benchmark": name,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processor": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        **results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    return path
