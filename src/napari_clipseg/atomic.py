"""Writing files atomically: all files of a group or none, never over a file unless asked.

Every write goes to a temporary file beside its target; :func:`write_together` renames a whole
group into place only once every file of the group was written, so an interruption or a full disk
removes the temporary files and leaves the targets as they were. Shared by every layer that writes
(weights, caches, records, outputs), so it depends on nothing but the standard library.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Writer = Callable[[str], None]


def check_target(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Check, before any work, that ``path`` can be written: not a folder, not existing unless
    ``overwrite``, and in a folder that exists (or can be made) and is writable.

    Raises:
        FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError (OSError).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (use --overwrite to replace it)")
    folder = path.parent
    while not folder.exists():  # the first folder that exists must take new entries
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {folder} is a file, not a folder")
    try:  # a real probe: permissions, read-only mounts and pseudo file systems all answer here
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write {path}: {folder} does not accept new files ({e.strerror})") from None
    return path


def current_umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _disk_full(error: OSError, path: Path) -> bool:
    """Whether a failed write ran out of space (numpy's short writes carry no errno)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return "requested and" in str(error) or shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        return False


def _explain(error: OSError, path: Path) -> OSError:
    """An OSError whose message says what happened in words a user acts on."""
    if _disk_full(error, path):
        return OSError(errno.ENOSPC, f"no space left on the device while writing {path}; nothing was written")
    if error.errno in (errno.EACCES, errno.EPERM):
        return PermissionError(error.errno, f"no permission to write {path}; nothing was written")
    return error


def write_together(items: Sequence[tuple[Path, Writer]], *, overwrite: bool = False) -> list[Path]:
    """Write a group of files: all of them, or none.

    Each ``write(tmp)`` fills a temporary file beside its target; only when all succeeded are
    they renamed into place. Any failure (or Ctrl-C) removes the temporary files, and targets
    renamed before a failed rename are removed again (they did not exist before unless
    ``overwrite``).

    Raises:
        FileExistsError: a target exists and ``overwrite`` is False (nothing is written).
        OSError: a write failed (nothing is written; a full disk is named as such).
    """
    paths = [Path(p) for p, _ in items]
    if len({p.resolve() for p in paths}) != len(paths):
        raise ValueError(f"two outputs name the same file: {', '.join(map(str, paths))}")
    for path in paths:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; choose another name or allow overwriting")
    temps: list[str] = []
    done: list[Path] = []
    try:
        for path, write in items:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")
            os.close(fd)
            temps.append(tmp)
            try:
                write(tmp)
            except OSError as e:
                raise _explain(e, path) from e
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp files are 0600; outputs are ordinary files
        for tmp, path in zip(temps, paths, strict=True):
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        if not overwrite:
            for path in done:
                path.unlink(missing_ok=True)
        raise
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)
    return paths


def atomic_write(path: Path, write: Writer, overwrite: bool) -> Path:
    """Write one file through a temporary file (see :func:`write_together`)."""
    return write_together([(Path(path), write)], overwrite=overwrite)[0]


def json_writer(record: Any) -> Writer:
    """The function that writes ``record`` as indented UTF-8 JSON."""
    text = json.dumps(record, indent=2, default=str)
    return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, record: Any, *, overwrite: bool = False) -> Path:
    """Write ``record`` as indented JSON, atomically."""
    return atomic_write(Path(path), json_writer(record), overwrite)


def swap_in_folder(stage: Path, target: Path, aside: Path) -> Path:
    """Put the finished folder ``stage`` at ``target`` in one rename; what was there is moved to
    ``aside`` first and removed after, so ``target`` is always either the old or the new folder."""
    os.chmod(stage, 0o777 & ~current_umask())  # mkdtemp folders are private (0700)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.replace(target, aside)
    os.replace(stage, target)
    shutil.rmtree(aside, ignore_errors=True)
    return target
