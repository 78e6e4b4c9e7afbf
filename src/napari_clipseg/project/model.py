"""The model a project runs: its base weights loaded once, the current decoder over them, one store of taps.

The towers never change inside a project (only the decoder learns, and never its input
projections), so every predictor made here shares the project's
:class:`~napari_clipseg.learning.feature_store.FeatureStore`: pre-labelling fills it, and
re-predicting after a Learn, or learning itself, reads it instead of running the image tower.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..learning.feature_store import FeatureStore
    from ..modeling.clipseg import ClipSeg
    from ..segmentation.model_spec import ModelSpec
    from ..segmentation.predictor import ClipSegPredictor


class ProjectModel:
    """Loads the base model on first use and applies a project decoder over a copy of its decoder.

    Args:
        spec: The base model (source, backbone, starting decoder, device, precision).
        features: The project's feature folder.
        budget: Bytes the feature store may hold (None: the default).
        stop: The project's stop flag (a Cancel during loading or encoding).
    """

    def __init__(self, spec: ModelSpec, features: Path, budget: int | None, stop: threading.Event) -> None:
        self.spec, self.features, self.budget, self.stop = spec, features, budget, stop
        #: ``loader(spec, stop)`` loads the base model; a GUI sets one that shares the model it
        #: already holds (the dock's Segment mode), so one model serves both.
        self.loader: Callable[[ModelSpec, threading.Event], ClipSeg] | None = None
        self._lock = threading.RLock()
        self._base: ClipSeg | None = None
        self._store: FeatureStore | None = None
        self._tuned: tuple[str, ClipSeg] | None = None

    @property
    def loaded(self) -> bool:
        return self._base is not None

    def base(self) -> ClipSeg:
        with self._lock:
            if self._base is None:
                load = self.loader or (lambda spec, stop: spec.load(stop=stop))
                self._base = load(self.spec, self.stop)
            return self._base

    def store(self) -> FeatureStore:
        from ..learning.feature_store import FeatureStore

        with self._lock:
            if self._store is None:
                self._store = FeatureStore(self.features, self.base(), budget=self.budget)
            return self._store

    def with_decoder(self, decoder: Path | None) -> ClipSeg:
        """The base model, or a copy of it with the decoder in ``decoder`` (kept until another is asked for)."""
        base = self.base()
        if decoder is None:
            return base
        with self._lock:
            if self._tuned is None or self._tuned[0] != str(decoder):
                from ..segmentation.model_spec import with_decoder_folder

                self._tuned = (str(decoder), with_decoder_folder(base, decoder))
            return self._tuned[1]

    def spec_with(self, decoder: Path | None) -> ModelSpec:
        """The base model with the decoder in ``decoder`` (what cluster workers load)."""
        return self.spec.replace(decoder=str(decoder)) if decoder is not None else self.spec

    def predictor(self, decoder: Path | None) -> ClipSegPredictor:
        """A predictor of the model with ``decoder`` that reads and fills the project's store."""
        from ..segmentation.predictor import ClipSegPredictor

        predictor = ClipSegPredictor(self.with_decoder(decoder), cache_bytes=0, store=self.store())
        predictor.stop = self.stop
        return predictor

    def forget(self) -> None:
        """Drop what is loaded (closing the project)."""
        with self._lock:
            self._base = self._store = self._tuned = None
