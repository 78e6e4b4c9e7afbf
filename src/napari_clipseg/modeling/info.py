"""Where a model's weights came from and how it runs: one typed record carried by every model.

``build_model`` and ``load_model`` both give a :class:`~napari_clipseg.modeling.ClipSeg` whose
``info`` is a :class:`ModelInfo`; records and the predictor read it there and nowhere else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

#: Kinds of weight sources (see ``weights.load_model``).
WEIGHT_KINDS = ("hub", "hf-directory", "hf-file", "original", "random")


def file_sha256(path: str, stop: Any = None) -> str:
    """SHA-256 of a file, read in 4 MiB chunks (``stop``, a set ``threading.Event``, ends it between two)."""
    from ..errors import check_stop

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            check_stop(stop)
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class WeightsInfo:
    """The source of a model's weights.

    Attributes:
        source: What the user passed (hub id, folder, file), or ``random:<config>`` for a built model.
        kind: One of :data:`WEIGHT_KINDS`.
        files: The weight files read, in order (empty for random weights).
        seed: The seed of random weights (None when not seeded or not random).
    """

    source: str
    kind: str
    files: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in WEIGHT_KINDS:
            raise ValueError(f"unknown weights kind {self.kind!r}; one of {WEIGHT_KINDS}")

    @property
    def sha256(self) -> str | None:
        """SHA-256 over the weight files (a single file's own SHA-256); None for random weights."""
        return self.digest()

    def digest(self, stop: Any = None) -> str | None:
        """:attr:`sha256`, computed on first use and kept (``stop`` ends the hashing between chunks)."""
        if "_sha256" not in self.__dict__:
            if not self.files:
                return None
            digests = [file_sha256(f, stop) for f in self.files]
            joined = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
            self.__dict__["_sha256"] = joined  # a frozen dataclass: kept beside its fields
        return self.__dict__["_sha256"]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "files": list(self.files), "sha256": self.sha256}


@dataclass(frozen=True)
class ModelInfo:
    """What a model is and how the predictor runs it.

    Attributes:
        weights: Where the weights came from.
        precision: ``"float32"`` (exact), ``"int8"`` (int8 towers on the CPU), ``"bfloat16"`` or
            ``"float16"`` (the autocast dtype the predictor runs under). The model's weights stay
            float32 in every case.
        decoder: A fine-tuned decoder applied over the weights (its ``name``, ``path`` and
            ``sha256``; see :mod:`napari_clipseg.modeling.decoder_files`), or None.
        checked: For a precision ``"auto"`` chose: whether its accuracy check on these weights
            ran ``"now"`` or was ``"remembered"`` from an earlier run on this machine; None otherwise.
        engine: What runs the vision tower: ``"torch"``, or ``"openvino"`` (at float32 the same
            taps within float32 rounding; at bfloat16 under the same guard as torch's;
            :mod:`napari_clipseg.modeling.openvino_engine`).
    """

    weights: WeightsInfo = field(default_factory=lambda: WeightsInfo("random", "random"))
    precision: str = "float32"
    decoder: dict[str, Any] | None = None
    checked: str | None = None
    engine: str = "torch"

    def to_dict(self) -> dict[str, Any]:
        extra = {"decoder": dict(self.decoder)} if self.decoder else {}
        extra |= {"precision_checked": self.checked} if self.checked else {}
        extra |= {"engine": self.engine} if self.engine != "torch" else {}
        return {**self.weights.to_dict(), "precision": self.precision, **extra}
