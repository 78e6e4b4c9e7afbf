"""What a dataset run is asked, in four groups: the model (:class:`ModelSpec`), the run options
(:class:`SegmentOptions`), what is written (:class:`OutputSettings`) and where it is computed
(:class:`ComputeSettings`). :func:`group_keywords` sorts flat keywords into those groups, so
``segment_dataset(..., threshold=0.3, instances=True, workers=2, precision="float32")`` works."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..segmentation.model_spec import ModelSpec
from ..segmentation.options import SegmentOptions
from ..segmentation.postprocess import InstanceSettings


@dataclass(frozen=True)
class OutputSettings:
    """What each input's output folder holds, and what the run writes for the whole dataset.

    Attributes:
        file_format: ``"tif"``, ``"png"``, ``"npy"`` or ``"ome-zarr"``.
        instances: Also write instance labels (True, or :class:`InstanceSettings`).
        probabilities: Also write the probability maps.
        coco: Also write ``coco.json`` for the whole dataset (implies instances).
        overwrite: Redo inputs whose outputs exist and match (they are skipped otherwise).
    """

    file_format: str = "tif"
    instances: InstanceSettings | None = None
    probabilities: bool = False
    coco: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        instances = self.instances
        if instances is True or (self.coco and not instances):
            instances = InstanceSettings()
        object.__setattr__(self, "instances", instances or None)


@dataclass(frozen=True)
class ComputeSettings:
    """Where and how the inputs are computed.

    Attributes:
        workers: Run on a new dask LocalCluster of this many processes (0: in this process).
        scheduler: Address of a running dask scheduler to use instead.
        threads: Torch threads per process (here, and on each worker); None: torch's default here,
            one per worker thread on a cluster. Probabilities are byte-identical between runs with
            the same threads per process (oneDNN splits small products by thread count).
        planes_per_task: Stacks longer than this are split into tasks of this many planes.
    """

    workers: int = 0
    scheduler: str | None = None
    threads: int | None = None
    planes_per_task: int = 16

    def __post_init__(self) -> None:
        for name, value, low in (("workers", self.workers, 0), ("threads", self.threads or 1, 1)):
            if value < low:
                raise ValueError(f"{name} must be at least {low}; got {value}")
        if self.planes_per_task < 1:
            raise ValueError(f"planes_per_task must be at least 1; got {self.planes_per_task}")

    @property
    def on_cluster(self) -> bool:
        return bool(self.workers or self.scheduler)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def group_keywords(
    keywords: dict[str, Any],
    options: SegmentOptions | None,
    output: OutputSettings | None,
    compute: ComputeSettings | None,
) -> tuple[dict[str, Any], SegmentOptions, OutputSettings, ComputeSettings]:
    """``(model keywords, options, output, compute)`` with each flat keyword applied to its group.

    Raises:
        TypeError: a keyword that belongs to no group.
    """
    groups: dict[str, dict[str, Any]] = {"model": {}, "options": {}, "output": {}, "compute": {}}
    owners = {
        "output": _fields(OutputSettings),
        "compute": _fields(ComputeSettings),
        "model": _fields(ModelSpec) - {"source"},
        "options": _fields(SegmentOptions),
    }
    for key, value in keywords.items():
        owner = next((name for name, fields in owners.items() if key in fields), None)
        if owner is None:
            raise TypeError(f"unknown dataset setting {key!r}")
        groups[owner][key] = value
    return (
        groups["model"],
        (options or SegmentOptions()).replace(**groups["options"]),
        dataclasses.replace(output or OutputSettings(), **groups["output"]),
        dataclasses.replace(compute or ComputeSettings(), **groups["compute"]),
    )
