"""Which precision is fastest on this machine: one timed vision block, once per machine.

Capability flags say what *can* run (an int8 engine, native bfloat16), not what is faster: the
int8 kernels of an old CPU, or a busy memory bus, can lose to float32. So one full-size ViT-B/16
vision block (the towers' unit of work, on a 352-px image's 485 tokens) is timed at each
candidate precision, about a second in all, and the result is remembered in the user's cache
folder per CPU, torch version and thread count; later sessions only read it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import check_stop
from .cpu import cpu_name

logger = logging.getLogger(__name__)

#: Where the measurement is kept (``$NAPARI_CLIPSEG_CACHE_DIR`` overrides the user cache folder).
CACHE_ENV = "NAPARI_CLIPSEG_CACHE_DIR"

_speedups: dict[str, dict[str, float]] = {}


def _cache_file(name: str) -> Path:
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        from platformdirs import user_cache_dir

        folder = user_cache_dir("napari-clipseg")
    return Path(folder) / name


def machine_key(candidates: tuple[str, ...]) -> str:
    isa = torch.backends.cpu.get_cpu_capability()  # FBGEMM_ENABLE_INSTRUCTIONS: set to simulate a smaller CPU
    isa += f" {os.environ['FBGEMM_ENABLE_INSTRUCTIONS']}" if os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS") else ""
    threads, paths = torch.get_num_threads(), ",".join(candidates)
    return f"{cpu_name()} | {isa} | torch {torch.__version__} | {threads} threads | {paths}"


def _median_ms(
    block: nn.Module, x: torch.Tensor, dtype: torch.dtype | None, repeats: int = 5, stop: threading.Event | None = None
) -> float:
    autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        block(x)
        times = []
        for _ in range(repeats):
            check_stop(stop)
            start = time.perf_counter()
            block(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _time_one_block(candidates: tuple[str, ...], stop: threading.Event | None = None) -> dict[str, float]:
    """Milliseconds of one ViT-B/16 vision block at float32 and at each candidate precision
    (``stop``, set from another thread, ends it between two runs of the block)."""
    from open_clip.transformer import ResidualAttentionBlock

    from ..modeling.int8 import quantize_towers

    generator = torch.Generator().manual_seed(0)
    block = ResidualAttentionBlock(768, 12, mlp_ratio=4.0).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    runs = {"float32": (block, None)}
    if "int8" in candidates:
        runs["int8"] = (quantize_towers(nn.Sequential(block), stop)[0], None)
    if "bfloat16" in candidates:
        runs["bfloat16"] = (block, torch.bfloat16)
    x = torch.randn(1, 1 + 22 * 22, 768, generator=generator)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(2):  # interleaved, so a busy moment hits all of them
        for name, (module, dtype) in runs.items():
            times[name].append(_median_ms(module, x, dtype, stop=stop))
    return {f"{name}_ms": min(ts) for name, ts in times.items()}


def speedups(
    candidates: tuple[str, ...], measure: bool = True, stop: threading.Event | None = None
) -> dict[str, float] | None:
    """How many times faster than float32 a vision block runs at each candidate precision here
    (``("int8",)``, ``("int8", "bfloat16")``); None when not measured yet and ``measure`` is False."""
    key = machine_key(candidates)
    if key not in _speedups:
        timed = remembered("cpu-speed.json", key, lambda: _time_one_block(candidates, stop), measure)
        if timed is None:
            return None
        exact = float(timed["float32_ms"])
        _speedups[key] = {name: exact / max(float(timed[f"{name}_ms"]), 1e-9) for name in candidates}
    return _speedups[key]


def remembered(
    name: str, key: str, compute: Callable[[], dict[str, float]], measure: bool = True
) -> dict[str, float] | None:
    """``compute()``'s figures for ``key``, computed once and kept in the JSON file ``name`` of the
    user's cache folder (None when unknown and ``measure`` is False). A damaged file counts as
    empty; one that cannot be written only means computing again next session."""
    path = _cache_file(name)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    if not isinstance(known.get(key), dict):
        if not measure:
            return None
        known[key] = compute()
        logger.info("measured on this machine (%s): %s", name, json.dumps(known[key]))
        _remember(path, known)
    return known[key]


def _remember(path: Path, known: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")  # whole or not at all, also with several workers
        partial.write_text(json.dumps(known, indent=1))
        os.replace(partial, path)
    except OSError as error:  # a read-only home: measure again next session
        logger.warning("could not remember a measurement in %s: %s", path, error)
