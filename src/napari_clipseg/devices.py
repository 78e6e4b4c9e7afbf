"""Choosing a torch device and a reduced-precision dtype."""

from __future__ import annotations

import torch

_DTYPES = {
    "float32": None,
    "fp32": None,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


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


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``dtype`` on ``device`` (``None`` means full float32).

    Raises:
        ValueError: unknown dtype, or float16 on the CPU (slow and inexact there; use bfloat16).
    """
    if dtype is None or dtype == torch.float32:
        return None
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown precision {dtype!r}; use one of {sorted(_DTYPES)}")
        dtype = _DTYPES[dtype]
        if dtype is None:
            return None
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"precision must be float32, float16 or bfloat16; got {dtype}")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("float16 is for GPUs; on the CPU use float32 or bfloat16")
    return dtype
