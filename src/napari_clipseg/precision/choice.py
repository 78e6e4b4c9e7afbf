"""Choosing a torch device and a precision: never a path that is emulated, or slower, here.

``"auto"`` (the default) picks per device the fastest path that passed the accuracy guard of
:mod:`napari_clipseg.segmentation.guard` in this project's measurements (:data:`GUARD_PASSED`,
docs/performance.md) *and* is faster on this machine:

* CPU: the candidates are ``"int8"`` (:mod:`.int8`, where torch has an int8 engine for the CPU)
  and ``"bfloat16"`` (only with native AVX512-BF16 or AMX; elsewhere it is emulated, several times
  slower). One vision block is timed at each (:mod:`.speed`, once per machine); the fastest that
  beats float32 by :data:`MIN_SPEEDUP` wins, otherwise exact float32.
* GPU: float32, until ``benchmarks/gpu_check.py`` has measured float16/bfloat16 there.

A precision's vision tower may run on another *engine*: OpenVINO (:data:`ENGINES`, where
installed), at float32 (its taps equal torch's within float32 rounding) and, with native
bfloat16, at bfloat16. Each is timed with the same block and runs its precision wherever it is
:data:`MIN_SPEEDUP` faster than torch at that precision (:func:`engine_for`). A precision's speed
is its fastest engine's, and an approximate path is chosen only if it beats the fastest *exact*
one by :data:`MIN_SPEEDUP` too, so ``"auto"`` is never slower than the exact path.

``load_model`` then checks the chosen approximate path on the loaded weights themselves
(:mod:`.model_check`) and falls back to float32 if it breaks the guard there.

An explicit choice that is slower here is allowed but warned about, with its cost.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from ..modeling.int8 import quantized_engine
from ..modeling.runtime import canonical_precision
from .cpu import cpu_flags
from .timing import speedups

logger = logging.getLogger(__name__)

#: What emulated bfloat16 cost on a CPU without native bfloat16 (AMD EPYC, AVX2 only, 2 threads:
#: first prompt on a new image, bench_predictor.py; issue #14).
EMULATED_BF16_SLOWDOWN = 5.8

#: Approximate paths "auto" may consider (each passed the accuracy guard, guard.LIMITS, on the
#: in-domain images of benchmarks/bench_predictor.py on an AMD EPYC, natively and held to AVX2).
#: Passing there is not enough: on the out-of-domain photos of today's guard model int8 flips
#: 0.85-1.09 % of pixels and bfloat16 0.34-0.50 % (docs/performance.md), and a Xeon flipped 1.08 %
#: in int8 (issue 35). So ``load_model`` checks the picked path on the loaded weights, on the machine
#: that runs them (:mod:`napari_clipseg.segmentation.precision_check`), and runs float32 where it fails.
GUARD_PASSED = frozenset({"int8", "bfloat16"})

#: Timed candidates that are another engine for a precision (not precisions themselves).
ENGINES = {"openvino": "float32", "openvino_bfloat16": "bfloat16"}

#: How much faster than float32 a timed vision block must run before "auto" picks that path, so
#: that noise in the one-off timing can never make "auto" slower than exact float32.
MIN_SPEEDUP = 1.2


def native_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively on ``device`` (not emulated in float32):
    CUDA with bfloat16 support, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()  # oneDNN told to use less than the CPU has
        if limit and limit != "ALL" and "BF16" not in limit and "AMX" not in limit:
            return False
        return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return False


def cpu_candidates(device: torch.device) -> tuple[str, ...]:
    """The approximate paths that can run natively on ``device`` if it is a CPU, and the exact
    engines installed here (see the module docstring)."""
    if device.type != "cpu":
        return ()
    from ..modeling import openvino_engine

    native = native_bfloat16(device)
    openvino = openvino_engine.available()
    paths = (("int8", quantized_engine()), ("bfloat16", native), ("openvino", openvino))
    return tuple(name for name, ok in (*paths, ("openvino_bfloat16", openvino and native)) if ok)


def engine_for(precision: str, device: torch.device, measure: bool = True) -> str:
    """What runs ``precision``'s vision tower on ``device``: ``"openvino"`` where installed and
    timed at least :data:`MIN_SPEEDUP` faster than torch at that precision here, else ``"torch"``."""
    if not any(p == precision and n in cpu_candidates(device) for n, p in ENGINES.items()):
        return "torch"
    return _engine_in(measured_speedups(device, measure) or {}, precision)


def _engine_in(timed: dict[str, float], precision: str) -> str:
    """:func:`engine_for` from the block timings ``timed`` (speed-ups over torch float32)."""
    name = next((n for n, p in ENGINES.items() if p == precision), None)
    if name is None or name not in timed:
        return "torch"
    torch_speed = 1.0 if precision == "float32" else timed.get(precision, 0.0)
    return "openvino" if timed[name] >= MIN_SPEEDUP * max(torch_speed, 1e-9) else "torch"


def path_speedups(timed: dict[str, float]) -> dict[str, float]:
    """Each precision's speed-up over torch float32 on its fastest engine (``timed``: the block timings)."""
    speeds = {"float32": 1.0, **{k: v for k, v in timed.items() if k not in ENGINES}}
    for name, precision in ENGINES.items():
        if precision in speeds and _engine_in(timed, precision) == "openvino":
            speeds[precision] = timed[name]
    return speeds


