"""The one provenance record: how a label image was made, built, written and read back here only.

Every output of the package carries the same record (schema in ``docs/records.md``): the CLI's
``<labels>.json`` sidecar, the napari writer's sidecar, ``clipseg.json`` of an exported mask
folder, and the ``clipseg`` entry of a result layer's metadata. :func:`read_record` validates a
file before anything trusts it, so a batch resume or a re-import never acts on a damaged record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..errors import RecordError

SCHEMA = "napari-clipseg.record"
SCHEMA_VERSION = 1

#: Keys every record has, with the JSON types they hold (None allowed where listed).
_FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (str,),
    "schema_version": (int,),
    "napari_clipseg_version": (str,),
    "created": (str,),
    "classes": (list,),
    "model": (dict, type(None)),
    "options": (dict, type(None)),
    "mode": (str, type(None)),
    "image": (dict,),
    "planes": (list, type(None)),
    "example": (dict, type(None)),
    "edited": (bool,),
    "files": (dict,),
}


#: Optional sections, each written by one part of the package and validated like the fields above.
_SECTIONS: dict[str, tuple[type, ...]] = {
    "counts": (dict,),  # pixels per class name (datasets)
    "batch": (dict,),  # the resume key, the input and its fingerprint (datasets)
    "instance_classes": (list,),  # class value of each instance id 1..N (exported masks; batch: objects file)
    "instance_count": (int,),  # how many instances the objects file describes (batch outputs)
    "instance_scores": (list, type(None)),  # mean probability of each instance
    "boxes": (list,),  # regions of interest a run was limited to [y0, y1, x0, x1]
    "layer": (str, type(None)),  # the napari layer it was saved from
    "project": (dict,),  # the annotation loop's entry: status, image, who verified (project)
}

#: The record file of an output folder (batch outputs, exported masks, project images).
RECORD_NAME = "clipseg.json"

#: The ``files`` entry of a batch output's per-object table (class value and score of each
#: instance id): compact ``objects.json`` beside the record, so the record stays small however
#: many objects an image holds.
OBJECTS_KIND = "objects"


def object_table(record_path: str | os.PathLike, record: Mapping[str, Any]) -> tuple[list[int], list[float] | None]:
    """Each instance's class value and score (None when not scored): from the output's objects
    file, or from the record's own ``instance_classes`` section (exported masks, older records).

    Raises:
        RecordError: the objects file is damaged or does not fit the record.
    """
    if "instance_classes" in record:
        return list(record["instance_classes"]), record.get("instance_scores")
    name = record.get("files", {}).get(OBJECTS_KIND)
    if not name:
        return [], None
    path = record_file(record_path, name)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        classes, scores = table["classes"], table.get("scores")
        valid = isinstance(classes, list) and (scores is None or len(scores) == len(classes))
    except (OSError, ValueError, TypeError, KeyError):
        valid = False
    if not valid or len(classes) != record.get("instance_count", len(classes)):
        raise RecordError(f"{path} is damaged or does not fit {record_path}")
    return [int(c) for c in classes], scores


def class_table(names: Sequence[str]) -> list[dict[str, Any]]:
    """``[{"value": 1, "name": names[0]}, ...]``: label value ``i + 1`` is class ``names[i]`` (0 is background)."""
    return [{"value": i + 1, "name": str(name)} for i, name in enumerate(names)]


def class_names(record: Mapping[str, Any]) -> list[str]:
    """The class names of a record, in label order."""
    return [c["name"] for c in sorted(record["classes"], key=lambda c: c["value"])]


def build_record(
    classes: Sequence[str],
    *,
    model: Any = None,
    options: Any = None,
    mode: str | None = None,
    image: Mapping[str, Any] | None = None,
    planes: Sequence[Sequence[int]] | None = None,
    example: Mapping[str, Any] | None = None,
    edited: bool = False,
    files: Mapping[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A new record (validated; ``sections`` are the optional sections of ``docs/records.md``).

    Args:
        classes: Class names in label order.
        model: A :class:`~napari_clipseg.modeling.ClipSeg` (its ``info`` is recorded), its entry
            (``model.info.to_dict()``), or None.
        options: The run's :class:`~napari_clipseg.segmentation.options.SegmentOptions`, or None.
        mode: The mode the planes were read in (``"auto"`` resolved).
        image: ``{"name": ..., "shape": [...]}`` of the segmented image (other keys allowed).
        planes: The leading-axis indices that were segmented (None: not known).
        example: How a visual prompt was given (layer, regions, weight, ...), or None.
        edited: Whether a person changed the labels after the model made them.
        files: Names of the files written with it (``labels``, ``masks``, ``probabilities``).
    """
    from .. import __version__

    record = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "napari_clipseg_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "classes": class_table(classes),
        "model": _model_entry(model),
        "options": options.to_dict() if options is not None else None,
        "mode": mode,
        "image": dict(image or {}),
        "planes": [list(p) for p in planes] if planes is not None else None,
        "example": dict(example) if example is not None else None,
        "edited": bool(edited),
        "files": dict(files or {}),
    }
    return extend_record(record, **sections)


