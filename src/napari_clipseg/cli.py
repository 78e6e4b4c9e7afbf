"""``napari-clipseg`` command line: segment images headless, list samples, write random weights.

Errors print one line to stderr and exit non-zero; existing files are never overwritten unless
``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .constants import DEFAULT_HUB_ID, DEFAULT_THRESHOLD
from .samples import SAMPLES

PROG = "napari-clipseg"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="CLIPSeg segmentation from text prompts.")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment one image and write a label image + JSON sidecar")
    source = seg.add_mutually_exclusive_group(required=True)
    source.add_argument("image", nargs="?", help="image file (TIFF, PNG, JPEG, ...)")
    source.add_argument("--sample", choices=sorted(SAMPLES), help="use a sample image shipped with scikit-image")
    seg.add_argument(
        "-p",
        "--prompt",
        action="append",
        required=True,
        help="prompt(s); repeat or separate with commas: -p 'nucleus, membrane'",
    )
    seg.add_argument("-o", "--output", required=True, type=Path, help="label image to write (.tif, .png, .npy)")
    seg.add_argument(
        "-m",
        "--model",
        default=DEFAULT_HUB_ID,
        help=f"hub id, transformers directory, or original .pth (default {DEFAULT_HUB_ID})",
    )
    seg.add_argument("--backbone", help="local CLIP ViT-B/16 weights for an original .pth checkpoint")
    seg.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="probability threshold (0.4)")
    seg.add_argument("--min-size", type=int, default=0, help="remove objects smaller than this many pixels")
    seg.add_argument("--probabilities", type=Path, help="also write the (P, ...) probabilities here (.npy, .tif)")
    seg.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "whole", "tiled", "both"],
        help="whole image, native-resolution tiles, or both (auto: by size)",
    )
    seg.add_argument("--overlap", type=int, default=44, help="tile overlap in pixels (default 44)")
    seg.add_argument("--channels", help="channels to use as R,G,B, e.g. '0,2,-1' (-1: empty)")
    seg.add_argument(
        "--rgb",
        choices=["auto", "yes", "no"],
        default="auto",
        help="is the last axis colour channels? auto: yes for 3 or 4 values in the last axis",
    )
    seg.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    seg.add_argument("--precision", default="float32", choices=["float32", "float16", "bfloat16"])
    seg.add_argument("--overwrite", action="store_true", help="replace existing output files")

    rnd = sub.add_parser("random-weights", help="write a randomly initialised model (offline trials, tests)")
    rnd.add_argument("directory", type=Path)
    rnd.add_argument("--config", default="rd64-refined", help="architecture name (rd64-refined, rd64, rd16, tiny)")
    rnd.add_argument("--seed", type=int, default=0)

    sub.add_parser("samples", help="list the sample images")
    return parser


def _segment(args: argparse.Namespace) -> int:
    from .export import check_suffix, provenance, read_array, write_array, write_json
    from .pipeline import run
    from .planes import iter_segment_nd
    from .predictor import ClipSegPredictor
    from .prompts import split_prompts
    from .samples import load_sample
    from .transforms import guess_rgb, parse_channels
    from .weights import load_model

    prompts = [p for text in args.prompt for p in split_prompts(text)]
    if not prompts:
        raise ValueError("give at least one non-empty prompt with -p")
    check_suffix(args.output)  # before loading the model
    sidecar = args.output.with_name(args.output.name + ".json")
    targets = [args.output, sidecar] + ([args.probabilities] if args.probabilities else [])
    for target in targets:
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"{target} already exists (use --overwrite to replace it)")
    image = load_sample(args.sample) if args.sample else read_array(args.image)
    model = load_model(args.model, device=args.device, dtype=args.precision, backbone=args.backbone)
    rgb = args.rgb == "yes" or (args.rgb == "auto" and guess_rgb(image.shape))
    generator = iter_segment_nd(
        image,
        prompts,
        ClipSegPredictor(model),
        rgb=rgb,
        mode=args.mode,
        overlap=args.overlap,
        channels=parse_channels(args.channels or ""),
        threshold=args.threshold,
        min_size=args.min_size,
    )
    result = run(generator, lambda e: logging.info("[%d/%d] %s", e.step, e.total, e.stage))
    write_array(args.output, result.labels, overwrite=args.overwrite)
    if args.probabilities:
        write_array(args.probabilities, result.probabilities, overwrite=args.overwrite)
    record = provenance(
        model,
        image=args.sample or str(args.image),
        image_shape=list(image.shape),
        classes=[{"value": i + 1, "name": p} for i, p in enumerate(prompts)],
        threshold=args.threshold,
        min_size=args.min_size,
        mode=result.metadata["mode"],
    )
    write_json(sidecar, record, overwrite=args.overwrite)
    counts = ", ".join(f"{p}: {int((result.labels == i + 1).sum())} px" for i, p in enumerate(prompts))
    print(f"wrote {args.output} ({counts}) and {sidecar}")
    return 0


def _random_weights(args: argparse.Namespace) -> int:
    from .weights import build_model, save_pretrained

    save_pretrained(build_model(args.config, seed=args.seed), args.directory)
    print(
        f"{PROG}: wrote RANDOM weights ({args.config}) to {args.directory}; masks from them are meaningless",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 failed, 2 bad usage)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from .weights import WeightsError

    try:
        if args.command == "segment":
            return _segment(args)
        if args.command == "random-weights":
            return _random_weights(args)
        for sample in SAMPLES.values():
            print(f"{sample.name:10s} {sample.description}  (try: {', '.join(sample.prompts)})")
        return 0
    except (ValueError, TypeError, OSError, WeightsError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
