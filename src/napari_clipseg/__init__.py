"""napari-clipseg: CLIPSeg (text- and image-prompted segmentation) for napari and notebooks.

The package root exposes the Qt-free core only; importing it does not import napari, Qt,
magicgui or even torch until a name that needs torch is used.

>>> import napari_clipseg as ncs
>>> model = ncs.load_model()  # CIDAS/clipseg-rd64-refined
>>> labels = ncs.segment(image, ["nucleus", "membrane"], model=model)
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from ._gl_guard import guard_triton

# Before anything imports torch: see _gl_guard (napari on software OpenGL would segfault).
guard_triton()

try:
    __version__ = version("napari-clipseg")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "load_model": "weights",
    "build_model": "weights",
    "save_pretrained": "weights",
    "WeightsError": "errors",
    "WeightsUnavailableError": "errors",
    "CorruptWeightsError": "errors",
    "UnsafeWeightsError": "errors",
    "ArchitectureMismatchError": "errors",
    "ClipSeg": "modeling",
    "ClipSegConfig": "config",
    "ClipSegPredictor": "predictor",
    "segment": "pipeline",
    "iter_segment": "pipeline",
    "run": "pipeline",
    "Progress": "pipeline",
    "SegmentationResult": "pipeline",
    "labels_from_probabilities": "postprocess",
    "VisualPrompt": "visual",
    "engineer_visual_prompt": "visual",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    # Lazy exports: torch and open_clip load on first use, which keeps `import napari_clipseg`
    # (done by napari when it reads the plugin manifest) fast and free of GPU/GL side effects.
    if name in _EXPORTS:
        guard_triton()  # napari may have drawn (and loaded Mesa's LLVM) since this package was imported
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
