"""One row of image panels for the docs' pictures (the make_*_figure.py scripts share it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def save_panels(panels: list[tuple[str, Any, str, float | None]], name: str, size: tuple[float, float]) -> Path:
    """``(title, image, colour map, top of the scale)`` side by side, saved as docs/images/NAME."""
    fig, axes = plt.subplots(1, len(panels), figsize=size, dpi=100)
    for ax, (title, data, cmap, top) in zip(axes, panels, strict=True):
        ax.imshow(data, cmap=cmap, interpolation="nearest", vmin=0, vmax=top)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    out = Path(__file__).parent / "images" / name
    fig.savefig(out)
    print(out)
    return out
