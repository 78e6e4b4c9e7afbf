"""``segment_dataset``: pre-label many images (files, folders, globs) into an output folder.

The public entry of the dataset path (the CLI's ``batch``, the widget's "Pre-label a folder"):
it finds the inputs, runs :mod:`~napari_clipseg.batch`'s steps here or on a dask.distributed
cluster (:mod:`~napari_clipseg.cluster`), then writes the report (JSON, CSV) and, when asked, one
COCO file for the whole dataset. See docs/datasets.md for the output layout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from .batch import BatchJob, ExampleFile, ModelSpec, Plan, finish_input, guarded, plan_input, segment_part
from .batch_report import BatchReport, Row
from .constants import DEFAULT_HUB_ID
from .inputs import InputFile, find_inputs
from .masks import RECORD_NAME
from .options import SegmentOptions, check_distinct
from .outputs import check_format, clear_staging, read_labels_file
from .postprocess import InstanceSettings
from .results import Progress, run

COCO_NAME = "coco.json"


def _local(job: BatchJob, items: list[InputFile], predictor: Any) -> Generator[Progress, None, list[Row]]:
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


def _coco(job: BatchJob, rows: list[Row]) -> Path:
    """One COCO file for every input that has outputs (done now or before)."""
    from .coco import build_coco, write_coco
    from .records import read_record

    def items():
        for row in rows:
            if row.status == "failed":
                continue
            folder = job.out_dir / row.name
            record = read_record(folder / RECORD_NAME)
            ids = read_labels_file(folder / record["files"]["instances"])
            yield row.name, ids[...], record.get("instance_classes", []), record.get("instance_scores")

    return write_coco(job.out_dir / COCO_NAME, build_coco(items(), job.names))


def _execute(
    job: BatchJob, items: list[InputFile], predictor: Any, *, client: Any, workers: int, scheduler: str | None
) -> Generator[Progress, None, list[Row]]:
    """The rows of every input: on a cluster when one is named or asked for, else in this process."""
    if client is not None or workers or scheduler:
        from .cluster import dask_client, run_on_cluster

        if client is not None:
            return (yield from run_on_cluster(job, items, client))
        with dask_client(workers, scheduler) as new_client:
            return (yield from run_on_cluster(job, items, new_client))
    import torch

    threads = torch.get_num_threads()
    try:
        if predictor is None:
            from .batch import predictor_for

            predictor = predictor_for(job.model)
        return (yield from _local(job, items, predictor))
    finally:
        torch.set_num_threads(threads)  # the caller's setting, whatever this run used


def _model(model: Any, **how: Any) -> tuple[ModelSpec | None, Any]:
    """A model source becomes a spec (workers load it); a loaded model or predictor is used as it is."""
    if isinstance(model, str | os.PathLike):
        return ModelSpec(str(model), **how), None
    from .predictor import ClipSegPredictor

    return None, model if isinstance(model, ClipSegPredictor) else ClipSegPredictor(model, cache_bytes=0)


def iter_segment_dataset(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    prompts: Sequence[str | ExampleFile] | str,
    out_dir: str | os.PathLike,
    *,
    model: Any = DEFAULT_HUB_ID,
    options: SegmentOptions | None = None,
    file_format: str = "tif",
    instances: InstanceSettings | bool | None = None,
    probabilities: bool = False,
    coco: bool = False,
    overwrite: bool = False,
    workers: int = 0,
    scheduler: str | None = None,
    client: Any = None,
    device: str = "cpu",
    precision: str | None = None,
    backbone: str | None = None,
    threads: int | None = None,
    decoder: str | os.PathLike | None = None,
    planes_per_task: int = 16,
    **changes: Any,
) -> Generator[Progress, None, BatchReport]:
    """Like :func:`segment_dataset`, as a generator of :class:`Progress` that returns the report
    (for GUIs: stop it between steps to cancel; finished inputs keep their outputs)."""
    started = time.perf_counter()
    options = (options or SegmentOptions()).replace(**changes)
    prompts = [prompts] if isinstance(prompts, str | ExampleFile) else list(prompts)
    if instances is True or (coco and not instances):
        instances = InstanceSettings()
    if not prompts:
        raise ValueError("give at least one prompt (a text or an ExampleFile)")
    check_format(file_format, probabilities)
    out_dir = Path(out_dir)
    items = find_inputs([inputs] if isinstance(inputs, str | os.PathLike) else inputs, skip=out_dir)
    if (client is not None or workers or scheduler) and not isinstance(model, str | os.PathLike):
        raise ValueError("a cluster run needs the model as a hub id, folder or file (workers load it themselves)")
    how = {"backbone": backbone, "device": device, "precision": precision, "threads": threads}
    spec, predictor = _model(model, **how, decoder=str(decoder) if decoder else None)
    output = {"file_format": file_format, "instances": instances or None, "probabilities": probabilities}
    job = BatchJob(
        tuple(prompts), out_dir, spec, options, **output, overwrite=overwrite, planes_per_task=planes_per_task
    )
    check_distinct(job.names)
    options.thresholds_for(len(prompts))
    clear_staging(job.staging)
    rows = yield from _execute(job, items, predictor, client=client, workers=workers, scheduler=scheduler)
    clear_staging(job.staging)
    report = BatchReport(rows, out_dir, time.perf_counter() - started)
    if coco:
        report.coco = _coco(job, rows)
    report.write()
    return report


def segment_dataset(inputs: Any, prompts: Any, out_dir: str | os.PathLike, **kwargs: Any) -> BatchReport:
    """Pre-label every image of a dataset into ``out_dir`` (resumable; see docs/datasets.md).

    Args:
        inputs: Files, folders (searched recursively) and glob patterns: TIFF (stacks, OME-TIFF),
            PNG, JPEG, ``.npy``, zarr and OME-Zarr.
        prompts: Texts and :class:`~napari_clipseg.batch.ExampleFile` (a support image and mask).
        out_dir: One folder per input is written here (``out_dir/<name>/``), with the report.
        model: Hub id, folder or file (default ``CIDAS/clipseg-rd64-refined``), or a loaded model
            or predictor (this process only).
        options: :class:`SegmentOptions`; keyword arguments such as ``threshold=0.3`` change it.
        file_format: ``"tif"``, ``"png"``, ``"npy"`` or ``"ome-zarr"``.
        instances: Also write instance labels (True, or :class:`InstanceSettings`).
        probabilities: Also write the probability maps.
        coco: Also write ``coco.json`` for the whole dataset (implies instances).
        overwrite: Redo inputs whose outputs exist and match (they are skipped otherwise).
        workers: Run on a new dask LocalCluster of this many processes (0: in this process).
        scheduler: Address of a running dask scheduler to use instead; ``client``: a dask Client.
        device, precision, backbone, decoder: How a model given by source is loaded (``decoder``:
            a fine-tuned decoder folder, see docs/finetune.md).
        threads: Torch threads per process (here, and on each worker); None: torch's default here,
            one per worker thread on a cluster. Probabilities are byte-identical between runs
            with the same threads per process (see :class:`~napari_clipseg.batch.ModelSpec`).
        planes_per_task: Stacks longer than this are split into tasks of this many planes.

    Returns:
        The :class:`~napari_clipseg.batch_report.BatchReport` (also in ``report.json`` and ``report.csv``).
    """
    return run(iter_segment_dataset(inputs, prompts, out_dir, **kwargs))
