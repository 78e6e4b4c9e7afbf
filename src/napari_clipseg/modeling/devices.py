"""Choosing a torch device and a reduced-precision dtype."""

from __future__ import annotations

import torch

#: Precision names (and aliases) -> canonical name; "float32" is the exact path.
PRECISIONS = {
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


def resolve_precision(precision: str | torch.dtype | None, device: torch.device) -> str:
    """Canonical precision name for ``precision`` on ``device`` (``None`` means ``"float32"``).

    Raises:
        ValueError: unknown precision, or float16 on the CPU (slow and inexact there; use bfloat16).
    """
    if precision is None or precision == torch.float32:
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
        raise ValueError("float16 is for GPUs; on the CPU use float32 or bfloat16")
    return name


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a canonical precision name (None for exact float32)."""
    return _TORCH_DTYPES[precision]
