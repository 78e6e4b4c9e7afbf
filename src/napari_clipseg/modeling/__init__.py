"""CLIPSeg modules: open_clip towers, the decoder and the combined model."""

from .clipseg import ClipSeg, ImageFeatures
from .decoder import ClipSegDecoder

__all__ = ["ClipSeg", "ClipSegDecoder", "ImageFeatures"]
