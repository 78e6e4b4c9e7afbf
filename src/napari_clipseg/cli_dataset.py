"""The CLI's dataset commands: ``batch`` (pre-label many images) and ``evaluate`` (score them).

``batch`` exits 0 when every input has its outputs, 1 when some failed (each listed on stderr),
2 for bad usage; everything it can check (options, prompts, format, inputs, examples, the output
folder) is checked before the model loads.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli_args import add_run_options, run_options, text_prompts
from .errors import UsageError
from .outputs import FORMATS

PROG = "napari-clipseg"


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


def _job_arguments(args: argparse.Namespace) -> dict:
    """``segment_dataset`` keywords from the arguments (UsageError for what cannot work)."""
    from .batch import parse_example
    from .postprocess import InstanceSettings

    try:
        examples = [parse_example(text) for text in args.example]
    except ValueError as e:
        raise UsageError(str(e)) from None
    prompts = [*text_prompts(args.prompt), *examples]
    if not prompts:
        raise UsageError("give at least one prompt with -p or --example")
    for name, value, low in (
        ("--workers", args.workers, 0),
        ("--threads", args.threads or 1, 1),
        ("--split", args.split, 0),
    ):
        if value < low:
            raise UsageError(f"{name} must be at least {low}; got {value}")
    if args.planes_per_task < 1:
        raise UsageError(f"--planes-per-task must be at least 1; got {args.planes_per_task}")
    instances = InstanceSettings.chosen(args.instances or args.coco, args.split)
    return {
        "prompts": prompts, "options": run_options(args), "file_format": args.format, "instances": instances,
        "probabilities": args.probabilities, "coco": args.coco, "overwrite": args.overwrite, "workers": args.workers,
        "scheduler": args.scheduler, "model": args.model, "device": args.device, "precision": args.precision,
        "backbone": args.backbone, "threads": args.threads, "planes_per_task": args.planes_per_task,
    }  # fmt: skip


def run_batch(args: argparse.Namespace) -> int:
    from .dataset import iter_segment_dataset
    from .export import check_target
    from .inputs import find_inputs
    from .outputs import check_format

    kwargs = _job_arguments(args)
    try:
        check_format(args.format, args.probabilities)
    except ValueError as e:
        raise UsageError(str(e)) from None
    check_target(args.out / "report.json", overwrite=True)  # a writable output folder, before any work
    try:
        find_inputs(args.inputs, skip=args.out)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    if args.quiet:
        logging.getLogger("napari_clipseg").setLevel(logging.WARNING)
    prompts = kwargs.pop("prompts")
    events = iter_segment_dataset(args.inputs, prompts, args.out, **kwargs)
    report = _drive(events, quiet=args.quiet)
    for row in report.failed:
        print(f"{PROG}: failed: {row.input}: {row.error}", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    return 0 if report.ok else 1


def _drive(events, quiet: bool):
    """Run the generator with a progress bar (with ETA) on stderr."""
    from tqdm.auto import tqdm

    from .results import run

    with tqdm(total=None, unit="image", disable=quiet, file=sys.stderr, dynamic_ncols=True) as bar:

        def show(event) -> None:
            bar.total = event.total
            bar.n = event.step
            bar.set_description_str(event.stage[:40], refresh=False)
            bar.refresh()

        return run(events, show)


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    report = evaluate(args.prediction, args.truth, args.out)
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


COMMANDS = {"batch": run_batch, "evaluate": run_evaluate}
