"""napari-clipseg: CLIPSeg (text- and image-prompted segmentation) for napari and notebooks.

The package root exposes the Qt-free core only; importing it does not import napari, Qt,
magicgui or even torch until a name that needs torch is used.

The package tree reads as the architecture:

* ``modeling/``: the network (open_clip towers, decoder), its configs, and loading weights;
* ``options.py`` (what a run may be asked), ``pipeline.py`` (the one orchestrator of a run),
  ``predictor.py``, ``transforms.py``, ``tiling.py``, ``prompts.py``, ``visual.py``,
  ``postprocess.py``, ``results.py`` (progress and result types), ``cache.py``;
* outputs: ``records.py`` (the one provenance record), ``export.py``, ``masks.py``;
* datasets: ``inputs.py`` (finding and opening files), ``batch.py`` (the steps of one input),
  ``cluster.py`` (dask.distributed), ``dataset.py`` (``segment_dataset``), ``outputs.py`` (an
  input's output folder), ``batch_report.py``, ``coco.py``, ``metrics.py``, ``evaluation.py``;
* learning from corrections: ``finetune.py``, ``training_data.py``, ``decoders.py``;
* ``cli.py`` (with ``cli_args.py``, ``cli_dataset.py``); and ``_napari/``, the only part that
  imports napari, Qt or magicgui.

>>> import napari_clipseg as ncs
>>> model = ncs.load_model()  # CIDAS/clipseg-rd64-refined
>>> labels = ncs.segment(image, ["nucleus", "membrane"], model=model)
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from ._gl_guard import guard_triton

# Before anything imports torch: see _gl_guard (napari on software OpenGL would segfault).
guard_triton()

try:
    __version__ = version("napari-clipseg")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "load_model": "segmentation.model_spec",
    "build_model": "modeling.weights",
    "save_pretrained": "modeling.weights",
    "ModelSpec": "segmentation.model_spec",
    "ClipSeg": "modeling",
    "ClipSegConfig": "modeling.config",
    "ModelInfo": "modeling.info",
    "WeightsInfo": "modeling.info",
    "WeightsError": "errors",
    "WeightsUnavailableError": "errors",
    "CorruptWeightsError": "errors",
    "UnsafeWeightsError": "errors",
    "ArchitectureMismatchError": "errors",
    "ClipSegPredictor": "segmentation.predictor",
    "SegmentOptions": "segmentation.options",
    "segment": "segmentation.pipeline",
    "iter_segment": "segmentation.pipeline",
    "PlaneError": "errors",
    "run": "segmentation.results",
    "Progress": "segmentation.results",
    "SegmentationResult": "segmentation.results",
    "labels_from_probabilities": "segmentation.postprocess",
    "VisualPrompt": "segmentation.visual",
    "engineer_visual_prompt": "segmentation.visual",
    "build_record": "io.records",
    "read_record": "io.records",
    "write_record": "io.records",
    "RecordError": "errors",
    "export_masks": "io.masks",
    "InstanceSettings": "segmentation.postprocess",
    "segment_dataset": "datasets.api",
    "iter_segment_dataset": "datasets.api",
    "ExampleFile": "datasets.steps",
    "BatchReport": "datasets.report",
    "evaluate": "evaluation.scoring",
    "TrainingPair": "learning.finetune",
    "iter_finetune": "learning.finetune",
    "save_decoder": "modeling.decoder_files",
    "open_project": "project.open",
    "Project": "project.project",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    # Lazy exports: torch and open_clip load on first use, which keeps `import napari_clipseg`
    # (done by napari when it reads the plugin manifest) fast and free of GPU/GL side effects.
    if name in _EXPORTS:
        guard_triton()  # napari may have drawn (and loaded Mesa's LLVM) since this package was imported
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
