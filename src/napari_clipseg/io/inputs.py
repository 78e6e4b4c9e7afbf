"""Dataset inputs: find image files, open them (lazily when large) with their pixel sizes, fingerprint them.

Inputs are files, folders (searched recursively) and glob patterns. TIFF (multi-page and OME-TIFF
as stacks), PNG/JPEG, ``.npy`` (memory-mapped), zarr arrays and OME-Zarr images (read lazily). The
pixel size comes from OME metadata, ImageJ metadata or the TIFF resolution tags, in micrometres.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .export import read_array

FILE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")
ZARR_SUFFIX = ".zarr"
#: TIFFs larger than this are read lazily, plane by plane (smaller ones are read at once).
LAZY_TIFF_BYTES = 256 << 20
#: Micrometres per unit of a TIFF ResolutionUnit (2: inch, 3: centimetre).
_RESOLUTION_UNITS = {2: 25_400.0, 3: 10_000.0}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputFile:
    """One input of a dataset: its ``path`` and ``name`` (its path below the folder it was found
    in, without suffixes, ``/``-separated): the output folder of this input is ``out_dir / name``."""

    path: Path
    name: str


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and (path.suffix.lower() == ZARR_SUFFIX or (path / "zarr.json").exists())


def _bare_name(path: Path) -> str:
    """``a.ome.tif`` -> ``a``; ``b.png`` -> ``b``."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", *FILE_SUFFIXES, ZARR_SUFFIX):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_output(path: Path) -> bool:
    """Whether ``path`` is something napari-clipseg wrote: a folder or file with a valid record
    (an output folder's ``clipseg.json``, a labels file's ``<file>.json`` sidecar)."""
    from .records import RECORD_NAME, read_record, sidecar_path

    for record in (path / RECORD_NAME, path.parent / RECORD_NAME, sidecar_path(path)):
        if record.is_file() and record != path:
            try:
                read_record(record)
                return True
            except Exception:  # noqa: BLE001 - not our record: the file is an input like any other
                continue
    return False


def _real(path: Path) -> Path:
    """``path`` with links followed; a link that loops stays as it is (opening it fails, and that
    input is reported as failed: never a traceback while the inputs are searched)."""
    return Path(os.path.realpath(path))


