"""Arguments the CLI's commands share: the model and run options, and prompts. Torch-free."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..constants import DECODER_META_NAME, DEFAULT_HUB_ID, DEFAULT_OVERLAP, DEFAULT_THRESHOLD, MODES
from ..errors import UsageError
from ..segmentation.model_spec import ModelSpec
from ..segmentation.options import SegmentOptions, parse_channels, split_prompts

PROG = "napari-clipseg"


def add_model_options(seg: argparse.ArgumentParser, what: str = "model", default: str | None = DEFAULT_HUB_ID) -> None:
    """The model options every command that loads a model shares (one :class:`ModelSpec`)."""
    shown = default or f"the project's, else {DEFAULT_HUB_ID}"
    seg.add_argument("-m", "--model", default=default, help=f"{what}: hub id, folder or .pth (default {shown})")
    seg.add_argument("--backbone", help="local CLIP ViT-B/16 weights for an original .pth checkpoint")
    seg.add_argument("--decoder", help="a fine-tuned decoder folder (napari-clipseg finetune) to apply")
    add_device_options(seg)


def add_device_options(seg: argparse.ArgumentParser) -> None:
    """Where and how exactly a model runs: this machine's choice (a project keeps its own weights)."""
    seg.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    seg.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "int8", "float16", "bfloat16"],
        help="auto (default): the fastest path that passed the accuracy guard on this device; float32: exact",
    )


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The :class:`ModelSpec` of the model options, its local paths checked (torch-free).

    Raises:
        UsageError: a local model, backbone or decoder path that does not exist.
    """
    from ..errors import WeightsUnavailableError

    spec = ModelSpec(
        args.model, backbone=args.backbone, decoder=args.decoder, device=args.device, precision=args.precision
    )
    try:
        spec.check_paths()
    except WeightsUnavailableError as e:
        raise UsageError(str(e)) from None
    return spec


def checked_target(path: Path, *, overwrite: bool) -> Path:
    """``path`` can be written (see :func:`~napari_clipseg.atomic.check_target`), or a UsageError saying why."""
    from ..atomic import check_target

    try:
        return check_target(path, overwrite=overwrite)
    except OSError as e:
        raise UsageError(str(e)) from None


def check_cached(spec: ModelSpec) -> None:
    """The spec's hub weights are cached when the hub is off (see ``ModelSpec.check_cached``), or a UsageError."""
    from ..errors import WeightsUnavailableError

    try:
        spec.check_cached()
    except WeightsUnavailableError as e:
        raise UsageError(str(e)) from None


def add_run_options(seg: argparse.ArgumentParser) -> None:
    """The model and run options ``segment`` and ``batch`` share."""
    add_model_options(seg)
    seg.add_argument(
        "--threshold", type=float, help=f"in [0, 1] (default: the --decoder's own choice, else {DEFAULT_THRESHOLD})"
    )
    seg.add_argument("--min-size", type=int, default=0, help="remove objects smaller than this many pixels")
    seg.add_argument(
        "--mode", default="auto", choices=MODES, help="whole image, native-resolution tiles, both, or by size"
    )
    seg.add_argument(
        "--overlap", type=int, default=DEFAULT_OVERLAP, help=f"tile overlap in pixels (default {DEFAULT_OVERLAP})"
    )
    seg.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="scale tiles are read at, in (0, 1]: 1 native resolution (default), 0.5 half (a quarter of the tiles)",
    )
    seg.add_argument("--channels", help="channels to use as R,G,B, e.g. '0,2,-1' (-1: empty)")
    seg.add_argument(
        "--rgb", choices=["auto", "yes", "no"], default="auto", help="is the last axis colour? (auto: 3 or 4 values)"
    )


def _decoder_threshold(folder: str | None) -> float | None:
    """The threshold a fine-tuned decoder chose on its held-out images (read from its JSON, torch-free);
    0.5 when a pixel refiner is kept beside it (its maps are the refiner's, calibrated)."""
    from ..segmentation.refiner import META_NAME, THRESHOLD

    if folder is not None and (Path(folder) / META_NAME).is_file():
        return THRESHOLD
    try:
        threshold = json.loads((Path(folder) / DECODER_META_NAME).read_text(encoding="utf-8")).get("threshold")
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # loading the decoder says what is wrong with it
    return float(threshold) if isinstance(threshold, int | float) else None


def run_options(args: argparse.Namespace) -> SegmentOptions:
    """The run's options from the arguments (raises UsageError with the option's name)."""
    threshold = args.threshold
    if threshold is None:
        threshold = (_decoder_threshold(args.decoder) if args.decoder else None) or DEFAULT_THRESHOLD
    try:
        return SegmentOptions(
            mode=args.mode,
            overlap=args.overlap,
            scale=args.scale,
            channels=parse_channels(args.channels or ""),
            rgb={"auto": None, "yes": True, "no": False}[args.rgb],
            threshold=threshold,
            min_size=args.min_size,
        )
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


def text_prompts(texts: list[str] | None) -> list[str]:
    """The prompts of repeated/comma-separated ``-p`` values.

    Raises:
        UsageError: a prompt given twice (one class would stay empty).
    """
    prompts = [p for text in texts or [] for p in split_prompts(text)]
    if len(set(prompts)) != len(prompts):
        raise UsageError(f"a prompt is given twice ({', '.join(prompts)}): each class needs its own name")
    return prompts


def compute_settings(args: argparse.Namespace) -> Any:
    """The dataset run's :class:`ComputeSettings` from ``--workers``, ``--scheduler``, ``--threads`` and
    ``--planes-per-task`` (checked there; the message names the flag). Torch-free."""
    from ..datasets.settings import ComputeSettings

    values = {key: getattr(args, key, None) for key in ("workers", "scheduler", "threads", "planes_per_task")}
    try:
        return ComputeSettings(**{key: value for key, value in values.items() if value is not None})
    except ValueError as e:
        raise UsageError(f"--{str(e).replace('planes_per_task', 'planes-per-task')}") from None
