"""The CLI's dataset commands: ``batch`` (pre-label many images), ``evaluate`` (score them) and
``finetune`` (teach the decoder from corrected masks).

``batch`` exits 0 when every input has its outputs, 1 when some failed (each listed on stderr),
2 for bad usage; everything it can check (options, prompts, format, inputs, examples, the output
folder) is checked before the model loads.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..constants import DECODER_META_NAME
from ..errors import UsageError
from ..io.outputs import FORMATS
from .args import (
    PROG,
    add_model_options,
    add_run_options,
    check_cached,
    checked_target,
    compute_settings,
    model_spec,
    run_options,
    text_prompts,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    batch = sub.add_parser("batch", help="pre-label files, folders or globs into an output folder (resumable)")
    batch.add_argument("inputs", nargs="+", help="image files, folders (recursive), globs; TIFF, PNG, JPEG, .npy, zarr")
    batch.add_argument("-p", "--prompt", action="append", help="prompt(s); repeat or separate with commas")
    batch.add_argument(
        "--example", action="append", default=[], metavar="IMAGE:MASK[=NAME]", help="a class given by an example"
    )
    batch.add_argument("--out", required=True, type=Path, help="output folder (one subfolder per input)")
    batch.add_argument("--format", default="tif", choices=FORMATS, help="file format of the outputs (default tif)")
    batch.add_argument("--instances", action="store_true", help="also write instance labels (one id per object)")
    batch.add_argument("--split", type=int, default=5, help="instances: seed distance in px (0: no split; default 5)")
    batch.add_argument("--probabilities", action="store_true", help="also write the probability maps")
    batch.add_argument("--coco", action="store_true", help="also write coco.json for the dataset (implies --instances)")
    add_run_options(batch)
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=0, help="run on a dask LocalCluster of N processes")
    where.add_argument("--scheduler", help="address of a running dask scheduler (SLURM, Kubernetes, ...)")
    batch.add_argument("--threads", type=int, help="torch threads per process (default: all here, 1 per worker)")
    batch.add_argument("--planes-per-task", type=int, default=16, help="split longer stacks into tasks (default 16)")
    batch.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist and match")
    batch.add_argument("--quiet", action="store_true", help="no progress bar; only warnings and errors")
    ev = sub.add_parser("evaluate", help="score predictions against ground truth (IoU, Dice, AP, matting errors)")
    ev.add_argument("prediction", help="batch output folder, label image(s), or COCO JSON")
    ev.add_argument("truth", help="ground-truth folder, label image(s), or COCO JSON (matched by name)")
    ev.add_argument("--out", type=Path, help="write metrics.csv, metrics.json and metrics.png here")
    ev.add_argument(
        "--truth-kind",
        choices=["labels", "matte"],
        help="what a float ground-truth image holds (integer images and batch outputs are labels)",
    )
    _add_finetune(sub)


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    ft = sub.add_parser("finetune", help="fine-tune the decoder on corrected masks (CPU, minutes)")
    ft.add_argument("--images", nargs="+", required=True, help="image files, folders or globs")
    ft.add_argument("--masks", nargs="+", required=True, help="corrected label images or batch outputs (by name)")
    ft.add_argument(
        "-p", "--prompt", action="append", help="class prompts in label order (default: the masks' records)"
    )
    ft.add_argument("--out", required=True, type=Path, help="decoder folder to write")
    add_model_options(ft, "base model")
    from ..learning.settings import FineTuneSettings

    defaults = FineTuneSettings()
    ft.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help=f"passes over the training images (default {defaults.epochs})",
    )
    ft.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help=f"stop after this many epochs without improvement (default {defaults.patience})",
    )
    ft.add_argument(
        "--max-steps",
        type=int,
        default=defaults.max_steps,
        help=f"at most this many optimiser steps, whatever the number of images (default {defaults.max_steps})",
    )
    ft.add_argument("--holdout", type=float, default=0.25, help="share of images held out to check (default 0.25)")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--ignore-value", type=int, help="label value of pixels nobody looked at (left out)")
    ft.add_argument("--no-augment", action="store_true", help="no flips or rotation")
    ft.add_argument("--force", action="store_true", help="keep the decoder even if it is not better than the base")
    ft.add_argument("--overwrite", action="store_true", help="replace a decoder already in --out")
    ft.add_argument("--cache", type=Path, help="keep the encoded images here: a later run on them skips the encoding")


def _job_arguments(args: argparse.Namespace) -> dict:
    """``segment_dataset``'s prompts and setting groups from the arguments (UsageError for what cannot work)."""
    from ..datasets.settings import OutputSettings
    from ..datasets.steps import parse_example
    from ..segmentation.postprocess import InstanceSettings

    try:
        examples = [parse_example(text) for text in args.example]
    except ValueError as e:
        raise UsageError(str(e)) from None
    prompts = [*text_prompts(args.prompt), *examples]
    if not prompts:
        raise UsageError("give at least one prompt with -p or --example")
    compute = compute_settings(args)
    if args.split < 0:
        raise UsageError(f"--split must be at least 0; got {args.split}")
    instances = InstanceSettings.chosen(args.instances or args.coco, args.split)
    output = OutputSettings(args.format, instances, args.probabilities, args.coco, args.overwrite)
    return {
        "prompts": prompts,
        "model": model_spec(args),
        "options": run_options(args),
        "output": output,
        "compute": compute,
    }


