"""Model sources: a local path or a Hugging Face hub id, and what to say when a path is missing.

Torch-free, so the CLI and the dock can refuse a typo before anything heavy is imported.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: What a Hugging Face hub id looks like: ``owner/name``.
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def is_local_path(source: str | os.PathLike) -> bool:
    """Whether a model source names a local file or folder rather than a hub id: it starts with
    ``./``, ``../``, ``/`` or ``~`` (or is absolute), its first path component exists here (a
    typo below an existing folder, ``clipseg-demo/modle``), or it cannot be a hub id."""
    text = os.fspath(source)
    if text.startswith(("./", "../", ".\\", "..\\", "~")) or os.path.isabs(text):
        return True
    parts = Path(text).parts
    return bool(parts and Path(parts[0]).exists()) or not HUB_ID.match(text)


def missing_path_message(path: str | os.PathLike, what: str) -> str | None:
    """Why a local ``path`` cannot be read, naming the deepest folder that exists and what it
    holds; None when it exists."""
    path = Path(os.fspath(path)).expanduser()
    if path.exists():
        return None
    parent = next((p for p in path.parents if p.exists()), None)
    hint = ""
    if parent is not None and parent != Path(".") and parent.is_dir():
        entries = sorted(e.name for e in parent.iterdir())[:6]
        hint = f" ({parent} exists and holds: {', '.join(entries) or 'nothing'})"
    return f"{what} {os.fspath(path)} does not exist: no such file or folder{hint}"


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> str | None:
    """Where huggingface_hub's cache resolves a hub file now, without the network (None: not
    cached). Torch-free. Raises huggingface_hub's validation error for an id the hub refuses."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return found if isinstance(found, str) else None
