"""``open_project``: create an annotation project, or reopen one exactly as it was made."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..constants import DECODER_META_NAME, DEFAULT_HUB_ID
from ..errors import ProjectError, ProjectMismatchError
from ..io.inputs import find_inputs
from ..io.records import RECORD_NAME
from ..segmentation.model_spec import ModelSpec
from ..segmentation.options import SegmentOptions, check_distinct, split_prompts
from .folder import DamagedManifest, ProjectFolder, check_names, recover_staging
from .manifest import Manifest
from .project import Project
from .reconcile import load_state

logger = logging.getLogger(__name__)


def _prompt_list(prompts: Any) -> list[Any]:
    """The class prompts given (refused when there are none: a project labels at least one class)."""
    listed = split_prompts(prompts) if isinstance(prompts, str) else list(prompts)
    if not listed:
        raise ProjectError("give at least one class prompt (label 1 = the first)")
    return listed


def _describe(prompts: list[Any]) -> list[Any]:
    return [p if isinstance(p, str) else p.describe() for p in prompts]


def _prompts_from(described: list[Any]) -> list[Any]:
    from ..datasets.steps import ExampleFile

    return [
        p if isinstance(p, str) else ExampleFile(Path(p["image"]["path"]), Path(p["mask"]["path"]), p.get("name"))
        for p in described
    ]


def _images(images: Any, root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's image entries: those it had (with what it knew of them), then new ones
    found in ``images`` (file order), by absolute path. An image whose file is gone is found again
    here: by name when its folder moved (the content check at load tells whether it is the same
    image), or by content when its file was renamed. Dropped names are never added again."""
    from ..io.inputs import content_digest
    from .sources import Pin

    entries = [dict(entry) for entry in manifest.get("images", [])]
    if images is None:
        return entries
    sources = [images] if isinstance(images, str | os.PathLike) else list(images)
    by_name = {entry["name"]: entry for entry in entries}
    known = {os.path.abspath(entry["path"]) for entry in entries}
    dropped = set(manifest.get("dropped", []))
    pinned_gone = [
        (entry, pin)
        for entry in entries
        if not os.path.exists(entry["path"]) and (pin := Pin.from_dict(entry.get("source"))) is not None
    ]
    gone = {pin.digest: entry for entry, pin in pinned_gone}
    sizes = {pin.bytes for _, pin in pinned_gone}
    for found in find_inputs(sources, skip=root):
        path = os.path.abspath(found.path)
        had = by_name.get(found.name)
        if had is not None and os.path.abspath(had["path"]) != path:
            if os.path.exists(had["path"]):
                raise ProjectMismatchError(
                    f"{found.name} is {had['path']} in this project but {found.path} now, and both exist: give "
                    "the images it was made with"
                )
            had["path"] = path  # its folder moved: relocated (the content check at load decides)
            known.add(path)
        elif had is None and path not in known and found.name not in dropped:
            if gone and os.path.isfile(path) and os.path.getsize(path) in sizes:
                renamed = gone.pop(content_digest(path), None)
                if renamed is not None:  # the same bytes under another name: the image was renamed
                    renamed["path"] = path
                    known.add(path)
                    continue
            entry = {"name": found.name, "path": path}
            entries.append(entry)
            by_name[found.name] = entry
            known.add(path)
    return entries