def extend_record(record: Mapping[str, Any], **sections: Any) -> dict[str, Any]:
    """``record`` with fields or optional sections set (a new dict), validated: the one way a
    record changes after it was built.

    Raises:
        RecordError: an unknown section, or a value of the wrong type.
    """
    unknown = sorted(set(sections) - set(_FIELDS) - set(_SECTIONS))
    if unknown:
        raise RecordError(f"unknown record section(s) {', '.join(unknown)}; known: {', '.join(sorted(_SECTIONS))}")
    return validate_record({**record, **sections})


def _model_entry(model: Any) -> dict[str, Any] | None:
    """A model's entry: its ``info`` (a ClipSeg), an entry made earlier (a dict), or None."""
    if model is None or isinstance(model, Mapping):
        return dict(model) if model is not None else None
    return model.info.to_dict()


def validate_record(record: Any, source: str = "record") -> dict[str, Any]:
    """``record`` if it follows the schema (newer minor fields are kept).

    Raises:
        RecordError: naming ``source`` and the first problem found.
    """
    if not isinstance(record, Mapping):
        raise RecordError(f"{source} is not a JSON object")
    if record.get("schema") != SCHEMA:
        raise RecordError(f"{source} is not a napari-clipseg record (schema {record.get('schema')!r})")
    version = record.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise RecordError(
            f"{source} has schema_version {version!r}; this napari-clipseg reads up to {SCHEMA_VERSION}: update it"
        )
    for key, types in _FIELDS.items():
        if key not in record:
            raise RecordError(f"{source} lacks the field {key!r}")
        if not isinstance(record[key], types) or (bool in types) != isinstance(record[key], bool):
            raise RecordError(f"{source}: field {key!r} has the wrong type ({type(record[key]).__name__})")
    for key, types in _SECTIONS.items():
        if key in record and not isinstance(record[key], types):
            raise RecordError(f"{source}: section {key!r} has the wrong type ({type(record[key]).__name__})")
    values = [c.get("value") if isinstance(c, Mapping) else None for c in record["classes"]]
    if any(not isinstance(c, Mapping) or not isinstance(c.get("name"), str) for c in record["classes"]) or sorted(
        values
    ) != list(range(1, len(values) + 1)):
        raise RecordError(f"{source}: classes must be {{'value': 1.., 'name': text}} with values 1..N")
    return dict(record)


def write_record(path: str | os.PathLike, record: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Validate ``record`` and write it as JSON, atomically (never over a file unless ``overwrite``)."""
    return write_json(path, validate_record(record), overwrite=overwrite)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a record file.

    Raises:
        RecordError: not JSON, or not a valid record (the message names the file).
        OSError: the file cannot be read.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path} is not valid JSON ({e})") from None
    return validate_record(record, str(path))


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the record of a single labels file lives: ``<file>.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def locate_record(path: str | os.PathLike) -> Path | None:
    """The record that describes ``path``: an output folder's ``clipseg.json``, the sidecar
    ``<file>.json`` of a labels file, or the record of the folder a file lies in; None if none."""
    path = Path(path)
    if path.is_dir() and (path / RECORD_NAME).is_file():
        return path / RECORD_NAME
    if path.is_file() and sidecar_path(path).is_file():
        return sidecar_path(path)
    if (path.parent / RECORD_NAME).is_file() and path.name != RECORD_NAME:
        return path.parent / RECORD_NAME
    return None


def record_file(record_path: str | os.PathLike, name: str) -> Path:
    """The file a record names (``files.labels`` ...), which must lie in the record's own folder.

    Raises:
        RecordError: the name leads outside that folder (``../secret.tif``, an absolute path).
    """
    folder = Path(record_path).parent.resolve()
    target = (folder / name).resolve()
    if target.parent != folder and folder not in target.parents:
        raise RecordError(f"{record_path} names {name!r}, outside its own folder: not opened")
    return folder / name
