"""Choosing how a model runs on this machine: CPU capability, a one-off timing, and what ``"auto"`` means.

Above :mod:`napari_clipseg.modeling` (whose models it times) and below the run; it never runs a
segmentation. The check of a chosen path on the loaded weights is run code
(:mod:`napari_clipseg.segmentation.precision_check`).
"""

from .choice import offered_precisions, resolve_precision

__all__ = ["offered_precisions", "resolve_precision"]
