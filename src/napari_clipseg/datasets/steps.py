"""Pre-label a dataset: every input through the widget's pipeline, resumable, on one machine or a cluster.

A run is three kinds of steps, the same whether they run here one after another or as tasks on a
dask.distributed cluster (:mod:`~napari_clipseg.datasets.cluster`), so both give byte-identical files:

0. :func:`finished_row`, before any model loads: skip an input whose record says the same request
   (model spec and its files, prompts, options, input) made its outputs;
1. :func:`plan_input`: fingerprint the input with the model, prompts and options; skip it when its
   output folder already holds a matching record; else split a long stack into parts of planes;
2. :func:`segment_part`: :func:`~napari_clipseg.segmentation.pipeline.iter_segment` on those planes, with the
   intensity range of the *whole* image and whole batches of planes, so a split stack gives the
   same numbers as one run over all of it;
3. :func:`finish_input`: join the parts, make instances and scores, and write the output folder
   at once (:mod:`~napari_clipseg.io.outputs`).

A failing input becomes a ``failed`` row of the report and never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import is_cancellation
from ..io.export import read_array
from ..io.inputs import InputFile, OpenedImage, fingerprint, open_image
from ..io.outputs import STAGING, output_record, write_output_folder
from ..io.records import OBJECTS_KIND
from ..segmentation.model_spec import ModelSpec
from ..segmentation.options import SegmentOptions
from ..segmentation.postprocess import InstanceSettings, instance_scores
from .report import Row
from .settings import OutputSettings

if TYPE_CHECKING:
    from ..segmentation.predictor import ClipSegPredictor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExampleFile:
    """A visual prompt from files: a support ``image`` and its ``mask`` (non-zero = the example)."""

    image: Path
    mask: Path
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or Path(self.mask).stem

    def prompt(self) -> Any:
        from ..segmentation.visual import VisualPrompt

        return VisualPrompt(read_array(self.mask), image=read_array(self.image), name=self.label)

    def describe(self) -> dict[str, Any]:
        files = {"image": self.image, "mask": self.mask}
        return {"name": self.label, **{k: {"path": str(v), **fingerprint(v)} for k, v in files.items()}}


def parse_example(text: str) -> ExampleFile:
    """``"IMAGE:MASK"`` (``"IMAGE:MASK=NAME"`` names the class) as an :class:`ExampleFile`.

    Raises:
        ValueError: not two existing files separated by a colon.
    """
    text, _, name = text.partition("=")
    for i, char in enumerate(text):  # the first colon whose left side is a file (drive letters stay)
        if char == ":" and Path(text[:i]).is_file():
            image, mask = Path(text[:i]), Path(text[i + 1 :])
            if not mask.is_file():
                raise ValueError(f"--example {text}: mask file {mask} not found")
            return ExampleFile(image, mask, name.strip() or None)
    raise ValueError(f"--example must be IMAGE:MASK with two existing files; got {text!r}")


@dataclass(frozen=True)
class BatchJob:
    """Everything a worker needs for any input of a run (small and picklable)."""

    prompts: tuple[str | ExampleFile, ...]
    out_dir: Path
    model: ModelSpec | None
    options: SegmentOptions
    output: OutputSettings = field(default_factory=OutputSettings)
    planes_per_task: int = 16

    @property
    def names(self) -> list[str]:
        return [p if isinstance(p, str) else p.label for p in self.prompts]

    @property
    def staging(self) -> Path:
        return self.out_dir / STAGING

    @property
    def instances(self) -> InstanceSettings | None:
        return self.output.instances

    def prompt_objects(self) -> list[Any]:
        return [p if isinstance(p, str) else p.prompt() for p in self.prompts]

    def settings(self) -> dict[str, Any]:
        """What decides the outputs besides the model and the input (part of the resume key)."""
        prompts = [p if isinstance(p, str) else p.describe() for p in self.prompts]
        instances = asdict(self.instances) if self.instances else None
        out = self.output
        output = {"format": out.file_format, "instances": instances, "probabilities": out.probabilities}
        return {"prompts": prompts, "options": self.options.to_dict(), "output": output}


@dataclass(frozen=True)
class Plan:
    """An input to segment: its resume key (and the fingerprint in it), the model's description,
    the image's record entry, and its parts (plane ranges)."""

    item: InputFile
    key: str
    fingerprint: dict[str, int]
    model_info: dict[str, Any]
    image: dict[str, Any]
    parts: tuple[tuple[int, int] | None, ...]
    started: float