def measured_speedups(device: torch.device, measure: bool = True, stop: Any = None) -> dict[str, float] | None:
    """Speed-up over float32 of each CPU candidate path, timed once per machine (:mod:`.timing`;
    ``stop`` ends the timing early); None when not timed yet and ``measure`` is False; empty off
    the CPU or without candidates."""
    candidates = cpu_candidates(device)
    return speedups(candidates, measure, stop) if candidates else {}


def is_faster(precision: str, device: torch.device, measure: bool = True) -> bool:
    """Whether ``precision`` runs clearly faster than float32 on this CPU. Without ``measure``, a
    machine not timed yet counts as faster (loading the model times it, and warns if it is not)."""
    found = measured_speedups(device, measure)
    if found is None:
        return precision in cpu_candidates(device)
    return path_speedups(found).get(precision, 0.0) >= MIN_SPEEDUP


def offered_precisions(device: torch.device, measure: bool = True) -> list[str]:
    """The precisions worth offering on ``device`` (a GUI lists these): never one that is emulated
    or slower than float32 here. ``measure=False`` never runs the one-off timing."""
    offered = ["auto", "float32"]
    if device.type == "cpu":
        offered += [name for name in cpu_candidates(device) if name not in ENGINES and is_faster(name, device, measure)]
    else:
        offered += ["bfloat16"] if native_bfloat16(device) else []
        offered += ["float16"]
    return offered


def auto_precision(device: torch.device, stop: Any = None) -> str:
    """What ``"auto"`` stands for on ``device`` (see the module docstring)."""
    speeds = path_speedups(measured_speedups(device, stop=stop) or {})
    exact = speeds["float32"]
    found = {k: v for k, v in speeds.items() if k in GUARD_PASSED and v >= MIN_SPEEDUP * max(exact, 1.0)}
    return max(found, key=found.get) if found else "float32"


def why_exact(device: torch.device) -> str:
    """In words, why ``"auto"`` runs float32 on ``device`` (for the log line of a load)."""
    if device.type != "cpu":
        return f"the faster paths on {device.type} have not been measured against the guard"
    timed = measured_speedups(device, measure=False)
    if not timed:
        return "this CPU and torch have no int8 engine and no native bfloat16"
    figures = ", ".join(f"{name} {value:.2f}x" for name, value in timed.items())
    engine = engine_for("float32", device, measure=False)
    exact = "float32" if engine == "torch" else f"float32 on {engine}"
    return f"no approximate path ran {MIN_SPEEDUP}x faster than {exact} in a timed vision block on this CPU ({figures})"


def resolve_precision(precision: str | torch.dtype | None, device: torch.device, stop: Any = None) -> str:
    """Canonical precision name for ``precision`` on ``device`` (``None`` and ``"auto"``: :func:`auto_precision`).

    An explicit bfloat16 without native bfloat16, or a CPU path timed slower than float32 here, is
    logged as a warning with its cost.

    Raises:
        ValueError: see :func:`napari_clipseg.modeling.runtime.canonical_precision`.
    """
    if precision is None or precision == "auto":
        return auto_precision(device, stop)
    name = canonical_precision(precision, device)
    if name == "bfloat16" and not native_bfloat16(device):
        logger.warning(
            "bfloat16 is emulated on this %s (no native bfloat16): it ran %.1fx slower than float32 on such a "
            "CPU; use precision 'auto' or 'float32'",
            device.type,
            EMULATED_BF16_SLOWDOWN,
        )
    elif name in cpu_candidates(device) and not is_faster(name, device):
        logger.warning(
            "%s is not faster than float32 on this CPU (a timed vision block: %.2fx); use precision 'auto' or "
            "'float32'",
            name,
            path_speedups(measured_speedups(device))[name],
        )
    return name
