"""``napari-clipseg`` command line: segment, batch, evaluate, finetune, project, random-weights, samples.

Every argument is checked (options, prompts, output suffixes, distinct and writable outputs)
before torch is imported or a model is loaded, so a typo costs a second, not a model load.
Errors print one line to stderr. Exit codes, the same in every subcommand: 2 for what the command
line gets wrong, found before any work (a bad option, a named file or folder that does not exist,
an output that exists without ``--overwrite`` or cannot be written), 1 for a run that failed once
it started (a damaged file, weights that cannot be fetched, inputs that failed), 130 for Ctrl-C. A run
writes all of its files (labels, probabilities, record) or none; existing files are never
replaced unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import PlaneError, RecordError, UsageError, WeightsError
from ..io.export import FLOAT_SUFFIXES, LABEL_SUFFIXES, check_suffix
from ..paths import missing_path_message
from ..samples import SAMPLES
from . import dataset as cli_dataset
from . import project as cli_project
from .args import PROG, add_run_options, check_cached, checked_target, model_spec, run_options, text_prompts


def _segment_parser(sub: argparse._SubParsersAction) -> None:
    seg = sub.add_parser("segment", help="segment one image and write a label image + JSON record")
    source = seg.add_mutually_exclusive_group(required=True)
    source.add_argument("image", nargs="?", help="image file (TIFF, PNG, JPEG, .npy)")
    source.add_argument("--sample", choices=sorted(SAMPLES), help="use a sample image shipped with scikit-image")
    seg.add_argument("-p", "--prompt", action="append", required=True, help="prompt(s); repeat or separate with commas")
    seg.add_argument("-o", "--output", required=True, type=Path, help=f"label image ({', '.join(LABEL_SUFFIXES)})")
    add_run_options(seg)
    seg.add_argument(
        "--probabilities", type=Path, help=f"also write the (P, ...) probabilities ({', '.join(FLOAT_SUFFIXES)})"
    )
    seg.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="CLIPSeg segmentation from text prompts.")
    sub = parser.add_subparsers(dest="command", required=True)
    _segment_parser(sub)
    cli_dataset.add_parsers(sub)
    cli_project.add_parser(sub)
    rnd = sub.add_parser("random-weights", help="write a randomly initialised model (offline trials, tests)")
    rnd.add_argument("directory", type=Path)
    rnd.add_argument("--config", default="rd64-refined", help="architecture name (rd64-refined, rd64, rd16, tiny)")
    rnd.add_argument("--seed", type=int, default=0)
    rnd.add_argument("--overwrite", action="store_true", help="replace a model already in the folder")
    sub.add_parser("samples", help="list the sample images")
    return parser


def _outputs(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    """Labels, record and probabilities paths, checked (suffix, distinct, writable, not existing)."""
    from ..io.records import sidecar_path

    labels, record, probabilities = args.output, sidecar_path(args.output), args.probabilities
    try:
        check_suffix(labels)
        if probabilities is not None:
            check_suffix(probabilities, FLOAT_SUFFIXES)
    except ValueError as e:
        raise UsageError(str(e)) from None
    paths = [p for p in (labels, record, probabilities) if p is not None]
    if len({p.resolve() for p in paths}) != len(paths):
        raise UsageError(f"--probabilities must differ from -o and from its record ({record})")
    for path in paths:
        checked_target(path, overwrite=args.overwrite)
    return labels, record, probabilities


def _segment(args: argparse.Namespace) -> int:
    prompts = text_prompts(args.prompt)
    if not prompts:
        raise UsageError("give at least one non-empty prompt with -p")
    options = run_options(args)
    spec = model_spec(args)
    problem = missing_path_message(args.image, "the image") if args.image else None
    if problem:
        raise UsageError(problem)
    labels_path, record_path, probs_path = _outputs(args)
    from ..atomic import json_writer, write_together
    from ..io.export import array_writer, read_array
    from ..samples import load_sample

    image = load_sample(args.sample) if args.sample else read_array(args.image)
    check_cached(spec)  # the last check before torch: an uncached hub id when offline
    from ..io.records import build_record
    from ..segmentation.pipeline import iter_segment, plan_planes
    from ..segmentation.predictor import ClipSegPredictor
    from ..segmentation.results import run

    plan_planes(image, options)  # a shape that cannot work fails before the model loads
    model = spec.load()
    result = run(
        iter_segment(image, prompts, ClipSegPredictor(model), options),
        lambda e: logging.getLogger("napari_clipseg").info("[%d/%d] %s", e.step, e.total, e.stage),
    )
    files = {"labels": labels_path.name, "probabilities": probs_path.name if probs_path else None}
    record = build_record(
        prompts,
        model=model,
        options=options,
        mode=result.mode,
        image={"name": args.sample or str(args.image), "shape": list(image.shape)},
        planes=None if result.planes == [()] else result.planes,
        files=files,
    )
    outputs = [(labels_path, array_writer(labels_path, result.labels)), (record_path, json_writer(record))]
    if probs_path is not None:
        outputs.append((probs_path, array_writer(probs_path, result.probabilities)))
    write_together(outputs, overwrite=args.overwrite)
    counts = ", ".join(f"{p}: {int((result.labels == i + 1).sum())} px" for i, p in enumerate(prompts))
    print(f"wrote {labels_path} ({counts}) and {record_path}")
    return 0


def _random_weights(args: argparse.Namespace) -> int:
    from ..modeling.config import CONFIGS

    if args.config not in CONFIGS:
        raise UsageError(f"unknown config {args.config!r}; choose one of {', '.join(sorted(CONFIGS))}")
    targets = [args.directory / "config.json", args.directory / "model.safetensors"]
    if not args.overwrite and any(t.exists() for t in targets):
        raise UsageError(f"{args.directory} already holds a model (use --overwrite to replace it)")
    from ..modeling.weights import build_model, save_pretrained

    save_pretrained(build_model(args.config, seed=args.seed), args.directory, overwrite=args.overwrite)
    print(
        f"{PROG}: wrote RANDOM weights ({args.config}) to {args.directory}; masks from them are meaningless",
        file=sys.stderr,
    )
    return 0


def _samples(_args: argparse.Namespace) -> int:
    for sample in SAMPLES.values():
        print(f"{sample.name:10s} {sample.description}  (try: {', '.join(sample.prompts)})")
    return 0


COMMANDS = {
    "segment": _segment,
    "random-weights": _random_weights,
    "samples": _samples,
    **cli_dataset.COMMANDS,
    **cli_project.COMMANDS,
}


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a message comes (never to a stream
    an earlier call left behind, e.g. a closed one)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _log_to_stderr() -> None:
    """Progress of this package on stderr. Only our logger gets a handler: a handler on the root
    logger would print every message of libraries with their own handler (huggingface_hub's retry
    warnings) a second time."""
    logger = logging.getLogger("napari_clipseg")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _check_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Refuse an option the (sub)command does not know, naming it and the closest one it does
    (argparse alone may take ``--treshold 0.3``'s value for a positional argument and blame that)."""
    import difflib

    command = parser
    for token in argv:
        choices = next((a.choices for a in command._actions if isinstance(a, argparse._SubParsersAction)), None)
        if not choices or token not in choices:
            break
        command = choices[token]
    known = [flag for action in command._actions for flag in action.option_strings]
    for token in argv:
        if token == "--":
            return
        flag = token.split("=", 1)[0]
        if flag.startswith("--") and not any(k.startswith(flag) for k in known):
            close = difflib.get_close_matches(flag, known, n=1)
            command.error(f"unknown option {flag}" + (f" (did you mean {close[0]}?)" if close else ""))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 failed, 2 bad usage, 130 interrupted)."""
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    _check_options(parser, argv)
    args = parser.parse_args(argv)
    _log_to_stderr()
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        done = "inputs finished before it keep their outputs" if args.command == "batch" else "no output was written"
        print(f"{PROG}: interrupted; {done}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, WeightsError, PlaneError, RecordError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
