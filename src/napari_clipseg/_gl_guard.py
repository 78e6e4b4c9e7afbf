"""Keep triton away from a process where Mesa's software OpenGL has loaded its LLVM.

Importing triton (pulled in by ``torch._dynamo``, which timm and open_clip import) after Mesa's
llvmpipe has loaded ``libLLVM`` segfaults the process: two LLVMs with clashing global state. That
is exactly what happens in napari on a machine without a GPU driver (remote desktops, VMs, CI):
napari draws first, the plugin imports torch later. When Mesa's LLVM is already mapped and triton
is not yet imported, we make ``import triton`` raise ImportError, which torch handles (it only
needs triton to compile GPU kernels, which this plugin never does).

Set ``NAPARI_CLIPSEG_ALLOW_TRITON=1`` to opt out.
"""

from __future__ import annotations

import logging
import os
import re
import sys

logger = logging.getLogger(__name__)

_LLVM = re.compile(r"/libLLVM[-\w.]*\.so")


def mesa_llvm_loaded(maps_path: str = "/proc/self/maps") -> bool:
    """Whether a ``libLLVM`` shared library is mapped into this process (Linux only)."""
    try:
        with open(maps_path) as f:
            return any(_LLVM.search(line) for line in f)
    except OSError:
        return False


def guard_triton() -> bool:
    """Block ``import triton`` if Mesa's LLVM is loaded and triton is not; True if it blocked it."""
    if "triton" in sys.modules or os.environ.get("NAPARI_CLIPSEG_ALLOW_TRITON") == "1":
        return False
    if not sys.platform.startswith("linux") or not mesa_llvm_loaded():
        return False
    sys.modules["triton"] = None  # `import triton` now raises ImportError instead of crashing
    logger.info("software OpenGL (Mesa LLVM) detected: triton disabled to avoid an LLVM clash")
    return True
