"""The output folder of one dataset input: written all at once, recognised on a re-run, read back.

Each input gets ``out_dir/<name>/`` holding ``labels``, optionally ``instances`` and
``probabilities`` in one format (TIFF, PNG, ``.npy`` or one OME-Zarr), and ``clipseg.json``, the
provenance record (docs/records.md). The folder is built under ``out_dir/.staging/`` and renamed
into place in one step, so an interruption (Ctrl-C, a killed worker, power loss) leaves either
the complete folder or none; leftovers of the staging area are removed by the next run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import json_writer, swap_in_folder
from ..errors import RecordError
from .export import array_writer
from .records import RECORD_NAME, class_names, extend_record, read_record

FORMATS = ("tif", "png", "npy", "ome-zarr")
KINDS = ("labels", "instances", "probabilities")
STAGING = ".staging"
OME_ZARR_NAME = "labels.ome.zarr"
#: Coarser OME-Zarr levels are added while the smaller side stays at least this many pixels.
MIN_LEVEL_SIDE = 64


def check_format(file_format: str, probabilities: bool = False) -> str:
    """``file_format`` if it can hold the requested outputs.

    Raises:
        ValueError: an unknown format, or PNG asked to hold probabilities (floats).
    """
    if file_format not in FORMATS:
        raise ValueError(f"unknown format {file_format!r}; choose one of {', '.join(FORMATS)}")
    if file_format == "png" and probabilities:
        raise ValueError("PNG cannot hold probabilities (floats): use --format tif, npy or ome-zarr")
    return file_format


def file_names(file_format: str, kinds: list[str]) -> dict[str, str]:
    """Where each kind lives inside an output folder (OME-Zarr: paths inside one zarr)."""
    if file_format == "ome-zarr":
        inside = {"labels": "labels/classes", "instances": "labels/instances", "probabilities": ""}
        return {k: f"{OME_ZARR_NAME}/{inside[k]}".rstrip("/") for k in kinds}
    return {k: f"{k}.{file_format}" for k in kinds}


def _spatial_axes(ndim: int, axes: str | None) -> str:
    """OME axis names of a ``ndim``-D label image: the input's own letters when known."""
    named = "".join(a.lower() for a in (axes or "") if a.upper() != "C")
    if len(named) == ndim and set(named) <= set("tzyx"):
        return named
    if ndim > 4:
        raise ValueError(f"OME-Zarr holds at most 4 spatial axes (t, z, y, x); the labels have {ndim}")
    return "tzyx"[-ndim:]


def _levels(shape: tuple[int, ...]) -> tuple[int, ...]:
    factors, factor = [], 2
    while min(shape[-2:]) // factor >= MIN_LEVEL_SIDE and len(factors) < 4:
        factors.append(factor)
        factor *= 2
    return tuple(factors)


def _write_ome_zarr(
    target: Path, arrays: Mapping[str, np.ndarray], names: list[str], geometry: Mapping[str, Any]
) -> None:
    """Labels (and instances) as OME-Zarr labels, multiscale, with the pixel sizes; probabilities as the image."""
    import zarr
    from ome_zarr.writer import write_image, write_labels

    root = zarr.open_group(str(target), mode="w")
    labels = arrays["labels"]
    axes = _spatial_axes(labels.ndim, geometry.get("axes"))
    sizes = geometry.get("pixel_size") or {}
    scale = {a: float(sizes.get(a, 1.0)) for a in axes}
    if "probabilities" in arrays:
        write_image(arrays["probabilities"], root, axes="c" + axes, scale={"c": 1.0, **scale}, scale_factors=())
    properties = [{"label-value": i + 1, "class": n} for i, n in enumerate(names)]
    for kind, name in (("labels", "classes"), ("instances", "instances")):
        if kind in arrays:
            meta = {"properties": properties} if kind == "labels" else {}
            write_labels(
                arrays[kind],
                root,
                name=name,
                axes=axes,
                scale=scale,
                scaler=None,
                scale_factors=_levels(labels.shape),
                label_metadata=meta,
            )


def write_output_folder(
    folder: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    record: Mapping[str, Any],
    *,
    file_format: str,
    staging: str | os.PathLike,
    tables: Mapping[str, Any] | None = None,
    durable: bool = False,
) -> Path:
    """Write ``arrays`` (``labels`` and optionally ``instances``, ``probabilities``), ``tables``
    (name -> JSON value, each a compact ``<name>.json``, e.g. the objects table) and the record
    into ``folder`` at once, replacing the folder if it exists (it must be this package's output).
    ``durable``: flushed to the disk (a project's verified labels; see :mod:`napari_clipseg.atomic`).

    Returns:
        The folder.
    """
    folder, staging = Path(folder), Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=staging, prefix="new-"))
    try:
        files = file_names(file_format, list(arrays))
        for name, table in (tables or {}).items():
            files[name] = f"{name}.json"
            (stage / files[name]).write_text(json.dumps(table, separators=(",", ":")), encoding="utf-8")
        full = extend_record(record, files=files)
        if file_format == "ome-zarr":
            _write_ome_zarr(stage / OME_ZARR_NAME, arrays, class_names(full), full.get("image", {}))
        else:
            for kind, array in arrays.items():
                array_writer(stage / files[kind], array, full["image"].get("pixel_size"))(str(stage / files[kind]))
        json_writer(full)(str(stage / RECORD_NAME))
        swap_in_folder(stage, folder, staging / f"old-{uuid.uuid4().hex}", durable=durable)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return folder


def clear_staging(staging: str | os.PathLike) -> None:
    """Remove what an interrupted run left in the staging area (never a finished output)."""
    shutil.rmtree(staging, ignore_errors=True)


def output_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The record of a complete output folder (all its files present), None when there is none.

    Raises:
        RecordError: the folder is not this package's output (no valid ``clipseg.json``) but holds files.
    """
    folder = Path(folder)
    if not folder.exists():
        return None
    try:
        record = read_record(folder / RECORD_NAME)
    except (OSError, RecordError):
        if any(folder.iterdir()):
            raise RecordError(
                f"{folder} exists and is not a napari-clipseg output (no valid {RECORD_NAME}): it is left alone"
            ) from None
        return None
    files = record.get("files", {})
    if not all((folder / str(name)).exists() for name in files.values() if isinstance(name, str)):
        return None
    return record


def read_output(folder: str | os.PathLike, kind: str = "labels") -> Any:
    """One array of an output folder (OME-Zarr: its finest level, lazily)."""
    folder = Path(folder)
    record = read_record(folder / RECORD_NAME)
    name = record["files"].get(kind)
    if name is None:
        raise FileNotFoundError(f"{folder} has no {kind} (its record lists {', '.join(record['files'])})")
    return read_labels_file(folder / name)


def read_labels_file(path: str | os.PathLike) -> Any:
    """A labels/probabilities array from a file, or the finest level of an OME-Zarr image or label."""
    from .inputs import open_image

    return open_image(path).data
