"""What this CPU is: its model name and its feature flags (for precision choices, and to name the
CPU in every speed measurement)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line of Linux's /proc/cpuinfo (None elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model as lscpu and /proc/cpuinfo name it."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    return frozenset((_cpuinfo("flags") or "").split())
