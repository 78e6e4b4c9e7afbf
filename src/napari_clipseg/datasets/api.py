"""``segment_dataset``: pre-label many images (files, folders, globs) into an output folder.

The public entry of the dataset path (the CLI's ``batch``, the widget's "Pre-label a folder"):
it finds the inputs, runs :mod:`~napari_clipseg.datasets.steps`'s steps here or on a dask.distributed
cluster (:mod:`~napari_clipseg.datasets.cluster`), then writes the report (JSON, CSV) and, when asked, one
COCO file for the whole dataset. See docs/datasets.md for the output layout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import DEFAULT_HUB_ID
from ..io.inputs import InputFile, find_inputs
from ..io.outputs import STAGING, check_format, clear_staging, read_labels_file
from ..io.records import RECORD_NAME
from ..segmentation.model_spec import ModelSpec
from ..segmentation.options import SegmentOptions, check_distinct
from ..segmentation.results import Progress, run
from .report import REPORT_NAMES, BatchReport, Row
from .settings import ComputeSettings, OutputSettings, group_keywords
from .steps import BatchJob, ExampleFile, Plan, finish_input, finished_row, guarded, plan_input, segment_part

if TYPE_CHECKING:
    from ..segmentation.predictor import ClipSegPredictor

COCO_NAME = "coco.json"


def _local(job: BatchJob, items: list[InputFile], predictor: ClipSegPredictor) -> Generator[Progress, None, list[Row]]:
    """The steps one after another in this process; a cancel stops between parts (or, through the
    predictor's ``stop``, inside the image tower)."""
    rows = []
    for number, item in enumerate(items):
        yield Progress(number, len(items), f"{item.name} ({number + 1} of {len(items)})")
        plan = guarded(plan_input, item, job, item, predictor)
        if isinstance(plan, Plan):
            parts = []
            for planes in plan.parts:
                parts.append(guarded(segment_part, item, job, item, planes, predictor))
                if isinstance(parts[-1], Row):
                    break
                yield Progress(
                    number, len(items), f"{item.name}: planes {planes[0]}-{planes[1] - 1}" if planes else item.name
                )
            plan = guarded(finish_input, item, job, plan, parts)
        rows.append(plan)
    yield Progress(len(items), len(items), "done")
    return rows


def _unreadable(items: list[InputFile]) -> list[Row]:
    """The failed rows of the inputs that cannot be opened, up to the first that can: a resume
    whose only unfinished inputs are broken files says so without loading the model."""
    from ..io.inputs import open_image

    rows = []
    for item in items:
        opened = guarded(open_image, item, item.path)
        if not isinstance(opened, Row):
            break
        rows.append(opened)
    return rows


def check_reserved(items: list[InputFile]) -> None:
    """Refuse an input whose output folder would take the name of one of the dataset's own files
    (``report.json``, ``report.csv``, ``coco.json``, the staging folder), before any work.

    Raises:
        ValueError: naming the input and how to get past it.
    """
    reserved = {*REPORT_NAMES, COCO_NAME, STAGING}
    for item in items:
        if item.name.lower() in reserved or item.name.startswith("."):
            raise ValueError(
                f"{item.path}: its outputs would go to a folder named {item.name!r}, which the dataset's own files "
                f"use ({', '.join(sorted(reserved))}); rename the input"
            )


def check_same_classes(out_dir: Path, names: list[str], items: list[InputFile]) -> None:
    """Refuse, before any work, to replace pre-labels made for other prompts (an annotator may be
    correcting them) unless ``overwrite``; other changes (options, weights) redo an input as before.

    Raises:
        ValueError: naming the folder, both prompt lists and the two ways on.
    """
    from ..errors import RecordError
    from ..io.outputs import output_record
    from ..io.records import class_names

    for item in items:
        try:
            record = output_record(Path(out_dir) / item.name)
        except (RecordError, OSError):
            continue  # not an output: plan_input says so for that input
        if record is not None and class_names(record) != list(names):
            raise ValueError(
                f"{Path(out_dir) / item.name} holds pre-labels for other prompts ({class_names(record)}; now "
                f"{list(names)}): give another output folder, or --overwrite (overwrite=True) to replace them"
            )


def _coco(job: BatchJob, rows: list[Row]) -> Path:
    """One COCO file for every input that has outputs (done now or before)."""
    from ..io.coco import build_coco, write_coco
    from ..io.records import object_table, read_record

    def items():
        for row in rows:
            if row.status == "failed":
                continue
            folder = job.out_dir / row.name
            record = read_record(folder / RECORD_NAME)
            ids = read_labels_file(folder / record["files"]["instances"])
            yield row.name, ids[...], *object_table(folder / RECORD_NAME, record)

    return write_coco(job.out_dir / COCO_NAME, build_coco(items(), job.names))


def _execute(
    job: BatchJob, items: list[InputFile], predictor: ClipSegPredictor, compute: ComputeSettings, client: Any
) -> Generator[Progress, None, list[Row]]:
    """The rows of every input: on a cluster when one is named or asked for, else in this process.
    When no input can be opened here, none loads the model (or starts a cluster) to find that out."""
    if predictor is None and client is None and not compute.scheduler:  # the inputs are this machine's files
        unreadable = _unreadable(items)
        if len(unreadable) == len(items):
            yield Progress(len(items), len(items), "done")
            return unreadable
    if client is not None or compute.on_cluster:
        from .cluster import dask_client, run_on_cluster

        if client is not None:
            return (yield from run_on_cluster(job, items, client, compute.threads))
        with dask_client(compute.workers, compute.scheduler) as new_client:
            return (yield from run_on_cluster(job, items, new_client, compute.threads))
    from ..modeling.runtime import torch_threads

    with torch_threads(compute.threads):
        if predictor is None:
            from ..segmentation.predictor import ClipSegPredictor

            yield Progress(0, len(items), "loading the model")
            predictor = ClipSegPredictor(job.model.load(), cache_bytes=0)  # every input is new: no feature cache
        return (yield from _local(job, items, predictor))


def _model(model: Any, how: dict[str, Any]) -> tuple[ModelSpec | None, Any]:
    """A model source or spec becomes a spec (workers load it); a loaded model or predictor is used as it is."""
    if isinstance(model, str | os.PathLike | ModelSpec):
        return ModelSpec.of(model, **how), None
    if how:
        raise TypeError(f"{', '.join(sorted(how))} apply to a model given by source; this model is loaded already")
    from ..segmentation.predictor import ClipSegPredictor

    return None, model if isinstance(model, ClipSegPredictor) else ClipSegPredictor(model, cache_bytes=0)


def iter_segment_dataset(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    prompts: Sequence[str | ExampleFile] | str,
    out_dir: str | os.PathLike,
    *,
    model: Any = DEFAULT_HUB_ID,
    options: SegmentOptions | None = None,
    output: OutputSettings | None = None,
    compute: ComputeSettings | None = None,
    client: Any = None,
    **keywords: Any,
) -> Generator[Progress, None, BatchReport]:
    """Like :func:`segment_dataset`, as a generator of :class:`Progress` that returns the report
    (for GUIs: stop it between steps to cancel; finished inputs keep their outputs)."""
    started = time.perf_counter()
    how, options, output, compute = group_keywords(keywords, options, output, compute)
    prompts = [prompts] if isinstance(prompts, str | ExampleFile) else list(prompts)
    if not prompts:
        raise ValueError("give at least one prompt (a text or an ExampleFile)")
    check_format(output.file_format, output.probabilities)
    out_dir = Path(out_dir)
    items = find_inputs([inputs] if isinstance(inputs, str | os.PathLike | InputFile) else inputs, skip=out_dir)
    if (client is not None or compute.on_cluster) and not isinstance(model, str | os.PathLike | ModelSpec):
        raise ValueError("a cluster run needs the model as a hub id, folder, file or ModelSpec (workers load it)")
    check_reserved(items)
    spec, predictor = _model(model, how)
    job = BatchJob(tuple(prompts), out_dir, spec, options, output, compute.planes_per_task)
    check_distinct(job.names)
    if not output.overwrite:
        check_same_classes(out_dir, job.names, items)
    options.thresholds_for(len(prompts))
    clear_staging(job.staging)
    finished = {i: row for i, item in enumerate(items) if (row := finished_row(job, item)) is not None}
    pending = [item for i, item in enumerate(items) if i not in finished]
    if finished:
        yield Progress(len(finished), len(items), f"{len(finished)} of {len(items)} done before")
    new_rows = iter((yield from _execute(job, pending, predictor, compute, client)) if pending else [])
    rows = [finished[i] if i in finished else next(new_rows) for i in range(len(items))]
    clear_staging(job.staging)
    report = BatchReport(rows, out_dir, time.perf_counter() - started)
    if output.coco:
        report.coco = _coco(job, rows)
    report.write()
    return report


def segment_dataset(inputs: Any, prompts: Any, out_dir: str | os.PathLike, **kwargs: Any) -> BatchReport:
    """Pre-label every image of a dataset into ``out_dir`` (resumable; see docs/datasets.md).

    Args:
        inputs: Files, folders (searched recursively) and glob patterns: TIFF (stacks, OME-TIFF),
            PNG, JPEG, ``.npy``, zarr and OME-Zarr.
        prompts: Texts and :class:`~napari_clipseg.datasets.steps.ExampleFile` (a support image and mask).
        out_dir: One folder per input is written here (``out_dir/<name>/``), with the report.
        model: Hub id, folder or file (default ``CIDAS/clipseg-rd64-refined``), a
            :class:`~napari_clipseg.ModelSpec`, or a loaded model or predictor (this process only).
        options: :class:`SegmentOptions` (how each image is segmented).
        output: :class:`~napari_clipseg.datasets.settings.OutputSettings` (format, instances,
            probabilities, COCO, overwrite).
        compute: :class:`~napari_clipseg.datasets.settings.ComputeSettings` (workers, scheduler,
            threads, planes per task); ``client``: a dask Client to run on.
        **keywords: Any field of those groups or of the model spec, e.g. ``threshold=0.3``,
            ``instances=True``, ``workers=2``, ``precision="float32"``, ``decoder=FOLDER``.

    Returns:
        The :class:`~napari_clipseg.datasets.report.BatchReport` (also in ``report.json`` and ``report.csv``).
    """
    return run(iter_segment_dataset(inputs, prompts, out_dir, **kwargs))
