"""``napari-clipseg project``: the annotation loop's folder from the command line.

``prelabel`` (creates the project when it is new; runs on a dask cluster with ``--workers`` or
``--scheduler``), ``status`` (counts, the queue and the feature store), ``verify`` (corrected label
files made in another tool taken in as verified, learning as they come with ``--auto-learn``),
``learn`` (learn from the verified images, then re-predict the others), ``decoder`` (the
decoders learnt; go back to one), ``drop`` (images taken out for good) and ``export`` (the verified
set as training data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ProjectError, ProjectMismatchError, UsageError
from ..learning.settings import threshold_text
from .args import (
    PROG,
    add_device_options,
    add_model_options,
    check_cached,
    compute_settings,
    model_spec,
    text_prompts,
)
from .dataset import drive


def add_parser(sub: argparse._SubParsersAction) -> None:
    project = sub.add_parser("project", help="an annotation project: prelabel, status, learn, export")
    actions = project.add_subparsers(dest="action", required=True)
    pre = actions.add_parser("prelabel", help="pre-label the project's images (creates the project when new)")
    pre.add_argument("folder", type=Path, help="the project folder")
    pre.add_argument("--images", nargs="+", help="image files, folders or globs (to create, or to add images)")
    pre.add_argument("-p", "--prompt", action="append", help="class prompts (to create the project)")
    add_model_options(pre, default=None)
    pre.add_argument("--workers", type=int, default=0, help="run on a dask LocalCluster of this many processes")
    pre.add_argument("--scheduler", help="address of a running dask scheduler to use")
    status = actions.add_parser("status", help="how many images are in each state, and the review queue")
    status.add_argument("folder", type=Path)
    status.add_argument("--queue", type=int, default=10, help="show this many images of the queue (default 10)")
    verify = actions.add_parser("verify", help="take corrected label files in as the verified labels of their images")
    verify.add_argument("folder", type=Path)
    verify.add_argument("--labels", nargs="+", required=True, help="label files or folders, matched to images by name")
    verify.add_argument(
        "--auto-learn", type=int, default=0, metavar="N", help="learn after every N verified images (0: never)"
    )
    add_device_options(verify)
    learn = actions.add_parser("learn", help="learn from the verified images, then re-predict the others")
    learn.add_argument("folder", type=Path)
    learn.add_argument("--steps", type=int, help="optimiser steps (default 48: a few seconds on a CPU)")
    learn.add_argument("--epochs", type=int, help="passes over the verified images instead of --steps")
    learn.add_argument(
        "--force", action="store_true", help="keep the new decoder even if it is not better than the current one"
    )
    learn.add_argument("--no-repredict", action="store_true", help="only learn; re-predict later")
    learn.add_argument(
        "--no-refiner", action="store_true", help="learn the decoder alone (no pixel refiner at the image's pixels)"
    )
    add_device_options(learn)
    decoder = actions.add_parser("decoder", help="list the decoders learnt, or go back to one (then re-predict)")
    decoder.add_argument("folder", type=Path)
    decoder.add_argument("name", nargs="?", help="a decoder to use (001, 002, ...), or 'base' for the base model's")
    decoder.add_argument("--no-repredict", action="store_true", help="only switch; re-predict later")
    add_device_options(decoder)
    drop = actions.add_parser(
        "drop", help="take images out of the project for good (verified labels kept in outdated/)"
    )
    drop.add_argument("folder", type=Path)
    drop.add_argument("names", nargs="+", help="image names, as 'project status' shows them")
    export = actions.add_parser("export", help="write the verified images as a training set")
    export.add_argument("folder", type=Path)
    export.add_argument("--out", type=Path, required=True, help="the training-set folder to write")
    export.add_argument("--coco", action="store_true", help="also write coco.json (instances)")
    export.add_argument("--instances", action="store_true", help="also write instance labels per image")
    export.add_argument("--overwrite", action="store_true", help="replace an earlier export of this project")


def _existing(folder: Path) -> Path:
    from ..project.folder import MANIFEST_NAME

    if not (folder / MANIFEST_NAME).is_file():
        raise UsageError(
            f"{folder} is not a napari-clipseg project (no {MANIFEST_NAME}); make one with 'project prelabel'"
        )
    return folder


def _prelabel(args: argparse.Namespace) -> int:
    from ..project.folder import MANIFEST_NAME
    from ..project.open import open_project

    prompts = text_prompts(args.prompt) or None
    new = not (args.folder / MANIFEST_NAME).is_file()
    if new and (not prompts or not args.images):
        raise UsageError("a new project needs --images and -p (its class prompts)")
    compute = compute_settings(args)
    if new and args.model is None:
        from ..constants import DEFAULT_HUB_ID

        args.model = DEFAULT_HUB_ID  # as the help says: the project's model, else the default weights
    spec = model_spec(args) if new or args.model else _own_model(args)  # a project reopens with its own model
    if new:
        check_cached(spec)  # offline and not cached: said now, before a project folder is made
    if not new and not args.images:
        print(f"{PROG}: pre-labelling the project's images (give --images to add images found since)", file=sys.stderr)
    try:
        project = open_project(args.images, args.folder, prompts, spec, compute=compute)
    except (ProjectMismatchError, FileNotFoundError) as e:  # what the command line got wrong, before any work
        raise UsageError(str(e)) from None
    with project:
        report = _prelabel_all(project, quiet=False)
        _print_status(project, 5)
    return 0 if report is None or report.ok else 1


def _prelabel_all(project, quiet: bool):
    """Pre-label what needs it, naming every image that failed with why (as ``batch`` does)."""
    from ..project.prelabel import FULL_DISK

    report = drive(project.iter_prelabel(), quiet=quiet)
    if report is None:
        return None
    for row in report.failed:
        print(f"{PROG}: failed: {row.input}: {row.error}", file=sys.stderr)
    if any(row.error.startswith(FULL_DISK) for row in report.failed):
        print(f"{PROG}: stopped: the disk is full; free some space and run it again", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    return report


def _own_model(args: argparse.Namespace):
    """The project's own model, on the ``--device`` and at the ``--precision`` asked for (this
    machine's choice); None when neither is asked for (the project's as it is)."""
    from ..project.folder import ProjectFolder
    from ..segmentation.model_spec import ModelSpec

    if (
        (args.device == "auto" and args.precision == "auto")
        or getattr(args, "backbone", None)
        or getattr(args, "decoder", None)
    ):
        return None
    try:
        manifest = ProjectFolder(args.folder).read_manifest()
    except ProjectError:
        return None  # said by the opening
    if manifest is None:
        return None
    return ModelSpec.from_dict(manifest["model"]).replace(device=args.device, precision=args.precision)


def _print_status(project, queue: int) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in project.status().items())
    print(f"{project.folder.root}: {len(project.items)} images: {counts}")
    decoder = project.decoder
    print(f"decoder: {decoder.name if decoder else 'the base model'}, threshold {threshold_text(project.threshold)}")
    for repair in project.repairs:
        print(f"to repair: {repair}")
    print(f"feature store: {project.store_stats().describe()}")
    missing = project.missing()
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        print(
            f"{len(missing)} image(s) gone, left out until found again (--images) or dropped ('project drop'): {shown}"
        )
    for name, score in project.queue()[: max(0, queue)]:
        print(f"  {score:.3f}  {name}")


def _status(args: argparse.Namespace) -> int:
    from ..project.open import open_project

    if args.queue < 0:
        raise UsageError(f"--queue must be 0 or more; got {args.queue}")
    project = open_project(None, _existing(args.folder), read_only=True)
    _print_status(project, args.queue)
    return 0


def _learn(args: argparse.Namespace) -> int:
    from ..project.open import open_project

    for flag, value in (("--steps", args.steps), ("--epochs", args.epochs)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1; got {value}")
    settings = {k: v for k, v in {"steps": args.steps, "epochs": args.epochs}.items() if v is not None}
    settings["refiner"] = not args.no_refiner
    with open_project(None, _existing(args.folder), model=_own_model(args)) as project:
        outcome = drive(project.iter_learn(force=args.force, **settings), quiet=False)
        print(f"{PROG}: {outcome.message} ({outcome.seconds:.1f} s)", file=sys.stderr)
        if outcome.accepted and not args.no_repredict:
            _prelabel_all(project, quiet=False)
        _print_status(project, 5)
    return 0


def _decoder(args: argparse.Namespace) -> int:
    from ..project.open import open_project

    if args.name is None:
        project = open_project(None, _existing(args.folder), read_only=True)
        current = project.decoder.name if project.decoder else None
        print(f"{'*' if current is None else ' '} base      the base model's decoder")
        for entry in project.decoders:
            name = Path(entry["folder"]).name
            iou, before = entry.get("iou"), entry.get("base_iou")
            scores = f"held-out IoU {before:.3f} -> {iou:.3f}" if iou is not None and before is not None else ""
            what = "decoder + pixel refiner" if entry.get("refiner") else "decoder"
            print(
                f"{'*' if name == current else ' '} {name:9s} {what}, {len(entry.get('images', []))} images, {scores}"
            )
        return 0
    with open_project(None, _existing(args.folder), model=_own_model(args)) as project:
        try:
            project.use_decoder(None if args.name == "base" else args.name)
        except ProjectError as e:
            raise UsageError(str(e)) from None
        print(f"{PROG}: using {args.name}'s decoder, threshold {threshold_text(project.threshold)}", file=sys.stderr)
        if not args.no_repredict:
            _prelabel_all(project, quiet=False)
        _print_status(project, 5)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..io.inputs import named_entries
    from ..learning.training_data import read_corrected_labels
    from ..project.open import open_project

    if args.auto_learn < 0:
        raise UsageError(f"--auto-learn must be 0 or more; got {args.auto_learn}")
    files = {name: path for source in args.labels for name, path in named_entries(source).items()}
    with open_project(None, _existing(args.folder), model=_own_model(args), auto_learn=args.auto_learn) as project:
        matched = [name for name in project.names if name in files]
        if not matched:
            raise UsageError(
                f"no label file is named like an image of the project (labels: {sorted(files)[:3]}, "
                f"images: {project.names[:3]})"
            )
        for number, name in enumerate(matched, start=1):
            changed = project.verify(name, read_corrected_labels(files[name])[0])
            print(f"{PROG}: verified {name} ({changed} pixels changed), {number} of {len(matched)}", file=sys.stderr)
            if project.learn_due:
                outcome = drive(project.iter_learn(), quiet=True)
                print(f"{PROG}: {outcome.message} ({outcome.seconds:.1f} s)", file=sys.stderr)
                if outcome.accepted:
                    _prelabel_all(project, quiet=True)
        _print_status(project, 5)
    return 0


def _drop(args: argparse.Namespace) -> int:
    from ..project.open import open_project

    with open_project(None, _existing(args.folder)) as project:
        unknown = [name for name in args.names if name not in project.names]
        if unknown:
            raise UsageError(
                f"no image named {', '.join(unknown)} in {args.folder} (e.g. {', '.join(project.names[:3])})"
            )
        for name in args.names:
            project.drop(name)
            print(f"{PROG}: dropped {name}", file=sys.stderr)
        _print_status(project, 5)
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..project.open import open_project

    blocked = next((p for p in args.out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise UsageError(f"--out {args.out}: {blocked} is a file, not a folder: choose another --out")
    project = open_project(None, _existing(args.folder), read_only=True)
    try:
        out = project.export(args.out, coco=args.coco, instances=args.instances, overwrite=args.overwrite)
    except FileExistsError as e:  # an earlier export of this project
        raise UsageError(f"{e} (--overwrite)") from None
    print(f"{PROG}: wrote {project.status()['verified']} verified image(s) to {out}", file=sys.stderr)
    return 0


def run_project(args: argparse.Namespace) -> int:
    actions = {
        "prelabel": _prelabel,
        "status": _status,
        "verify": _verify,
        "learn": _learn,
        "decoder": _decoder,
        "drop": _drop,
        "export": _export,
    }
    return actions[args.action](args)


COMMANDS = {"project": run_project}
