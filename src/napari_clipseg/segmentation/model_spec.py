"""Which model, and how it runs: one frozen spec that every entry point loads from.

The API (``load_model``), the CLI (``--model``, ``--backbone``, ``--decoder``, ``--device``,
``--precision``), the dock's settings, dataset workers, fine-tuning and projects all describe a
model as a :class:`ModelSpec` and load it with :meth:`ModelSpec.load`, which does two separate
steps: read the exact float32 weights (:func:`~napari_clipseg.modeling.weights.load_exact`, no
forward pass), then choose a precision (:func:`with_chosen_precision`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import DEFAULT_HUB_ID, PRECISIONS
from ..paths import cached_file, is_local_path, missing_path_message

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

    from ..modeling.clipseg import ClipSeg
    from ..modeling.config import ClipSegConfig


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's weights come from and how it runs (small, hashable, picklable).

    Attributes:
        source: Hub id, a ``save_pretrained`` folder, an original ``.pth`` or a weights file.
        backbone: For original checkpoints: a local CLIP ViT-B/16 state dict (None: the hub's).
        decoder: A fine-tuned decoder folder to apply (``napari-clipseg finetune``).
        device: ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``.
        precision: ``"auto"`` (the fastest guarded path here), ``"float32"`` (exact), ``"int8"``,
            ``"bfloat16"`` or ``"float16"``.
        config: For original checkpoints whose sizes cannot be read from shapes: a config name.
        revision: Hub revision (branch, tag or commit).
    """

    source: str = DEFAULT_HUB_ID
    backbone: str | None = None
    decoder: str | None = None
    device: str = "cpu"
    precision: str = "auto"
    config: str | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        for name in ("source", "backbone", "decoder", "config"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif value is not None and not isinstance(value, str):
                raise TypeError(
                    f"the model's {name} must be a hub id, a folder or a file path; got {type(value).__name__}"
                )
        precision = "auto" if self.precision is None else str(self.precision)
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {sorted(PRECISIONS)}")
        object.__setattr__(self, "precision", PRECISIONS[precision])

    @classmethod
    def of(cls, model: ModelSpec | str | os.PathLike, **how: Any) -> ModelSpec:
        """``model`` as a spec: a spec as it is (``how`` replaces fields), a source with ``how``."""
        if isinstance(model, ModelSpec):
            return dataclasses.replace(model, **{k: v for k, v in how.items() if v is not None})
        if isinstance(model, str | os.PathLike):
            return cls(os.fspath(model), **{k: v for k, v in how.items() if v is not None})
        raise TypeError(f"a model is a hub id, a folder, a file or a ModelSpec; got {type(model).__name__}")

    def replace(self, **changes: Any) -> ModelSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """The spec written by :meth:`to_dict` (unknown keys are refused, so a typo is never ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown model setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        return cls(**data)

    def absolute(self) -> ModelSpec:
        """The spec with its local paths (source, backbone, decoder) absolute and resolved, so the
        same model given as ``m``, ``./m/`` or through a symbolic link is one spec, whatever the
        working folder (a project keeps this form)."""

        def resolved(value: str | None, local: bool) -> str | None:
            return str(Path(value).expanduser().resolve()) if value is not None and local else value

        return self.replace(
            source=resolved(self.source, is_local_path(self.source)),
            backbone=resolved(self.backbone, True),
            decoder=resolved(self.decoder, True),
        )

    def check_paths(self) -> None:
        """Fail at once, without torch, when a local source, backbone or decoder does not exist.

        Raises:
            WeightsUnavailableError: naming the path and the nearest folder that exists.
        """
        from ..errors import WeightsUnavailableError

        checks = [(self.source, "the model", is_local_path(self.source))]
        checks += [(getattr(self, name), f"the {name}", True) for name in ("backbone", "decoder")]
        for path, what, local in checks:
            problem = missing_path_message(path, what) if path is not None and local else None
            if problem is not None:
                raise WeightsUnavailableError(problem)

    def check_cached(self) -> None:
        """With ``HF_HUB_OFFLINE=1``, a hub id whose files are not cached fails here, before torch.

        Raises:
            WeightsUnavailableError: saying where the cache is and what to do.
        """
        from huggingface_hub import constants

        if is_local_path(self.source) or not constants.HF_HUB_OFFLINE:
            return  # online: the download says what is wrong
        try:
            cached = cached_file(self.source, "config.json", self.revision)
        except Exception:  # noqa: BLE001 - not a valid hub id: loading names the problem
            return
        if cached is None:
            from ..errors import WeightsUnavailableError

            raise WeightsUnavailableError(
                f"'{self.source}' is no local file or folder, and as a hub id it is not in the local cache "
                f"({constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE=1 is set: connect once to download it, "
                "or give a local folder or file"
            )

    def differences(self, other: ModelSpec) -> list[str]:
        """``"field: mine -> other"`` for each field that differs (for messages)."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    def load(self, *, stop: threading.Event | None = None, tqdm_class: Any = None) -> ClipSeg:
        """Read the weights exactly, then choose the precision (see the module docstring)."""
        from ..modeling.weights import load_exact

        model = load_exact(
            self.source,
            device=self.device,
            backbone=self.backbone,
            config=self.config,
            revision=self.revision,
            tqdm_class=tqdm_class,
            stop=stop,
            decoder=self.decoder,
        )
        if self.decoder is not None:  # a decoder learnt in a project may keep a pixel refiner beside it
            from .refiner import attach_refiner

            attach_refiner(model, self.decoder)
        return with_chosen_precision(model, self.precision, stop)


def with_decoder_folder(base: ClipSeg, folder: str | os.PathLike) -> ClipSeg:
    """A copy of the loaded ``base`` (kept as it is, at its precision) with the decoder in ``folder``
    and its pixel refiner, if it keeps one: what loading the base again with ``decoder=folder``
    gives, without reading the towers' weights again.

    Raises:
        DecoderMismatchError: the decoder was made for other base weights.
        RefinerError: its refiner's files are damaged.
    """
    import copy

    from ..modeling.decoder_files import apply_decoder
    from .refiner import attach_refiner

    model = base.with_decoder(copy.deepcopy(base.decoder))
    return attach_refiner(apply_decoder(model, folder), folder)


def with_chosen_precision(
    model: ClipSeg, precision: str | torch.dtype | None = "auto", stop: threading.Event | None = None
) -> ClipSeg:
    """``model`` (loaded exactly, at float32) run at ``precision``; ``"auto"`` picks the fastest
    guarded path on this machine and checks it on these weights (:mod:`.precision_check`).
    ``stop`` (set from another thread) ends each stage early: the one-off timing between runs of
    its block, the int8 copy between blocks, the check on the weights between vision blocks."""
    from ..errors import check_stop
    from ..precision.choice import resolve_precision

    name = resolve_precision(precision, model.device, stop)
    check_stop(stop)
    if name == "float32" and precision in (None, "auto"):
        from ..precision.choice import why_exact

        logger.info("precision auto: float32 (%s)", why_exact(model.device))
    if name == model.info.precision:
        return _on_fastest_engine(model, stop)
    chosen = _on_fastest_engine(model.with_precision(name, stop), stop)
    if precision in (None, "auto"):
        from .precision_check import verified

        chosen = verified(chosen, stop)  # on the engine it runs on; float32 again if it fails there
    check_stop(stop)
    return _on_fastest_engine(chosen, stop)


def _on_fastest_engine(model: ClipSeg, stop: threading.Event | None) -> ClipSeg:
    """``model`` with its vision tower on the engine timed fastest here at its precision
    (OpenVINO where installed and faster: :func:`~napari_clipseg.precision.choice.engine_for`)."""
    from ..precision.choice import engine_for

    precision = model.info.precision
    if model.info.engine != "torch" or engine_for(precision, model.device) == "torch":
        return model
    from ..constants import INPUT_SIZE
    from ..modeling.openvino_engine import vision_engine
    from ..precision.measurements import cache_folder

    visual, layers = model.clip.visual, model.config.extract_layers
    engine = vision_engine(visual, layers, INPUT_SIZE, cache_folder(), stop, precision=precision)
    logger.info("%s runs the vision tower on OpenVINO here (timed faster than torch at %s)", precision, precision)
    return model.with_engine(engine)


def load_model(
    source: str | os.PathLike | ModelSpec = DEFAULT_HUB_ID,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    backbone: str | os.PathLike | None = None,
    config: str | ClipSegConfig | None = None,
    revision: str | None = None,
    tqdm_class: Any = None,
    stop: threading.Event | None = None,
    decoder: str | os.PathLike | None = None,
) -> ClipSeg:
    """Load CLIPSeg weights (hub id, transformers directory, original checkpoint) and choose how
    they run: :func:`~napari_clipseg.modeling.weights.load_exact`, then :func:`with_chosen_precision`.

    ``dtype`` is the precision: ``"auto"``/``None`` (the fastest path that passed the accuracy
    guard on this device and on these weights), ``"float32"`` (exact), ``"int8"`` (CPU),
    ``"float16"``/``"bfloat16"`` (autocast; bfloat16 on the CPU only where native). The other
    arguments are :func:`~napari_clipseg.modeling.weights.load_exact`'s. The saved weights stay
    float32 in every case.
    """
    if isinstance(source, ModelSpec):
        return source.load(stop=stop, tqdm_class=tqdm_class)
    from ..modeling.weights import load_exact

    model = load_exact(
        source,
        device=device,
        backbone=backbone,
        config=config,
        revision=revision,
        tqdm_class=tqdm_class,
        stop=stop,
        decoder=decoder,
    )
    return with_chosen_precision(model, dtype, stop)
