"""The network and its weights: configs, open_clip towers, the decoder, key tables, loading and saving.

``clipseg.ClipSeg`` is the model; ``weights.load_model`` / ``build_model`` make one (each with a
typed ``info.ModelInfo``); ``config``, ``keymap``, ``hub`` and ``devices`` serve them.
"""

from .clipseg import ClipSeg, ImageFeatures
from .decoder import ClipSegDecoder
from .info import ModelInfo, WeightsInfo

__all__ = ["ClipSeg", "ClipSegDecoder", "ImageFeatures", "ModelInfo", "WeightsInfo"]
