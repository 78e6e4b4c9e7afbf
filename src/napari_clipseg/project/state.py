"""A project's state: the typed manifest and one frozen entry per image, with the only writer of both.

The folder is the truth (:mod:`.folder`); this is its index, so that no click reads every record.
:func:`load_state` (:mod:`.reconcile`) builds it once, at open. After that, only
:class:`ProjectState`'s transactions change it (take a pre-label, commit a verify, commit a Learn,
use a decoder, skip, drop, settle an image's file), each under the state's lock and persisted
(``project.json``, written atomically and flushed) before it returns; taking pre-labels in, one per
image of a long pre-labelling job, is persisted every few seconds instead (the folder stays the
truth in between). A read-only state persists nothing and changes no file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..segmentation.refiner import THRESHOLD as REFINED_THRESHOLD  # a refined map's (calibrated)
from .folder import STATES, ProjectFolder
from .manifest import DecoderRecord, Manifest, Threshold
from .pins import Pin

#: Seconds between two writes of the manifest while pre-labels are taken in.
SAVE_EVERY = 5.0


@dataclass(frozen=True)
class ImageEntry:
    """One image of a project.

    Attributes:
        name: Its name in the project (its output folders are named so).
        path: The image file (or zarr folder).
        state: One of :data:`~.folder.STATES`.
        skipped: Left out by the annotator (until it is verified).
        generation: How many pre-labels were taken in for it (0: none yet); a re-prediction makes
            a new generation.
        decoder: The name of the project decoder that made its current pre-label (None: the base's).
        score: Its review score (:mod:`.score`), at the threshold of ``decoder``; None when unknown.
        prelabel_stamp: Modification time (ns) of its pre-label's record when it was taken in.
        verified_at: Modification time (ns) of its verified record (verified images).
        changed: Pixels the annotator changed (verified images).
        source: What the image file held when its first pre-label was taken in (:mod:`.pins`).
        relative: Its path relative to the project folder (found there when both moved together).
        missing: Its file is gone (this session): left out of the queue, learning and export.
    """

    name: str
    path: str
    state: str = "new"
    skipped: bool = False
    generation: int = 0
    decoder: str | None = None
    score: float | None = None
    prelabel_stamp: int | None = None
    verified_at: int | None = None
    changed: int | None = None
    source: Pin | None = None
    relative: str | None = None
    missing: bool = False

    def replace(self, **changes: Any) -> ImageEntry:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """What ``project.json`` keeps of it (the state itself is read from the folder)."""
        optional = {
            "skipped": self.skipped or None,
            "generation": self.generation or None,
            "decoder": self.decoder,
            "score": self.score,
            "prelabel_stamp": self.prelabel_stamp,
            "verified_at": self.verified_at,
            "changed": self.changed,
            "source": self.source.to_dict() if self.source is not None else None,
            "relative": self.relative,
        }
        return {"name": self.name, "path": self.path, **{k: v for k, v in optional.items() if v is not None}}

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> ImageEntry:
        number = lambda key: int(entry[key]) if isinstance(entry.get(key), int | float) else None  # noqa: E731
        stamp = number("prelabel_stamp") if "prelabel_stamp" in entry else number("stamp")  # schema 2's name
        return cls(
            name=str(entry["name"]),
            path=str(entry["path"]),
            skipped=bool(entry.get("skipped", False)),
            generation=number("generation") or 0,
            decoder=entry.get("decoder") if isinstance(entry.get("decoder"), str) else None,
            score=float(entry["score"]) if isinstance(entry.get("score"), int | float) else None,
            prelabel_stamp=stamp,
            verified_at=number("verified_at"),
            changed=number("changed"),
            source=Pin.from_dict(entry.get("source")),
            relative=entry.get("relative") if isinstance(entry.get("relative"), str) else None,
        )


#: The fields of an entry that follow its image file (:mod:`.sources`).
SOURCE_FIELDS = frozenset({"path", "source", "relative", "missing"})


class StateView:
    """The manifest and the images' entries, in file order, as read (:class:`ProjectState` changes them)."""

    def __init__(
        self, folder: ProjectFolder, manifest: Manifest, entries: Iterable[ImageEntry], *, read_only: bool = False
    ) -> None:
        from ..segmentation.options import SegmentOptions

        self.folder, self.read_only = folder, read_only
        self.lock = threading.RLock()  # the dock verifies while a worker re-predicts
        self._manifest = manifest
        self._entries = {entry.name: entry for entry in entries}
        self._counts = Counter(entry.state for entry in self._entries.values())
        self._options_threshold = SegmentOptions.from_dict(manifest.options).threshold
        self._saved = 0.0
        self._held = 0

    # --- reading --------------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[ImageEntry]:
        return list(self._entries.values())

    def entry(self, name: str) -> ImageEntry:
        try:
            return self._entries[name]
        except KeyError:
            example = ", ".join(list(self._entries)[:3])
            raise KeyError(f"no image named {name!r} in this project (e.g. {example})") from None

    def status(self) -> dict[str, int]:
        return {state: self._counts.get(state, 0) for state in STATES}

    def in_state(self, state: str) -> Iterator[ImageEntry]:
        """The entries in ``state`` whose image is there (a missing one waits, left out of the loop)."""
        return (e for e in list(self._entries.values()) if e.state == state and not e.missing)

    def missing(self) -> list[str]:
        return [entry.name for entry in self._entries.values() if entry.missing]

    @property
    def decoder(self) -> str | None:
        """The name of the decoder in use (``001``; None: the base model's)."""
        record = self._manifest.record(self._manifest.decoder)
        return record.name if record is not None else None

    @property
    def decoder_path(self) -> Path | None:
        """The folder of the decoder in use (None: the base model's)."""
        return self.folder.root / self._manifest.decoder if self._manifest.decoder else None

    def threshold_of(self, decoder: str | None) -> Threshold:
        """The threshold of the pre-labels the decoder named ``decoder`` makes (None: the base
        model's): its own, or the refiner's when one is kept with it (its maps are the refiner's)."""
        record = self._manifest.record(decoder)
        if record is None or not record.refiner:
            return self.decoder_threshold(decoder)
        base = self._base()
        return (REFINED_THRESHOLD,) * len(base) if isinstance(base, tuple | list) else REFINED_THRESHOLD

    def decoder_threshold(self, decoder: str | None) -> Threshold:
        """The threshold of the decoder's own maps (None: the base model's, the options')."""
        record = self._manifest.record(decoder)
        chosen = record.threshold if record is not None and record.threshold is not None else self._base()
        return tuple(float(t) for t in chosen) if isinstance(chosen, tuple | list) else float(chosen)

    def _base(self) -> Threshold:
        """The base model's threshold: as the annotator set it, else the options'."""
        chosen = self._manifest.base_threshold
        return chosen if chosen is not None else self._options_threshold


class ProjectState(StateView):
    """The project's state and the only writer of it: its transactions (module docstring)."""

    # --- transactions ---------------------------------------------------------------------------

    def take_prelabel(self, entry: ImageEntry) -> ImageEntry:
        """Take in the pre-label on disk: ``entry`` is what :func:`~.reconcile.prelabelled` made of
        it (its new generation, decoder, record time and score). A verified or skipped image keeps
        its state (the annotator came first)."""
        with self.lock:
            now = self.entry(entry.name)
            if now.state in ("verified", "skipped"):
                return now
            self._put(entry)
            self.save(every=SAVE_EVERY)
            return entry

    def rescore(self, name: str, score: float) -> None:
        """Remember the review score of a pre-label (computed on demand)."""
        with self.lock:
            self._put(self.entry(name).replace(score=score))

    def forget_prelabel(self, name: str) -> None:
        """The pre-label of ``name`` is damaged: its files (the project's own output) are removed
        and the image is new again (pre-labelled anew when asked for)."""
        with self.lock:
            shutil.rmtree(self.folder.prelabels / name, ignore_errors=True)
            entry = self.entry(name)
            if entry.state == "pre-labelled":
                self._put(entry.replace(state="new", prelabel_stamp=None, score=None))
            self.save()

    def commit_verify(self, name: str, changed: int, verified_at: int) -> ImageEntry:
        with self.lock:
            entry = self.entry(name).replace(state="verified", skipped=False, changed=changed, verified_at=verified_at)
            self._put(entry)
            self.save()
            return entry

    def commit_learn(self, learnt_at: int, decoder: DecoderRecord | None, log: dict[str, Any]) -> None:
        """A Learn ran until ``learnt_at`` (``log``: its entry in the learning log); ``decoder`` (a
        version kept) is now the one in use."""
        with self.lock:
            changes: dict[str, Any] = {"learnt_at": learnt_at, "learns": (*self._manifest.learns, log)}
            if decoder is not None:
                changes.update(decoders=(*self._manifest.decoders, decoder), decoder=decoder.folder)
            self._manifest = self._manifest.replace(**changes)
            self.save()

    def set_threshold(self, decoder: str | None, threshold: Threshold) -> None:
        """The threshold of the decoder named ``decoder`` (None: the base model's) from now on; its
        pre-labels are scored again when the queue asks (their labels follow at once: :mod:`.snapshot`)."""
        with self.lock:
            record = self._manifest.record(decoder)
            if record is None:
                self._manifest = self._manifest.replace(base_threshold=threshold)
            else:
                decoders = (
                    dataclasses.replace(d, threshold=threshold) if d is record else d for d in self._manifest.decoders
                )
                self._manifest = self._manifest.replace(decoders=tuple(decoders))
            for entry in self.entries():
                if entry.state == "pre-labelled" and entry.decoder == (record.name if record else None):
                    self._put(entry.replace(score=None))
            self.save()

    def use_decoder(self, decoder: DecoderRecord | None) -> None:
        with self.lock:
            self._manifest = self._manifest.replace(decoder=decoder.folder if decoder is not None else None)
            self.save()

    def skip(self, name: str) -> None:
        with self.lock:
            entry = self.entry(name)
            if entry.state != "verified":
                self._put(entry.replace(state="skipped", skipped=True))
            self.save()

    def drop(self, name: str) -> None:
        """Take ``name`` out for good (its files are :mod:`.sources`' to move first)."""
        with self.lock:
            entry = self._entries.pop(self.entry(name).name)
            self._counts[entry.state] -= 1
            if name not in self._manifest.dropped:
                self._manifest = self._manifest.replace(dropped=(*self._manifest.dropped, name))
            self.save()

    def settle_source(self, name: str, **changes: Any) -> ImageEntry:
        """Follow an image's file (:data:`SOURCE_FIELDS`: moved, pinned, gone, found again)."""
        if not set(changes) <= SOURCE_FIELDS:
            raise TypeError(f"only {', '.join(sorted(SOURCE_FIELDS))} follow the file; got {', '.join(changes)}")
        with self.lock:
            entry = self.entry(name).replace(**changes)
            self._put(entry)
            self.save()
            return entry

    def requeue(self, name: str, source: Pin, relative: str | None) -> None:
        """The file of ``name`` holds other pixels (its labels are :mod:`.sources`' to move first):
        back to new (or skipped), pinned to what it holds now."""
        with self.lock:
            entry = self.entry(name)
            state = "skipped" if entry.skipped else "new"
            changes = {"source": source, "relative": relative, "missing": False, "prelabel_stamp": None, "score": None}
            self._put(entry.replace(state=state, changed=None, verified_at=None, **changes))
            self.save()

    # --- persistence ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Persist once, at the end, what the transactions inside change (opening: every image checked)."""
        with self.lock:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
                if not self._held:
                    self.save()

    def save(self, every: float = 0.0) -> None:
        """Write the manifest (``every``: only when the last write is that many seconds old)."""
        now = time.monotonic()
        if self.read_only or self._held or now - self._saved < every:
            return
        with self.lock:
            self.folder.write_manifest(self.to_manifest())
        self._saved = now

    def to_manifest(self) -> dict[str, Any]:
        """The ``project.json`` content (without the schema header)."""
        return {**self._manifest.to_dict(), "images": [entry.to_dict() for entry in self._entries.values()]}

    def _put(self, entry: ImageEntry) -> None:
        old = self._entries.get(entry.name)
        if old is not None:
            self._counts[old.state] -= 1
        self._entries[entry.name] = entry
        self._counts[entry.state] += 1


def record_time(path: str | os.PathLike) -> int | None:
    """Modification time (ns) of a record file; None when there is none."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
