"""``napari-clipseg project``: the annotation loop's folder from the command line.

``prelabel`` (creates the project when it is new; runs on a dask cluster with ``--workers`` or
``--scheduler``), ``status`` (counts and the queue), ``learn`` (fine-tune on the verified images,
then re-predict the others) and ``export`` (the verified set as training data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from .args import PROG, add_model_options, compute_settings, model_spec, text_prompts
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
    learn = actions.add_parser("learn", help="fine-tune on the verified images, then re-predict the others")
    learn.add_argument("folder", type=Path)
    learn.add_argument("--epochs", type=int, default=40)
    learn.add_argument("--force", action="store_true", help="keep the decoder even if it is not better than the base")
    learn.add_argument("--no-repredict", action="store_true", help="only learn; re-predict later")
    export = actions.add_parser("export", help="write the verified images as a training set")
    export.add_argument("folder", type=Path)
    export.add_argument("--out", type=Path, required=True, help="the training-set folder to write")
    export.add_argument("--coco", action="store_true", help="also write coco.json (instances)")
    export.add_argument("--instances", action="store_true", help="also write instance labels per image")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


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
    spec = model_spec(args) if new or args.model else None  # a project reopens with its own model
    with open_project(args.images, args.folder, prompts, spec, compute=compute) as project:
        report = drive(project.iter_prelabel(), quiet=False)
        if report is not None:
            print(report.summary(), file=sys.stderr)
        _print_status(project, 5)
    return 0 if report is None or report.ok else 1


def _print_status(project, queue: int) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in project.status().items())
    print(f"{project.folder.root}: {len(project.items)} images: {counts}")
    decoder = project.decoder
    print(f"decoder: {decoder.name if decoder else 'the base model'}, threshold {project.threshold:.2f}")
    for name, score in project.queue()[:queue]:
        print(f"  {score:.3f}  {name}")


def _status(args: argparse.Namespace) -> int:
    from ..project.open import open_project

    project = open_project(None, _existing(args.folder), read_only=True)
    _print_status(project, args.queue)
    return 0


def _learn(args: argparse.Namespace) -> int:
    from ..project.open import open_project

    with open_project(None, _existing(args.folder)) as project:
        result = drive(project.iter_learn(epochs=args.epochs, force=args.force), quiet=False)
        print(
            f"held-out IoU {result.base_iou:.3f} -> {result.iou:.3f}, threshold {result.threshold:.2f}; "
            f"decoder {project.decoder}",
            file=sys.stderr,
        )
        if not args.no_repredict:
            drive(project.iter_prelabel(), quiet=False)
        _print_status(project, 5)
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..project.open import open_project

    project = open_project(None, _existing(args.folder), read_only=True)
    out = project.export(args.out, coco=args.coco, instances=args.instances, overwrite=args.overwrite)
    print(f"{PROG}: wrote {project.status()['verified']} verified image(s) to {out}", file=sys.stderr)
    return 0


def run_project(args: argparse.Namespace) -> int:
    return {"prelabel": _prelabel, "status": _status, "learn": _learn, "export": _export}[args.action](args)


COMMANDS = {"project": run_project}
