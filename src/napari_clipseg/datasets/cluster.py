"""Running a dataset's steps on a dask.distributed cluster: a LocalCluster of worker processes, or
any scheduler dask can reach (SLURM through dask-jobqueue, Kubernetes, ...).

Each worker process loads the model once, through a dask ``WorkerPlugin`` (:class:`ModelPlugin`),
opens its inputs itself, and writes its outputs itself (atomically); the client only receives
report rows.
The parts of a split stack go worker to worker as task results, never through the client.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin, get_worker

from ..io.inputs import InputFile
from ..segmentation.results import Progress
from .report import Row
from .steps import BatchJob, Part, Plan, failed_row, finish_input, guarded, plan_input, segment_part

if TYPE_CHECKING:
    from ..segmentation.model_spec import ModelSpec
    from ..segmentation.predictor import ClipSegPredictor

logger = logging.getLogger(__name__)

#: The name the model plugin is registered under on each worker.
PLUGIN_NAME = "napari-clipseg-model"


class ModelPlugin(WorkerPlugin):
    """Loads the model once per worker process when registered (and on workers that join later).

    ``threads`` sets torch's threads in that worker process; ``load_seconds`` is what the load took
    there (the per-worker cost of a cluster run). Registering a plugin for another spec under the
    same name replaces this one.
    """

    name = PLUGIN_NAME

    def __init__(self, spec: ModelSpec, threads: int | None = None) -> None:
        self.spec, self.threads = spec, threads
        self.predictor: ClipSegPredictor | None = None
        self.load_seconds: float | None = None

    def setup(self, worker: Any) -> None:
        import torch

        from ..segmentation.predictor import ClipSegPredictor

        if self.threads:
            torch.set_num_threads(self.threads)
        started = time.perf_counter()
        self.predictor = ClipSegPredictor(self.spec.load(), cache_bytes=0)  # every input is new: no feature cache
        self.load_seconds = time.perf_counter() - started

    def teardown(self, worker: Any) -> None:
        self.predictor = None


def _worker_predictor() -> ClipSegPredictor:
    return get_worker().plugins[PLUGIN_NAME].predictor


def _plan_task(job: BatchJob, item: InputFile) -> Plan | Row:
    return guarded(lambda: plan_input(job, item, _worker_predictor()), item)


def _part_task(job: BatchJob, item: InputFile, planes: tuple[int, int] | None) -> Part | Row:
    return guarded(lambda: segment_part(job, item, planes, _worker_predictor()), item)


def _finish_task(job: BatchJob, plan: Plan, *parts: Part | Row) -> Row:
    return guarded(lambda: finish_input(job, plan, list(parts)), plan.item)


@contextlib.contextmanager
def dask_client(workers: int = 0, scheduler: str | None = None) -> Iterator[Any]:
    """A client of the cluster at ``scheduler``, or of a new LocalCluster of ``workers`` processes
    with one thread each (closed on exit). The dashboard's address is logged."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            logger.info("dask scheduler %s; dashboard: %s", scheduler, client.dashboard_link)
            yield client
        return
    # Every input's failure reaches the report as its row; what dask's own loggers say while the
    # cluster shuts down (a worker's heartbeat to a scheduler that just closed, with a traceback)
    # is noise a user cannot act on, printed at random under load: silenced.
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):
        logger.info("dask LocalCluster of %d worker process(es); dashboard: %s", workers, client.dashboard_link)
        yield client


def run_on_cluster(
    job: BatchJob, items: list[InputFile], client: Any, threads: int | None = None
) -> Generator[Progress, None, list[Row]]:
    """Load the model on every worker, plan every input there, then segment the parts of those to
    do and finish each; yields progress per finished input and returns the rows (in input order)."""
    from distributed import as_completed

    yield Progress(0, len(items), "loading the model on the workers")
    client.register_plugin(ModelPlugin(job.model, threads))

    owner: dict[Any, InputFile] = {}
    futures = as_completed()
    for item in items:
        future = client.submit(_plan_task, job, item, pure=False)
        owner[future] = item
        futures.add(future)
    rows: dict[str, Row] = {}
    for future in futures:
        item = owner[future]
        try:
            result = future.result()
        except Exception as e:  # noqa: BLE001 - a killed worker or a lost task fails this input only
            result = failed_row(item, e)
        if isinstance(result, Plan):
            parts = [client.submit(_part_task, job, item, planes, pure=False) for planes in result.parts]
            finish = client.submit(_finish_task, job, result, *parts, pure=False)
            owner[finish] = item
            futures.add(finish)
            continue
        rows[str(item.path)] = result
        yield Progress(len(rows), len(items), f"{item.name}: {result.status}")
    return [rows[str(item.path)] for item in items]
