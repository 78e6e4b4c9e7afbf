"""Writing files atomically: all files of a group or none, never over a file unless asked.

Every write goes to a temporary file beside its target; :func:`write_together` renames a whole
group into place only once every file of the group was written, so an interruption or a full disk
removes the temporary files and leaves the targets as they were. Shared by every layer that writes
(weights, caches, records, outputs), so it depends on nothing but the standard library.

A rename is atomic for a crashed *process*, not for a power cut: the file system may write the
new name before the file's bytes, leaving an empty or missing file after a reboot. Writes that
hold work a person cannot redo (a project's verified labels, its manifest, its decoders) pass
``durable=True``: each file is flushed to the disk before its rename, and the folder that holds
the new name after it, as SQLite and git do (docs/reliability.md, "What survives a power cut").
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


def flush_file(path: str | os.PathLike) -> None:
    """Flush a written file's bytes to the disk (``fsync``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flush_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (names renamed in or out) to the disk; a no-op where folders
    cannot be opened (Windows, where a rename is flushed with its file)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems (and pseudo ones) refuse fsync on a folder
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def flush_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` (a staged output folder, before its rename)."""
    for folder, _, files in os.walk(root):
        for name in files:
            flush_file(os.path.join(folder, name))
        flush_folder(folder)


def _made_folders(folder: Path) -> Path | None:
    """Make ``folder`` (and its parents); returns the top-most folder that was new (None: none)."""
    top = None
    probe = folder
    while not probe.exists():
        top, probe = probe, probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    return top


def _storage_full(error: BaseException) -> bool:
    """A library's own error for a full disk (safetensors' ``IoError(... StorageFull ...)``)."""
    text = str(error)
    return "StorageFull" in text or "No space left" in text or "code: 28" in text


def _fill(tmp: str, write: Writer, path: Path, durable: bool) -> None:
    """``write(tmp)`` with its errors in words (a full disk named as such, whoever raised it)."""
    try:
        write(tmp)
    except OSError as e:
        raise _explain(e, path) from e
    except Exception as e:
        if _storage_full(e):
            raise _explain(OSError(errno.ENOSPC, str(e)), path) from e
        raise
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp files are 0600; outputs are ordinary files
    if durable:
        flush_file(tmp)


def write_together(
    items: Sequence[tuple[Path, Writer]], *, overwrite: bool = False, durable: bool = False
) -> list[Path]:
    """Write a group of files: all of them, or none.

    Each ``write(tmp)`` fills a temporary file beside its target; only when all succeeded are
    they renamed into place. Any failure (or Ctrl-C) removes the temporary files, and targets
    renamed before a failed rename are removed again (they did not exist before unless
    ``overwrite``). ``durable``: flushed to the disk, so a power cut after the return loses
    nothing (see the module docstring).

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
    folders: set[Path] = set()  # to flush after the renames: each target's folder, and above new ones
    made_here: list[tuple[Path, Path]] = []  # (folder, the top-most folder made for it): removed on failure
    try:
        for path, write in items:
            made = _made_folders(path.parent)
            folders |= {path.parent} | ({made.parent} if made is not None else set())
            if made is not None:
                made_here.append((path.parent, made))
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")
            os.close(fd)
            temps.append(tmp)
            _fill(tmp, write, path, durable)
        for tmp, path in zip(temps, paths, strict=True):
            os.replace(tmp, path)
            done.append(path)
        if durable:
            for folder in sorted(folders, key=lambda f: -len(f.parts)):  # deepest first
                flush_folder(folder)
    except BaseException:
        if not overwrite:
            for path in done:
                path.unlink(missing_ok=True)
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)
        for folder, top in made_here:  # the folders made for this group, if they stayed empty
            _remove_empty(folder, top)
        raise
    return paths


def _remove_empty(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` while they are empty."""
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == top:
            return
        folder = folder.parent


def atomic_write(path: Path, write: Writer, overwrite: bool, *, durable: bool = False) -> Path:
    """Write one file through a temporary file (see :func:`write_together`)."""
    return write_together([(Path(path), write)], overwrite=overwrite, durable=durable)[0]


def json_writer(record: Any) -> Writer:
    """The function that writes ``record`` as indented UTF-8 JSON."""
    text = json.dumps(record, indent=2, default=str)
    return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, record: Any, *, overwrite: bool = False, durable: bool = False) -> Path:
    """Write ``record`` as indented JSON, atomically (``durable``: flushed to the disk)."""
    return atomic_write(Path(path), json_writer(record), overwrite, durable=durable)


def swap_in_folder(stage: Path, target: Path, aside: Path, *, durable: bool = False) -> Path:
    """Put the finished folder ``stage`` at ``target`` in one rename; what was there is moved to
    ``aside`` first and removed after, so ``target`` is always either the old or the new folder.
    ``durable``: the new folder's files are flushed before the rename and the folders after it."""
    os.chmod(stage, 0o777 & ~current_umask())  # mkdtemp folders are private (0700)
    if durable:
        flush_tree(stage)
    made = _made_folders(target.parent)
    if target.exists():
        os.replace(target, aside)
    os.replace(stage, target)
    if durable:  # the rename is one journalled change: flushing the folder it entered commits it
        flush_folder(target.parent)
        if made is not None:
            flush_folder(made.parent)
    shutil.rmtree(aside, ignore_errors=True)
    return target