def _in_folder(folder: Path, skip: Path | None) -> list[Path]:
    """Image files and zarr folders below ``folder`` (not inside zarr folders, hidden entries or
    ``skip``; with ``skip`` given, nothing that napari-clipseg wrote, see :func:`is_output`)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        if skip is not None and here != folder and is_output(here):
            dirs[:] = []
            continue
        keep = []
        for d in sorted(dirs):
            path = here / d
            if d.startswith(".") or (skip is not None and _real(path) == skip):
                continue
            (found.append(path) if _is_zarr(path) else keep.append(d))
        dirs[:] = keep
        found += [here / f for f in sorted(files) if not f.startswith(".") and Path(f).suffix.lower() in FILE_SUFFIXES]
    return sorted(p for p in found if skip is None or not is_output(p))


def find_inputs(
    sources: Sequence[str | os.PathLike | InputFile], *, skip: str | os.PathLike | None = None
) -> list[InputFile]:
    """The inputs named by files, folders (recursive) and glob patterns, in a stable order; an
    :class:`InputFile` is taken as it is (a subset of an earlier search keeps its names).

    Args:
        skip: The output folder: never searched, and nothing under it or carrying a napari-clipseg
            record (an earlier run's outputs, wherever they lie) is taken as an input.

    Raises:
        FileNotFoundError: a source matches nothing.
        ValueError: two inputs would share an output name (e.g. ``a/x.tif`` and ``b/x.png`` given
            as files), or a file given by name is an output. One file named twice (by a relative
            and an absolute path, or through a symbolic link) is one input.
    """
    skip_path = Path(skip).resolve() if skip is not None else None
    inputs: list[InputFile] = []
    for source in sources:
        if isinstance(source, InputFile):
            inputs.append(source)
            continue
        path = Path(source)
        if path.is_dir() and not _is_zarr(path):
            found = [
                InputFile(p, (p.parent.relative_to(path) / _bare_name(p)).as_posix())
                for p in _in_folder(path, skip_path)
            ]
            if not found:
                raise FileNotFoundError(f"{path}: the folder holds no images ({', '.join(FILE_SUFFIXES)}, zarr)")
        elif path.exists():
            found = [InputFile(path, _bare_name(path))]
        else:
            matches = sorted(Path(m) for m in glob.glob(str(source), recursive=True))
            found = [InputFile(m, _bare_name(m)) for m in matches if m.is_file() or _is_zarr(m)]
            if not found:
                raise FileNotFoundError(f"{source}: no such file or folder, and no file matches it")
            if skip_path is not None:
                found = [f for f in found if skip_path not in _real(f.path).parents and not is_output(f.path)]
        if skip_path is not None and path.exists() and not path.is_dir() and is_output(path):
            raise ValueError(f"{path} is an output of napari-clipseg (it has a record), not an input")
        inputs += found
    unique: dict[Path, InputFile] = {}
    for item in inputs:  # one file given twice (relative and absolute, a link and its target) is one input
        unique.setdefault(_real(item.path), item)
    by_name: dict[str, Path] = {}
    for item in unique.values():
        other = by_name.setdefault(item.name, item.path)
        if other != item.path:
            raise ValueError(f"{other} and {item.path} would both write to '{item.name}': give them separately")
    return list(unique.values())


@dataclass
class OpenedImage:
    """An input's pixels (numpy, memory-mapped or lazy zarr) and what is known of its geometry.

    Attributes:
        data: The array (``(..., Y, X[, C])``).
        axes: Axis letters when the file names them (``"ZYX"``, ``"CZYX"``), else None.
        pixel_size: Micrometres per pixel along the named spatial axes (``{"z": 2.0, "y": 0.5, "x": 0.5}``).
    """

    data: Any
    axes: str | None = None
    pixel_size: dict[str, float] = field(default_factory=dict)

    @property
    def channel_axis(self) -> int | None:
        """Index of a channel axis named ``C`` in the file (not a trailing RGB axis), else None."""
        if self.axes and "C" in self.axes.upper() and len(self.axes) == len(self.data.shape):
            axis = self.axes.upper().index("C")
            return axis if axis != len(self.axes) - 1 or self.data.shape[-1] not in (3, 4) else None
        return None


def open_image(path: str | os.PathLike) -> OpenedImage:
    """Open one input.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable image (one line naming the file).
    """
    path = Path(path)
    if _is_zarr(path):
        return _open_zarr(path)
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        try:
            return _open_tiff(path)
        except (OSError, ValueError, KeyError, IndexError) as e:
            if isinstance(e, PermissionError):
                raise PermissionError(f"no permission to read {path}") from None
            raise ValueError(f"cannot read {path} as a TIFF ({str(e).strip()[:160] or type(e).__name__})") from None
    if path.suffix.lower() == ".npy" and path.is_file():
        try:
            return OpenedImage(np.load(path, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {path} as a .npy array ({str(e)[:160]})") from None
    return OpenedImage(read_array(path))


def _open_tiff(path: Path) -> OpenedImage:
    import tifffile
    import zarr

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, pixel_size = series.axes, _tiff_pixel_size(tif)
        _say_how_samples_are_read(path, tif.pages[0], axes)
        data = None if path.stat().st_size > LAZY_TIFF_BYTES else series.asarray()
    if data is None:
        data = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    if data.ndim < 2 or data.size == 0:
        raise ValueError(f"it holds no image (shape {data.shape})")
    return OpenedImage(data, axes.replace("S", "C") if axes else None, pixel_size)


def _say_how_samples_are_read(path: Path, page: Any, axes: str) -> None:
    """Warn when a TIFF's samples are read as colour though they may be planes: four or more
    samples stored as separate planes (what ``tifffile.imwrite`` makes of any 4-plane stack), or
    extra samples that are not alpha."""
    import tifffile

    samples = int(getattr(page, "samplesperpixel", 1) or 1)
    if "S" not in axes or samples < 4:
        return
    planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    alpha = (tifffile.EXTRASAMPLE.ASSOCALPHA, tifffile.EXTRASAMPLE.UNASSALPHA)
    plain_alpha = samples == 4 and all(e in alpha for e in page.extrasamples)
    if planar or not plain_alpha:
        logger.warning(
            "%s: read as one colour image from %d samples (R, G, B; the rest read as alpha and dropped)%s; if they "
            "are planes of a stack, give --rgb no (rgb=False) to segment each plane, or --channels to choose three",
            path,
            samples,
            ", stored as separate planes" if planar else "",
        )


def pixel_sizes(stated: dict[str, Any]) -> dict[str, float]:
    """The one rule for a file's pixel sizes (OME-TIFF, ImageJ, resolution tags, OME-Zarr): only
    the spatial axes ``z``, ``y``, ``x`` with a finite, positive number are kept; anything else
    (text, zero, negative, NaN) is left out, so a record never states a size the file did not."""
    sizes = {}
    for axis, value in stated.items():
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        if str(axis).lower() in ("z", "y", "x") and number is not None and math.isfinite(number) and number > 0:
            sizes[str(axis).lower()] = float(number)
    return sizes


def _tiff_pixel_size(tif: Any) -> dict[str, float]:
    """Micrometres per pixel from OME, ImageJ or the resolution tags (empty when not stated)."""
    import tifffile

    if tif.is_ome:
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        return pixel_sizes({a: pixels.get(f"PhysicalSize{a.upper()}") for a in "zyx"})
    page = tif.pages[0]
    x_res, y_res, unit = (page.tags.get(t) for t in ("XResolution", "YResolution", "ResolutionUnit"))
    if x_res is None or y_res is None:
        return {}
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        scale = 1.0 if meta.get("unit") in ("um", "micron", "µm", "\\u00B5m") else None
        z = meta.get("spacing")
    else:
        scale = _RESOLUTION_UNITS.get(int(unit.value) if unit is not None else 2)
        z = None
    if scale is None:
        return {}
    sizes = {
        "y": scale * y_res.value[1] / y_res.value[0] if y_res.value[0] else None,
        "x": scale * x_res.value[1] / x_res.value[0] if x_res.value[0] else None,
        "z": z,
    }
    return pixel_sizes(sizes)


def _open_zarr(path: Path) -> OpenedImage:
    """A zarr array, or the finest level of an OME-Zarr image (with its axes and scale)."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:  # noqa: BLE001 - zarr raises many types for a damaged store
        raise ValueError(f"cannot read {path} as zarr ({str(e)[:160]})") from None
    if isinstance(node, zarr.Array):
        return OpenedImage(node)
    attrs = dict(node.attrs)
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        raise ValueError(f"cannot read {path}: a zarr group that is not an OME-Zarr image")
    try:
        scale = multiscales[0]
        dataset = scale["datasets"][0]
        level = str(dataset["path"])
        axes = [str(a["name"] if isinstance(a, dict) else a) for a in scale.get("axes", [])]
        transforms = [t for t in dataset.get("coordinateTransformations", []) if isinstance(t, dict)]
        factors = next((t.get("scale") for t in transforms if t.get("type") == "scale"), None) or []
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"cannot read {path}: its OME-Zarr metadata is malformed ({type(e).__name__}: {e})") from None
    if level not in node:
        raise ValueError(f"cannot read {path}: its OME-Zarr metadata names the level {level!r}, which the store lacks")
    sizes = pixel_sizes(dict(zip(axes, factors, strict=False))) if isinstance(factors, list) else {}
    return OpenedImage(node[level], "".join(a.upper() for a in axes) or None, sizes)


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies an input's content cheaply: size in bytes and modification time (for a
    zarr folder, over all of its files), so a re-run notices a replaced or edited input."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [f.stat() for f in files]
    return {"bytes": sum(s.st_size for s in stats), "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


def content_digest(path: str | os.PathLike, stop: Any = None) -> str:
    """BLAKE2b of an input's bytes (a zarr folder: of its files' relative names and bytes, in
    order): the same digest means the same pixels, whatever the file's name, place or time.
    ``stop`` (a ``threading.Event``) ends it between two chunks."""
    import hashlib

    from ..errors import check_stop

    path = Path(path)
    digest = hashlib.blake2b(digest_size=20)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                check_stop(stop)
                digest.update(chunk)
    return digest.hexdigest()


def named_entries(source: str | os.PathLike) -> dict[str, Path]:
    """Name -> path for one side of a pairing (evaluation, training pairs): the output folders of
    a batch run (named by their path below ``source``), else the images ``find_inputs`` finds."""
    from .records import RECORD_NAME

    path = Path(source)
    if path.is_dir() and (path / RECORD_NAME).exists():
        return {path.name: path}
    if path.is_dir():
        folders = sorted(p.parent for p in path.rglob(RECORD_NAME) if ".staging" not in p.parts)
        if folders:
            return {f.relative_to(path).as_posix(): f for f in folders}
    return {item.name: item.path for item in find_inputs([path])}
