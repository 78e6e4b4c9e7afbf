"""Writing label and probability arrays (atomically, through :mod:`napari_clipseg.atomic`) and reading them back.

Formats: TIFF (tifffile, zlib), PNG (8/16-bit) and ``.npy``. Every write goes to a temporary file
beside its target; :func:`write_together` renames a whole group into place only once every file
of the group was written, so a run leaves all of its files or none of them (an interruption or a
full disk removes the temporary files and leaves the targets as they were).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import Writer, atomic_write

LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
#: Suffixes that hold float arrays (probability maps).
FLOAT_SUFFIXES = (".tif", ".tiff", ".npy")


def check_suffix(path: str | os.PathLike, suffixes: Sequence[str] = LABEL_SUFFIXES) -> None:
    """Raise ValueError unless ``path`` has one of ``suffixes``."""
    suffix = Path(path).suffix
    if suffix.lower() not in suffixes:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(suffixes)}")


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


def write_array(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an image array as ``.tif``/``.tiff``, ``.png`` or ``.npy`` (chosen by suffix), atomically.

    Raises:
        ValueError: unknown suffix, or data PNG cannot hold (more than 2D, or wider than 16 bit).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    return atomic_write(Path(path), array_writer(path, array), overwrite)


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
