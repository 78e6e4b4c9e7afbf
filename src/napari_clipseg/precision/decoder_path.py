"""Which kernel path runs the decoder's blocks fastest here: torch's fused fast path or op by op.

The decoder runs most often of all (every prompt, every re-prediction after a Learn, every tile of
a batch). Its three transformer blocks can run on torch's fused fast path or op by op
(:func:`~napari_clipseg.modeling.decoder.composite_block`, the same arithmetic). Which is faster
depends on the CPU *and* the activations: on the large values CLIPSeg's FiLM makes, the fused
kernel's softmax produces denormal numbers, which Intel CPUs run through slow microcode (issue 35,
a Xeon: 9.2 ms a block fused, 2.7 ms op by op), AMD's far less so. So both are timed once per
machine on the first activations a predictor decodes (the model's own), interleaved, and the
figures are kept beside the vision block's timing (``decoder-path.json``). The fused path is used
only where it ran :data:`MIN_GAIN` faster, so the chosen path is never slower than the composite
one; until timed (and wherever timing is impossible) the blocks run op by op.
"""

from __future__ import annotations

import logging
import time

import torch

from .measurements import remembered
from .timing import machine_key

logger = logging.getLogger(__name__)

#: How much faster the fused path must run before it is chosen (noise never picks it).
MIN_GAIN = 1.1
#: Timed decodes of each path (the fastest counts), after one untimed warm-up each.
REPEATS = 3

_chosen: dict[str, bool] = {}


def path_key(decoder: torch.nn.Module, device: torch.device, precision: str = "float32") -> str:
    """What the choice depends on: the machine (GPU, or CPU, torch and threads), the precision the
    blocks run at (autocast's) and their shape."""
    block = decoder.blocks[0]
    gpu = device.type == "cuda"
    where = f"{torch.cuda.get_device_name(device)} | torch {torch.__version__}" if gpu else machine_key(())
    return f"{where} | {precision} | decoder width {block.linear1.in_features}, {block.self_attn.num_heads} heads"


def choose_block_path(
    decoder: torch.nn.Module, reduced: list[torch.Tensor], conditional: torch.Tensor, grid: tuple[int, int]
) -> bool:
    """Set ``decoder.fused_blocks`` for this machine, timing both paths on these activations the
    first time (see the module docstring); returns it."""
    device = reduced[0].device
    autocast = torch.is_autocast_enabled(device.type)
    precision = str(torch.get_autocast_dtype(device.type)).removeprefix("torch.") if autocast else "float32"
    key = path_key(decoder, device, precision)
    if key not in _chosen:
        found = remembered(
            "decoder-path.json", key, lambda: time_block_paths(decoder, reduced, conditional, grid),
            ("fused_ms", "composite_ms"),
        )  # fmt: skip
        fused, composite = float(found.figures["fused_ms"]), float(found.figures["composite_ms"])
        _chosen[key] = fused * MIN_GAIN < composite
        logger.log(  # said when timed; a remembered choice is only logged for debugging
            logging.INFO if found.now else logging.DEBUG,
            "decoder blocks: %s here (a decode: fused %.1f ms, op by op %.1f ms)",
            "fused" if _chosen[key] else "op by op", fused, composite,
        )  # fmt: skip
    decoder.fused_blocks = _chosen[key]
    return decoder.fused_blocks


def time_block_paths(
    decoder: torch.nn.Module, reduced: list[torch.Tensor], conditional: torch.Tensor, grid: tuple[int, int]
) -> dict[str, float]:
    """Milliseconds of one decode on each path (``fused_ms``, ``composite_ms``), interleaved so a
    busy moment hits both."""
    times: dict[str, list[float]] = {"fused": [], "composite": []}
    before = decoder.fused_blocks
    sync = torch.cuda.synchronize if reduced[0].device.type == "cuda" else (lambda: None)  # time the work
    try:
        with torch.inference_mode():
            for repeat in range(REPEATS + 1):
                for name, spent in times.items():
                    decoder.fused_blocks = name == "fused"
                    sync()
                    start = time.perf_counter()
                    decoder.decode(reduced, conditional, grid)
                    sync()
                    if repeat:
                        spent.append((time.perf_counter() - start) * 1000)
    finally:
        decoder.fused_blocks = before
    return {f"{name}_ms": min(spent) for name, spent in times.items()}