def run_batch(args: argparse.Namespace) -> int:
    from ..datasets.api import check_reserved, check_same_classes, iter_segment_dataset
    from ..io.inputs import find_inputs
    from ..io.outputs import check_format

    kwargs = _job_arguments(args)
    try:
        check_format(args.format, args.probabilities)
    except ValueError as e:
        raise UsageError(str(e)) from None
    checked_target(args.out / "report.json", overwrite=True)  # a writable output folder, before any work
    names = [p if isinstance(p, str) else p.label for p in kwargs["prompts"]]
    try:
        items = find_inputs(args.inputs, skip=args.out)
        check_reserved(items)
        if not args.overwrite:
            check_same_classes(args.out, names, items)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    check_cached(kwargs["model"])  # the last check before torch: an uncached hub id when offline
    if args.quiet:
        logging.getLogger("napari_clipseg").setLevel(logging.WARNING)
    prompts = kwargs.pop("prompts")
    events = iter_segment_dataset(args.inputs, prompts, args.out, **kwargs)
    report = drive(events, quiet=args.quiet)
    for row in report.failed:
        print(f"{PROG}: failed: {row.input}: {row.error}", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    return 0 if report.ok else 1


def drive(events, quiet: bool):
    """Run the generator with a progress bar (with ETA) on stderr, made at the first event, when
    the total is known (a bar made earlier prints a stray ``0image`` line). Training counts in its
    own unit (epochs; a project's Learn: steps) on a bar of its own, its whole line (loss, held-out
    IoU) after the bar, never cut."""
    from tqdm.auto import tqdm

    from ..segmentation.results import run

    bars, units = [], []

    def show(event) -> None:
        unit = getattr(event, "unit", "image")
        if not units or units[-1] != unit:
            if bars:
                bars[-1].close()
            units.append(unit)
            bars.append(tqdm(total=event.total, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True))
        bar = bars[-1]
        bar.total = event.total
        bar.n = event.step
        if unit == "image":
            bar.set_description_str(event.stage[:40], refresh=False)
        else:
            bar.set_postfix_str(event.stage, refresh=False)
        bar.refresh()

    try:
        return run(events, show)
    finally:
        for bar in bars:
            bar.close()


def run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.scoring import evaluate

    report = evaluate(args.prediction, args.truth, args.out, truth_kind=args.truth_kind)
    for key, value in report.mean.items():
        print(f"{key:18s} {value:.4f}")
    if report.unmatched:
        print(
            f"{PROG}: {len(report.unmatched)} name(s) without a partner: {', '.join(report.unmatched[:5])}",
            file=sys.stderr,
        )
    if args.out:
        print(f"wrote metrics.csv, metrics.json and metrics.png to {args.out}", file=sys.stderr)
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    spec = model_spec(args)  # a missing model folder is said before torch is imported
    check_cached(spec)
    from ..learning.settings import FineTuneSettings

    try:
        settings = FineTuneSettings(
            epochs=args.epochs,
            patience=args.patience,
            max_steps=args.max_steps,
            holdout=args.holdout,
            seed=args.seed,
            ignore_value=args.ignore_value,
            augment=not args.no_augment,
            force=args.force,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if (args.out / DECODER_META_NAME).exists() and not args.overwrite:
        raise UsageError(f"{args.out} already holds a decoder (use --overwrite to replace it)")
    from ..learning.training_data import pairs_from_files

    pairs, recorded = pairs_from_files(args.images, args.masks)
    classes = text_prompts(args.prompt) or recorded
    if not classes:
        raise UsageError("give the class prompts with -p (label 1 = the first), or masks with records")
    from ..learning.finetune import check_pairs, iter_finetune
    from ..modeling.decoder_files import save_decoder

    check_pairs(pairs, len(classes), settings.ignore_value)  # before the model loads
    from ..segmentation.predictor import ClipSegPredictor

    predictor = ClipSegPredictor(spec.load(), cache_bytes=0)
    result = drive(iter_finetune(predictor, pairs, classes, settings, cache_dir=args.cache), quiet=False)
    if not result.accepted:  # an outcome, not a failure: said, and nothing is written
        print(f"{PROG}: {result.message} Nothing was written (--force keeps it anyway).", file=sys.stderr)
        return 0
    save_decoder(result, args.out, overwrite=args.overwrite)
    print(
        f"{PROG}: {result.message} ({result.seconds:.1f} s, epoch {result.best_epoch}); wrote {args.out}; "
        f"use it with --decoder {args.out}",
        file=sys.stderr,
    )
    return 0


COMMANDS = {"batch": run_batch, "evaluate": run_evaluate, "finetune": run_finetune}
