"""The project-level fields of ``project.json``, typed: what the folder's files cannot say.

:class:`Manifest` is frozen; only :class:`~.state.ProjectState`'s transactions make a new one.
The threshold has one owner per decoder: the base model's is the options' threshold, each learnt
decoder's is in its :class:`DecoderRecord` (chosen on its held-out images), so a pre-label is
always shown, written and scored at the threshold of the decoder that made it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

Threshold = float | tuple[float, ...]


def as_threshold(value: Any) -> Threshold | None:
    """A threshold as JSON gives it (a number or a list) in its typed form."""
    if value is None:
        return None
    return tuple(float(v) for v in value) if isinstance(value, list | tuple) else float(value)


def _json_threshold(value: Threshold | None) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class DecoderRecord:
    """A decoder a project learnt: its folder (``decoders/NNN``), the images it learnt from, its
    held-out IoU and that of the decoder it replaced, the images held out, its threshold, and
    whether a pixel refiner is kept with it (then its maps are the refiner's, at 0.5)."""

    folder: str
    images: tuple[str, ...] = ()
    iou: float | None = None
    base_iou: float | None = None
    held_out: tuple[str, ...] = ()
    threshold: Threshold | None = None
    refiner: bool = False

    @property
    def name(self) -> str:
        """``001`` for ``decoders/001`` (the name records and the command line use)."""
        return self.folder.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "images": list(self.images),
            "iou": self.iou,
            "base_iou": self.base_iou,
            "held_out": list(self.held_out),
            "threshold": _json_threshold(self.threshold),
            "refiner": self.refiner,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderRecord:
        number = lambda v: float(v) if isinstance(v, int | float) else None  # noqa: E731
        return cls(
            folder=str(data["folder"]),
            images=tuple(str(n) for n in data.get("images") or ()),
            iou=number(data.get("iou")),
            base_iou=number(data.get("base_iou")),
            held_out=tuple(str(n) for n in data.get("held_out") or ()),
            threshold=as_threshold(data.get("threshold")),
            refiner=bool(data.get("refiner", False)),
        )


@dataclass(frozen=True)
class Manifest:
    """What a project was made with, and what its loop decided (see the module docstring).

    Attributes:
        prompts, model, options: As described at creation (checked again at every open).
        created: When the project was made (ISO 8601).
        decoders: Every decoder learnt, oldest first.
        decoder: The folder of the decoder in use (None: the base model's).
        learnt_at: When the last Learn ran (ns, the verified records' clock): images verified
            later are new to the next Learn.
        dropped: Names taken out for good (never added again).
        store_bytes: The feature store's budget (None: the default).
        learns: The learning log: one entry per Learn, kept or refused (when, how many images
            were verified, the held-out IoU before and after, seconds, the version kept).
        base_threshold: The base model's threshold as the annotator set it (None: the options').
    """

    prompts: list[Any]
    model: dict[str, Any]
    options: dict[str, Any]
    created: str | None = None
    decoders: tuple[DecoderRecord, ...] = ()
    decoder: str | None = None
    learnt_at: int = 0
    dropped: tuple[str, ...] = ()
    store_bytes: int | None = None
    learns: tuple[dict[str, Any], ...] = ()
    base_threshold: Threshold | None = None

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)

    def record(self, decoder: str | None) -> DecoderRecord | None:
        """The record of the decoder named ``decoder`` (``001`` or ``decoders/001``); None for the base's."""
        if decoder is None:
            return None
        return next((d for d in self.decoders if decoder in (d.folder, d.name)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "prompts": self.prompts,
            "model": self.model,
            "options": self.options,
            "decoders": [d.to_dict() for d in self.decoders],
            "decoder": self.decoder,
            "learnt_at": self.learnt_at or None,
            "dropped": list(self.dropped),
            "store_bytes": self.store_bytes,
            "learns": list(self.learns),
            "base_threshold": self.base_threshold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """The manifest of a checked ``project.json`` (:func:`~.folder.check_manifest`), schema 1 or 2.

        Before each decoder kept its threshold, one project-level ``threshold`` was the current
        decoder's: it is given to that decoder's record here (the base's, when none was in use)."""
        decoders = tuple(DecoderRecord.from_dict(d) for d in data.get("decoders") or ())
        current = data.get("decoder")
        legacy = as_threshold(data.get("threshold"))
        if legacy is not None and current:
            decoders = tuple(
                dataclasses.replace(d, threshold=legacy) if d.folder == current and d.threshold is None else d
                for d in decoders
            )
        return cls(
            prompts=list(data["prompts"]),
            model=dict(data["model"]),
            options=dict(data["options"]),
            created=data.get("created"),
            decoders=decoders,
            decoder=current if isinstance(current, str) and current else None,
            learnt_at=int(data.get("learnt_at") or 0),
            dropped=tuple(str(n) for n in data.get("dropped") or ()),
            store_bytes=data.get("store_bytes"),
            learns=tuple(e for e in data.get("learns") or () if isinstance(e, dict)),
            base_threshold=as_threshold(data.get("base_threshold")) or (None if current else legacy),
        )
