"""Which precision is fastest on this machine: one timed vision block, once per machine.

Capability flags say what *can* run (an int8 engine, native bfloat16), not what is faster: the
int8 kernels of an old CPU, or a busy memory bus, can lose to float32. So one full-size ViT-B/16
vision block (the towers' unit of work, on a 352-px image's 485 tokens) is timed at each
candidate precision, about a second in all, and the result is remembered in the user's cache
folder per CPU, torch version and thread count; later sessions only read it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import threading
import time

import torch
from torch import nn

from ..errors import check_stop
from .cpu import cpu_name
from .measurements import remembered

logger = logging.getLogger(__name__)


_speedups: dict[str, dict[str, float]] = {}


def machine_key(candidates: tuple[str, ...]) -> str:
    isa = torch.backends.cpu.get_cpu_capability()  # FBGEMM_ENABLE_INSTRUCTIONS: set to simulate a smaller CPU
    isa += f" {os.environ['FBGEMM_ENABLE_INSTRUCTIONS']}" if os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS") else ""
    threads, paths = torch.get_num_threads(), ",".join(candidates)
    if any(name.startswith("openvino") for name in candidates):
        from ..modeling.openvino_engine import version

        paths += f" {version()}"
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
    for name, precision in (("openvino", "float32"), ("openvino_bfloat16", "bfloat16")):
        if name in candidates:
            runs[name] = (_openvino_block(block, x, precision, stop), None)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(2):  # interleaved, so a busy moment hits all of them
        for name, (module, dtype) in runs.items():
            times[name].append(_median_ms(module, x, dtype, stop=stop))
    return {f"{name}_ms": min(ts) for name, ts in times.items()}


def _openvino_block(block: nn.Module, x: torch.Tensor, precision: str, stop: threading.Event | None) -> nn.Module:
    """``block`` compiled by OpenVINO at ``precision``, callable like the block (for :func:`_median_ms`)."""
    import openvino as ov

    from ..modeling.openvino_engine import compile_config

    check_stop(stop)
    with torch.no_grad():
        converted = ov.convert_model(torch.export.export(block, (x,)))
    compiled = ov.Core().compile_model(converted, "CPU", compile_config(precision, torch.get_num_threads()))
    return lambda tokens: compiled(tokens.numpy())


def speedups(
    candidates: tuple[str, ...], measure: bool = True, stop: threading.Event | None = None
) -> dict[str, float] | None:
    """How many times faster than float32 a vision block runs at each candidate precision here
    (``("int8",)``, ``("int8", "bfloat16")``); None when not measured yet and ``measure`` is False."""
    key = machine_key(candidates)
    if key not in _speedups:
        required = [f"{name}_ms" for name in ("float32", *candidates)]
        found = remembered("cpu-speed.json", key, lambda: _time_one_block(candidates, stop), required, measure)
        if found is None:
            return None
        timed = found.figures
        exact = float(timed["float32_ms"])
        _speedups[key] = {name: exact / max(float(timed[f"{name}_ms"]), 1e-9) for name in candidates}
    return _speedups[key]