@dataclass(frozen=True)
class Part:
    """The probabilities and labels of one part of an input (all of it for ``planes=None``)."""

    planes: tuple[int, int] | None
    probabilities: np.ndarray
    labels: np.ndarray
    mode: str
    plane_list: list[tuple[int, ...]]


# --- the three steps ----------------------------------------------------------------------------


def resume_key(job: BatchJob, model_info: dict[str, Any], input_fingerprint: dict[str, int]) -> str:
    """Changes when anything that decides the input's outputs changes: the weights (by hash),
    prompts, options, output settings, or the input file (size and modification time)."""
    # local paths differ between machines; whether the precision was checked now or before does not matter
    weights = {k: v for k, v in model_info.items() if k not in ("files", "precision_checked")}
    payload = {"model": weights, **job.settings(), "input": input_fingerprint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _files_now(model_entry: dict[str, Any], spec: ModelSpec) -> list[dict[str, Any]] | None:
    """Size and time of the files a model was read from (weights, decoder), as they are now; None
    when one is gone or, for a hub source, the cache no longer resolves to it (a newer revision)."""
    paths = [str(f) for f in model_entry.get("files") or []]
    decoder = (model_entry.get("decoder") or {}).get("path")
    if model_entry.get("kind") == "hub":  # torch-free: a resume never imports it
        from ..paths import cached_file

        try:
            if any(cached_file(spec.source, Path(f).name, spec.revision) != f for f in paths):
                return None
        except Exception:  # noqa: BLE001 - an id the cache cannot hold is simply not cached
            return None
    try:
        return [{"path": p, **fingerprint(p)} for p in [*paths, *([decoder] if decoder else [])]]
    except OSError:
        return None


def request_key(job: BatchJob, model_entry: dict[str, Any], input_fingerprint: dict[str, int]) -> str | None:
    """What was asked, checkable without loading the model: the model spec, the size and time of
    the files its weights and decoder were read from, prompts, options, output settings and the
    input. Equal keys mean the same run again, so a resume can skip the input before any model
    loads; None when it cannot be told (a model given loaded, a file gone)."""
    files = _files_now(model_entry, job.model) if job.model is not None else None
    if files is None:
        return None
    payload = {"spec": job.model.to_dict(), "files": files, **job.settings(), "input": input_fingerprint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _skipped(item: InputFile, job: BatchJob, record: dict[str, Any]) -> Row:
    counts = {str(k): int(v) for k, v in record.get("counts", {}).items()}
    count = record.get("instance_count", len(record.get("instance_classes", []))) if job.instances else None
    return Row(str(item.path), item.name, "skipped", pixels=counts, instances=count)


def finished_row(job: BatchJob, item: InputFile) -> Row | None:
    """The ``skipped`` row of an input whose output folder holds the same request's outputs
    (:func:`request_key`), told from the record alone; None when the model is needed to tell."""
    if job.model is None or job.output.overwrite:
        return None
    try:
        record = output_record(job.out_dir / item.name)
        batch = record.get("batch", {}) if record is not None else {}
        if not batch.get("request") or not isinstance(record.get("model"), dict):
            return None
        if batch["request"] != request_key(job, record["model"], fingerprint(item.path)):
            return None
    except Exception:  # noqa: BLE001 - anything unclear is left to plan_input, which says what it is
        return None
    return _skipped(item, job, record)


def input_options(options: SegmentOptions, opened: OpenedImage) -> SegmentOptions:
    """The options for one input: a channel axis the file names (OME ``C``, TIFF samples) is used
    as channels, unless ``rgb`` is False (not colour: every leading axis is planes)."""
    axis = opened.channel_axis
    if axis is not None and options.channel_axis is None and options.rgb is None:
        return options.replace(channel_axis=axis)
    return options


def _parts(shape: tuple[int, ...], options: SegmentOptions, planes_per_task: int) -> tuple[tuple[int, int] | None, ...]:
    """Plane ranges of a 3D stack (whole batches each); ``(None,)`` when the input is one part."""
    batch = options.batch_size
    size = max(batch, -(-planes_per_task // batch) * batch)
    if options.planes is not None or options.channel_axis is not None or len(shape) != 3 or shape[0] <= size:
        return (None,)
    return tuple((start, min(start + size, shape[0])) for start in range(0, shape[0], size))


def plan_input(job: BatchJob, item: InputFile, predictor: ClipSegPredictor) -> Plan | Row:
    """Skip (a ``skipped`` row), refuse (a ``failed`` row) or plan the segmentation of one input."""
    from ..segmentation.pipeline import plan_planes

    started = time.time()  # wall clock: the input may finish in another process or on another machine
    model_info, stamp = predictor.model.info.to_dict(), fingerprint(item.path)
    key = resume_key(job, model_info, stamp)
    record = output_record(job.out_dir / item.name)
    if record is not None and not job.output.overwrite and record.get("batch", {}).get("key") == key:
        return _skipped(item, job, record)
    opened = open_image(item.path)
    options = input_options(job.options, opened)
    geometry = plan_planes(opened.data, options)
    image = {"name": str(item.path), "shape": list(np.shape(opened.data)), "axes": opened.axes}
    image["pixel_size"] = opened.pixel_size
    parts = _parts(geometry.spatial, options, job.planes_per_task)
    return Plan(item, key, stamp, model_info, image, parts, started)


def segment_part(job: BatchJob, item: InputFile, planes: tuple[int, int] | None, predictor: ClipSegPredictor) -> Part:
    """Segment one part of an input (see the module docstring for why parts agree with one run)."""
    from ..segmentation.pipeline import iter_segment, plan_planes
    from ..segmentation.results import run
    from ..segmentation.transforms import intensity_range

    opened = open_image(item.path)
    options = input_options(job.options, opened)
    data = opened.data
    if planes is not None:
        value_range = options.intensity or intensity_range(plan_planes(data, options).data, predictor.percentiles)
        options = options.replace(intensity=value_range) if value_range is not None else options
        data = data[planes[0] : planes[1]]
    result = run(iter_segment(data, job.prompt_objects(), predictor, options))
    return Part(planes, result.probabilities, result.labels, result.mode, result.planes)


def _joined(parts: list[Part]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ...]]]:
    if len(parts) == 1:
        return parts[0].probabilities, parts[0].labels, parts[0].plane_list
    probabilities = np.concatenate([p.probabilities for p in parts], axis=1)
    labels = np.concatenate([p.labels for p in parts], axis=0)
    planes = [(p.planes[0] + index[0],) for p in parts for index in p.plane_list]
    return probabilities, labels, planes


def finish_input(job: BatchJob, plan: Plan, parts: list[Part | Row]) -> Row:
    """Join the parts, make instances, and write the input's output folder at once; a part that
    failed (a row) fails the input, and nothing is written."""
    from ..io.records import build_record

    failed = next((p for p in parts if isinstance(p, Row)), None)
    if failed is not None:
        return failed
    probabilities, labels, planes = _joined(parts)
    names = job.names
    arrays: dict[str, np.ndarray] = {"labels": labels}
    counts = np.bincount(labels.ravel(), minlength=len(names) + 1)[1:]
    sections: dict[str, Any] = {
        "model": plan.model_info,
        "counts": {n: int(c) for n, c in zip(names, counts, strict=True)},
        "batch": {"key": plan.key, "input": str(plan.item.path), **plan.fingerprint},
    }
    request = request_key(job, plan.model_info, plan.fingerprint)
    if request is not None:
        sections["batch"]["request"] = request
    tables = {}
    if job.instances is not None:
        objects = job.instances.apply(labels, probabilities)
        arrays["instances"] = objects.ids
        sections["instance_count"] = len(objects.classes)
        tables[OBJECTS_KIND] = {
            "classes": [int(c) for c in objects.classes],
            "scores": instance_scores(objects, probabilities),
        }
    planes = None if planes == [()] else planes
    record = build_record(names, options=job.options, mode=parts[0].mode, image=plan.image, planes=planes, **sections)
    if job.output.probabilities:
        arrays["probabilities"] = probabilities
    write_output_folder(
        job.out_dir / plan.item.name,
        arrays,
        record,
        file_format=job.output.file_format,
        staging=job.staging,
        tables=tables,
    )
    seconds = time.time() - plan.started
    count = record["instance_count"] if job.instances is not None else None
    return Row(str(plan.item.path), plan.item.name, "done", seconds=seconds, pixels=record["counts"], instances=count)


def failed_row(item: InputFile, error: BaseException) -> Row:
    """The row of an input whose step raised ``error`` (its message, one line)."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return Row(str(item.path), item.name, "failed", error=message[:300])


def guarded(step: Any, item: InputFile, *args: Any) -> Any:
    """``step(*args)``, or the failed row of ``item`` when it raises (a cancel still propagates)."""
    try:
        return step(*args)
    except Exception as e:
        if is_cancellation(e):
            raise
        logger.debug("%s failed", item.path, exc_info=True)
        return failed_row(item, e)
