"""Writing label images and masks for training, atomically and never over existing files.

Formats: TIFF (tifffile, zlib), PNG (8/16-bit) and ``.npy``; a JSON sidecar records how the masks
were made (prompts <-> label values, model and weights hash, thresholds, plugin version).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def check_suffix(path: str | os.PathLike) -> None:
    """Raise ValueError unless ``path`` has a suffix :func:`write_array` can write."""
    suffix = Path(path).suffix
    if suffix.lower() not in LABEL_SUFFIXES:
        raise ValueError(f"unsupported file type {suffix!r}; use one of {', '.join(LABEL_SUFFIXES)}")


def _default_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[str], None], overwrite: bool) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    An interrupted write never leaves a partial ``path``; an existing ``path`` is kept unless
    ``overwrite`` (FileExistsError).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or allow overwriting")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _default_file_mode())  # mkstemp files are private (0600); outputs are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_array(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an image array as ``.tif``/``.tiff``, ``.png`` or ``.npy`` (chosen by suffix).

    Raises:
        ValueError: unknown suffix, or data PNG cannot hold (more than 2D, or wider than 16 bit).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    array = np.asarray(array)
    if suffix in (".tif", ".tiff"):
        import tifffile

        def write(tmp: str) -> None:
            tifffile.imwrite(tmp, array, compression="zlib")
    elif suffix == ".png":
        if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16, np.bool_):
            raise ValueError(f"PNG holds 2D 8/16-bit images; got {array.dtype} {array.shape}: use .tif")
        import imageio.v3 as iio

        def write(tmp: str) -> None:
            iio.imwrite(tmp, array.astype(np.uint8) * 255 if array.dtype == np.bool_ else array, extension=".png")
    elif suffix == ".npy":

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, array)
    else:
        check_suffix(path)
    return atomic_write(path, write, overwrite)


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read an image written by :func:`write_array` (or any TIFF/PNG/JPEG)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def write_json(path: str | os.PathLike, record: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write ``record`` as indented JSON, atomically."""
    text = json.dumps(record, indent=2, default=str)
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text), overwrite)


def safe_name(text: str) -> str:
    """A file-name-safe version of a class name ("cell membrane" -> "cell_membrane")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("_") or "class"


def export_masks(
    folder: str | os.PathLike,
    labels: np.ndarray,
    class_names: Sequence[str],
    record: dict[str, Any],
    *,
    suffix: str = ".tif",
    overwrite: bool = False,
) -> list[Path]:
    """Write a multi-class label image, one binary mask per class, and a JSON sidecar.

    Files: ``labels{suffix}`` (value ``i + 1`` = ``class_names[i]``), ``{NN}_{name}{suffix}``
    (uint8, 255 inside), and ``clipseg.json`` (``record`` plus the class table and file names).
    Nothing is written if any target exists and ``overwrite`` is False.

    Returns:
        The written paths, sidecar last.
    """
    folder = Path(folder)
    labels = np.asarray(labels)
    masks = {f"{i + 1:02d}_{safe_name(name)}{suffix}": i + 1 for i, name in enumerate(class_names)}
    targets = [folder / f"labels{suffix}", *(folder / m for m in masks), folder / "clipseg.json"]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} file(s) already exist, e.g. {existing[0]}; nothing was written")
    written = [write_array(targets[0], labels, overwrite=overwrite)]
    for name, value in masks.items():
        written.append(write_array(folder / name, (labels == value).astype(np.uint8) * 255, overwrite=overwrite))
    classes = [{"value": v, "name": class_names[v - 1], "mask": n} for n, v in masks.items()]
    sidecar = {**record, "classes": classes, "labels": targets[0].name, "shape": list(labels.shape)}
    written.append(write_json(targets[-1], sidecar, overwrite=overwrite))
    return written


def provenance(model: Any, **fields: Any) -> dict[str, Any]:
    """The sidecar record of a run: plugin version, model source and weights hash, plus ``fields``."""
    from . import __version__

    info = getattr(model, "weights_info", None)
    weights = info.to_dict() if info is not None else {"source": None, "kind": "random", "sha256": None}
    return {"napari_clipseg_version": __version__, "model": weights, **fields}
