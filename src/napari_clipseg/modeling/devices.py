"""Choosing a torch device and a precision: never a path that is emulated (and so slower) here.

``"auto"`` (the default) picks per device the fastest path that passed the accuracy guard of
:mod:`napari_clipseg.precision_guard` on this project's measurements (docs/performance.md):
today that is exact float32 on every device. bfloat16 passed the probability limit but not the
flipped-pixel limit on the full-size model (near-tied classes flip), and the GPU paths are not
measured yet (``benchmarks/gpu_check.py``). An explicit reduced precision that this machine
would emulate is allowed but warned about, with the cost measured on such a CPU.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: What emulated bfloat16 cost on a CPU without native bfloat16 (AMD EPYC, AVX2 only, 2 threads:
#: first prompt on a new image, bench_predictor.py; issue #14).
EMULATED_BF16_SLOWDOWN = 5.8

#: Precision names (and aliases) -> canonical name; "float32" is the exact path.
PRECISIONS = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
_TORCH_DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def available_devices() -> list[str]:
    """Device names usable here, best first (always ends with ``"cpu"``)."""
    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; other names are checked for availability.

    Raises:
        ValueError: the named device is not available on this machine.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device(available_devices()[0])
    kind = device.split(":")[0]
    if kind in ("cuda", "mps") and kind not in available_devices():
        raise ValueError(f"device '{device}' is not available here; use one of {available_devices()} or 'auto'")
    return torch.device(device)


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively on ``device`` (not emulated in float32):
    CUDA with bfloat16 support, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()  # oneDNN told to use less than the CPU has
        if limit and limit != "ALL" and "BF16" not in limit and "AMX" not in limit:
            return False
        return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return False


def offered_precisions(device: torch.device) -> list[str]:
    """The precisions worth offering on ``device`` (a GUI lists these): never an emulated one."""
    offered = ["auto", "float32"]
    if native_bfloat16(device):
        offered.append("bfloat16")
    if device.type in ("cuda", "mps"):
        offered.append("float16")
    return offered


def auto_precision(device: torch.device) -> str:
    """What ``"auto"`` stands for on ``device`` (see the module docstring): float32 until a faster
    path passes the accuracy guard there."""
    return "float32"


def resolve_precision(precision: str | torch.dtype | None, device: torch.device) -> str:
    """Canonical precision name for ``precision`` on ``device`` (``None`` and ``"auto"``: :func:`auto_precision`).

    An explicit bfloat16 on a device without native bfloat16 is logged as a warning with its cost.

    Raises:
        ValueError: unknown precision, or float16 on the CPU (slow and inexact there).
    """
    if precision is None or precision == "auto":
        return auto_precision(device)
    if precision == torch.float32:
        return "float32"
    if isinstance(precision, torch.dtype):
        names = {v: k for k, v in _TORCH_DTYPES.items() if v is not None}
        if precision not in names:
            raise ValueError(f"precision must be float32, float16 or bfloat16; got {precision}")
        precision = names[precision]
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {sorted(PRECISIONS)}")
    name = PRECISIONS[precision]
    if name == "float16" and device.type == "cpu":
        raise ValueError("float16 is for GPUs; on the CPU use auto or float32")
    if name == "bfloat16" and not native_bfloat16(device):
        logger.warning(
            "bfloat16 is emulated on this %s (no native bfloat16): it ran %.1fx slower than float32 on such a "
            "CPU; use precision 'auto' or 'float32'",
            device.type,
            EMULATED_BF16_SLOWDOWN,
        )
    return name


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a canonical precision name (None for exact float32)."""
    return _TORCH_DTYPES[precision]
