"""Figures measured once per machine and kept in the user's cache folder: the timing of a vision
block (``cpu-speed.json``) and the accuracy check of a precision on given weights
(``precision-checks.json``). Torch-free.

The files are the user's own, and any of them may be damaged, replaced by something that is not
a file, or edited by hand: only regular files of at most :data:`MAX_BYTES` are read, an entry
that lacks a figure or holds a non-number counts as not measured, and a damaged file as empty
(with one warning naming it); it is rewritten whole with the next measurement.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: Where the measurements are kept (``$NAPARI_CLIPSEG_CACHE_DIR`` overrides the user cache folder).
CACHE_ENV = "NAPARI_CLIPSEG_CACHE_DIR"

#: A larger file is not read (a measurement file holds a few entries of a few numbers).
MAX_BYTES = 1 << 20


def cache_folder() -> Path:
    """The folder the measurement files live in."""
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        from platformdirs import user_cache_dir

        folder = user_cache_dir("napari-clipseg")
    return Path(folder)


@dataclass(frozen=True)
class Measured:
    """Figures for one key, and whether they were measured now or read from the file."""

    figures: dict[str, float]
    now: bool
    path: Path


def _read(path: Path) -> dict:
    """The entries of a measurement file; empty when it is missing or damaged (warned once)."""
    if not path.exists():
        return {}
    why = None
    if not path.is_file():  # a FIFO or a device would block or never end: never opened
        why = "not a regular file"
    elif path.stat().st_size > MAX_BYTES:
        why = f"larger than {MAX_BYTES} bytes"
    else:
        try:
            known = json.loads(path.read_bytes())
            why = None if isinstance(known, dict) else "not a JSON object"
        except (OSError, ValueError) as error:
            why = f"not readable JSON ({type(error).__name__})"
    if why is not None:
        logger.warning("ignored %s: %s; it is measured again and rewritten", path, why)
        return {}
    return known


def _valid(entry: object, required: Iterable[str]) -> bool:
    """An entry with every required figure, each a finite number (not a bool, not text)."""
    if not isinstance(entry, dict):
        return False
    return all(
        isinstance(entry.get(k), int | float) and not isinstance(entry.get(k), bool) and math.isfinite(entry[k])
        for k in required
    )


def remembered(
    name: str,
    key: str,
    compute: Callable[[], dict[str, float]],
    required: Iterable[str],
    measure: bool = True,
) -> Measured | None:
    """``compute()``'s figures for ``key``, computed once and kept in the file ``name`` of
    :func:`cache_folder` (None when not known and ``measure`` is False). An entry without every
    ``required`` figure as a finite number is measured again; a file that cannot be written only
    means measuring again next session."""
    path = cache_folder() / name
    known = _read(path)
    required = tuple(required)
    entry = known.get(key)
    if entry is not None and not _valid(entry, required):
        logger.warning("ignored a damaged entry of %s (it lacks %s as numbers); measuring again", path, required)
        entry = None
    if entry is not None:
        return Measured(entry, False, path)
    if not measure:
        return None
    figures = compute()
    logger.debug("measured on this machine (%s): %s", name, json.dumps(figures))
    _remember(path, {k: v for k, v in known.items() if k != key} | {key: figures})
    return Measured(figures, True, path)


#: Cache folders found unwritable in this session (said once each).
_UNWRITABLE: set[str] = set()


def _remember(path: Path, known: dict) -> None:
    from ..atomic import write_json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, known, overwrite=True)  # whole or not at all, also with several workers
    except OSError as error:  # a read-only home: measure again next session (said once per folder)
        if str(path.parent) not in _UNWRITABLE:
            _UNWRITABLE.add(str(path.parent))
            logger.warning(
                "cannot keep this machine's measurements in %s (%s): measured again each session", path.parent, error
            )