def _decoders_on_disk(project_folder: ProjectFolder) -> dict[str, Any]:
    """The decoders a project learnt, read from its folder (a manifest rebuilt after it was lost)."""
    decoders = []
    for meta_path in sorted(project_folder.decoders.glob(f"*/{DECODER_META_NAME}")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        metrics, images = meta.get("metrics", {}), meta.get("images", {})
        decoders.append(
            {
                "folder": meta_path.parent.relative_to(project_folder.root).as_posix(),
                "images": [*images.get("training", []), *images.get("held_out", [])],
                "iou": metrics.get("iou"),
                "base_iou": metrics.get("base_iou"),
                "held_out": images.get("held_out", []),
                "threshold": meta.get("threshold"),
            }
        )
    return {"decoders": decoders, "decoder": decoders[-1]["folder"] if decoders else None}


def _check_rebuild(project_folder: ProjectFolder, classes: list[str], spec: ModelSpec) -> None:
    """Before a lost or damaged manifest is rebuilt from what was given: the verified labels must
    have been made for these classes, and the pre-labels by this model (never relabel
    verified work silently).

    Raises:
        ProjectMismatchError: naming what differs and how to rebuild it.
    """
    from ..io.outputs import output_record
    from ..io.records import class_names

    def records(folder: Path):
        for record_path in sorted(folder.glob(f"**/{RECORD_NAME}"))[:1000]:
            try:
                yield record_path.parent, output_record(record_path.parent) or {}
            except Exception:  # noqa: BLE001 - an unreadable record is the state's to say
                continue

    how = "give the prompts and the model the project was made with to rebuild its manifest"
    for place, record in records(project_folder.verified):
        recorded = class_names(record) if record else None
        if recorded and recorded != classes:
            raise ProjectMismatchError(
                f"{project_folder.root}: the verified labels of {place.name} are of {', '.join(recorded)}, "
                f"not {', '.join(classes)}: {how}"
            )

    for place, record in records(project_folder.prelabels):
        source = (record.get("model") or {}).get("source")
        if isinstance(source, str) and ModelSpec(source).absolute().source != spec.source:  # spec is absolute
            raise ProjectMismatchError(
                f"{project_folder.root}: the pre-label of {place.name} was made by {source}, not {spec.source}: {how}"
            )


def _never_used(project_folder: ProjectFolder, manifest: dict[str, Any]) -> bool:
    """Whether a project holds nothing yet (no pre-label, verified image, decoder or skip): a first
    try that failed, say offline, whose settings the next try may change."""
    root = project_folder.root
    used = (
        any(project_folder.prelabels.glob("*"))
        or any(project_folder.verified.glob("*"))
        or any(project_folder.decoders.glob("*"))
        or any(project_folder.features.glob("*"))
        or any(entry.get("skipped") for entry in manifest.get("images", []) if isinstance(entry, dict))
        or bool(manifest.get("skipped"))
    )
    return not used and root.is_dir()


def _checked_auto_learn(auto_learn: Any) -> int:
    if isinstance(auto_learn, bool) or not isinstance(auto_learn, int) or auto_learn < 0:
        raise ValueError(f"auto_learn must be 0 (off) or a number of verified images; got {auto_learn!r}")
    return auto_learn


def _check_same(root: Path, what: str, was: Any, now: Any) -> None:
    if now is not None and was != now:
        raise ProjectMismatchError(
            f"{root} was made with {what} {was}; got {now}: use another project folder, or the same {what}"
        )


def open_project(
    images: Sequence[str | os.PathLike] | str | os.PathLike | None,
    folder: str | os.PathLike,
    prompts: Sequence[Any] | str | None = None,
    model: ModelSpec | str | os.PathLike | None = None,
    *,
    options: SegmentOptions | None = None,
    read_only: bool = False,
    compute: Any = None,
    auto_learn: int = 0,
    store_bytes: int | None = None,
) -> Project:
    """Create the annotation project in ``folder``, or reopen it.

    Args:
        images: Files, folders and globs (as ``napari-clipseg batch`` takes them); None to reopen
            with the images it has. Images found later in the same sources are added.
        folder: The project folder: it holds all of the project's state.
        prompts: Class prompts (texts, or :class:`~napari_clipseg.datasets.steps.ExampleFile`);
            label ``i`` is ``prompts[i - 1]``. None to reopen with the project's own.
        model: A model source or :class:`~napari_clipseg.ModelSpec` (default
            ``CIDAS/clipseg-rd64-refined``); None to reopen with the project's own.
        options: How images are segmented (:class:`SegmentOptions`); None: the project's own, or defaults.
        read_only: Open without taking the folder (another window may hold it); nothing can change.
        compute: :class:`~napari_clipseg.datasets.settings.ComputeSettings` for pre-labelling
            (workers, a scheduler: a dask cluster).
        auto_learn: Learn after every this many verified images (0: only when asked; see
            :attr:`Project.auto_learn`).
        store_bytes: The budget of the project's feature store (kept with the project; None: as
            it was, or :data:`~napari_clipseg.learning.feature_store.DEFAULT_STORE_BYTES`).

    Raises:
        ProjectError: not a project, and nothing to make one from.
        ProjectLockedError: another window or process has the folder open.
        ProjectMismatchError: other prompts, model, options or images than the project was made with.
    """
    root = Path(folder)
    project_folder = ProjectFolder(root)
    new_folder = not root.exists()
    _checked_auto_learn(auto_learn)
    if prompts is not None:
        _prompt_list(prompts)  # refused before the folder is made
    if not read_only:
        project_folder.lock()
    try:
        project = _open(project_folder, images, prompts, model, options, read_only, compute, store_bytes)
        project.auto_learn = auto_learn
        return project
    except BaseException:
        project_folder.unlock()
        if new_folder:  # a refused creation leaves nothing behind (only this call made the folder)
            shutil.rmtree(root, ignore_errors=True)
        raise


def _open(
    project_folder: ProjectFolder,
    images: Any,
    prompts: Any,
    model: Any,
    options: SegmentOptions | None,
    read_only: bool,
    compute: Any,
    store_bytes: int | None,
) -> Project:
    root = project_folder.root
    if not read_only:
        recover_staging(project_folder)  # before the state is read: a recovered image is verified
    given = _prompt_list(prompts) if prompts is not None else None
    spec = ModelSpec.of(model) if model is not None else None
    offered = images is not None and given is not None and not read_only
    try:
        data = project_folder.read_manifest()
    except DamagedManifest as e:
        if not offered:
            raise
        logger.warning("ignoring the damaged %s (%s): rebuilding it from the folder and what was given", e.path, e.why)
        data = None
    if data is not None and offered and _never_used(project_folder, data):
        data = None  # made, then nothing done with it (a first try that failed): take the new settings
    if data is None:
        if not offered:
            raise ProjectError(f"{root} is not a napari-clipseg project: give images and prompts to create one")
        spec = (spec or ModelSpec(DEFAULT_HUB_ID)).absolute()  # the same model from any working folder
        _check_rebuild(project_folder, [p if isinstance(p, str) else p.label for p in given], spec)
        data = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "images": [],
            "prompts": _describe(given),
            "model": spec.to_dict(),
            "options": (options or SegmentOptions()).to_dict(),
            **_decoders_on_disk(project_folder),
        }
    _check_same(root, "prompts", data["prompts"], _describe(given) if given is not None else None)
    was = _same_model(root, ModelSpec.from_dict(data["model"]).absolute(), spec)
    _check_same(root, "options", data["options"], options.to_dict() if options is not None else None)
    prompt_objects = _prompts_from(data["prompts"])
    check_distinct([p if isinstance(p, str) else p.label for p in prompt_objects])
    data["images"] = _images(images, root, data)
    check_names([entry["name"] for entry in data["images"]], str(root))
    if store_bytes is not None:
        from ..learning.feature_store import check_budget

        data["store_bytes"] = check_budget(store_bytes)
    loaded = load_state(project_folder, data, Manifest.from_dict(data), read_only=read_only)
    options = SegmentOptions.from_dict(data["options"])
    return Project(loaded.state, prompt_objects, was, options, compute=compute, repairs=loaded.repairs)


def _same_model(root: Path, was: ModelSpec, spec: ModelSpec | None) -> ModelSpec:
    """The project's model, on the device and at the precision asked for (this machine's choice);
    ``spec`` may name a decoder the project learnt (the dock's Segment mode runs it): the same model.

    Raises:
        ProjectMismatchError: ``spec`` names other weights than the project was made with.
    """
    if spec is None:
        return was
    spec = spec.absolute()  # ./model/, a symbolic link to it, or its absolute path: one model
    learnt = ProjectFolder(root).decoders.resolve()
    if spec.decoder is not None and learnt in Path(spec.decoder).parents:  # a decoder this project learnt
        spec = spec.replace(decoder=was.decoder)  # on the base it was made with (the dock runs it)
    same_weights = was.replace(device=spec.device, precision=spec.precision)
    if spec != same_weights:
        differences = "; ".join(same_weights.differences(spec))
        raise ProjectMismatchError(f"{root} was made with another model ({differences}): use another project folder")
    return spec
