"""How a model runs, as plain facts: which devices exist, the precision names, their autocast dtypes.

Nothing here chooses: :mod:`napari_clipseg.precision` decides what ``"auto"`` means on a machine
(capability, a one-off timing, the accuracy guard). A model's precision is one canonical name,
kept in ``ClipSeg.info.precision``: ``"float32"`` (exact), ``"int8"`` (int8 towers on the CPU),
``"bfloat16"`` or ``"float16"`` (autocast). Its weights stay float32 in every case.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..constants import PRECISIONS
from .int8 import quantized_engine

#: Autocast dtype per precision (None: the towers run in float32, or in int8 through their own copy).
_TORCH_DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": None}


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


def canonical_precision(precision: str | torch.dtype, device: torch.device) -> str:
    """The canonical name of an explicit precision, checked against ``device``.

    Raises:
        ValueError: ``"auto"`` (resolve it with ``napari_clipseg.precision.resolve_precision``),
            an unknown name, float16 on the CPU (slow and inexact there), int8 off the CPU or
            without an int8 engine.
    """
    if precision is None or precision == "auto":
        raise ValueError("precision 'auto' is a choice, not a precision: resolve it first (napari_clipseg.precision)")
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
        raise ValueError("float16 is for GPUs; on the CPU use auto, float32 or int8")
    if name == "int8" and device.type != "cpu":
        raise ValueError(f"int8 runs on the CPU only; on {device.type} use auto, float32 or a 16-bit precision")
    if name == "int8" and quantized_engine() is None:
        raise ValueError("this torch build has no int8 engine for this CPU; use auto or float32")
    return name


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a canonical precision name (None for exact float32)."""
    return _TORCH_DTYPES[precision]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (None: as configured), then restore the caller's."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
