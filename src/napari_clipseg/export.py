"""Writing arrays and JSON atomically, never over an existing file unless asked; reading them back.

Formats: TIFF (tifffile, zlib), PNG (8/16-bit) and ``.npy``. Every write goes to a temporary file
beside its target; :func:`write_together` renames a whole group into place only once every file
of the group was written, so a run leaves all of its files or none of them (an interruption or a
full disk removes the temporary files and leaves the targets as they were).
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

import numpy as np

LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
#: Suffixes that hold float arrays (probability maps).
FLOAT_SUFFIXES = (".tif", ".tiff", ".npy")

Writer = Callable[[str], None]


def check_suffix(path: str | os.PathLike, suffixes: Sequence[str] = LABEL_SUFFIXES) -> None:
    """Raise ValueError unless ``path`` has one of ``suffixes``."""
    suffix = Path(path).suffix
    if suffix.lower() not in suffixes:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(suffixes)}")


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


def array_writer(path: str | os.PathLike, array: np.ndarray, pixel_size: dict[str, float] | None = None) -> Writer:
    """The function that writes ``array`` in the format of ``path``'s suffix, checked before any write.

    ``pixel_size`` (micrometres along ``y`` and ``x``) goes into a TIFF's resolution tags.

    Raises:
        ValueError: unknown suffix, or data the format cannot hold (PNG: 2D, 8/16-bit or bool).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    array = np.asarray(array)
    check_suffix(path)
    if suffix in (".tif", ".tiff"):
        import tifffile

        extra = {}
        if pixel_size and pixel_size.get("x") and pixel_size.get("y"):  # pixels per centimetre
            extra = {"resolution": (1e4 / pixel_size["x"], 1e4 / pixel_size["y"]), "resolutionunit": "CENTIMETER"}
        # minisblack: a (3, Y, X) label stack is three planes, never an RGB image
        return lambda tmp: tifffile.imwrite(tmp, array, compression="zlib", photometric="minisblack", **extra)
    if suffix == ".png":
        if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16, np.bool_):
            raise ValueError(f"{path}: PNG holds 2D 8/16-bit images; got {array.dtype} {array.shape}: use .tif")
        import imageio.v3 as iio

        data = array.astype(np.uint8) * 255 if array.dtype == np.bool_ else array
        return lambda tmp: iio.imwrite(tmp, data, extension=".png")

    def write_npy(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return write_npy


def json_writer(record: Any) -> Writer:
    """The function that writes ``record`` as indented UTF-8 JSON."""
    text = json.dumps(record, indent=2, default=str)
    return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")


def write_array(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an image array as ``.tif``/``.tiff``, ``.png`` or ``.npy`` (chosen by suffix), atomically.

    Raises:
        ValueError: unknown suffix, or data PNG cannot hold (more than 2D, or wider than 16 bit).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    return atomic_write(Path(path), array_writer(path, array), overwrite)


def write_json(path: str | os.PathLike, record: Any, *, overwrite: bool = False) -> Path:
    """Write ``record`` as indented JSON, atomically."""
    return atomic_write(Path(path), json_writer(record), overwrite)


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (TIFF, PNG, JPEG, ``.npy``, anything imageio reads).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable image (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        array = _read(path)
    except (OSError, ValueError, RuntimeError, SyntaxError) as e:
        if isinstance(e, PermissionError):
            raise PermissionError(f"no permission to read {path}") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read {path} as an image ({first[:160]})") from None
    if array.ndim < 2 or array.size == 0:
        raise ValueError(f"cannot read {path} as an image (it holds no pixels: shape {array.shape})")
    return array


def _read(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))
