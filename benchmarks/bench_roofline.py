"""Each stage of a prompt held against its FLOP count: the roofline table of docs/performance.md.

Full-size rd64-refined with random weights, float32, one 352-px image, this machine's threads. For
each stage: its FLOPs (torch's ``FlopCounterMode``: matrix products, convolutions, attention),
its median milliseconds, the GFLOP/s reached and their share of the peak, where the peak is a
large float32 matrix product measured in the same run (what the CPU's kernels reach at best). The
decoder's blocks are timed on both kernel paths (torch's fused fast path and op by op,
:mod:`napari_clipseg.precision.decoder_path`) on the model's own activations; the pixel refiner
and the post-processing are scikit-image and numpy work beside small matrix products.

    python benchmarks/bench_roofline.py            # this CPU as it is
    python benchmarks/bench_roofline.py --avx2     # and again held to AVX2 (a child process)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import napari_clipseg as ncs
from _common import interleaved_medians, median_seconds, write_results
from napari_clipseg.modeling import backbone
from napari_clipseg.segmentation.postprocess import labels_from_probabilities
from napari_clipseg.segmentation.prompts import tokenize
from napari_clipseg.segmentation.refiner import PixelRefiner, feature_count, make_head
from napari_clipseg.segmentation.transforms import resize

#: What holds every kernel library of torch to AVX2 on a larger CPU.
AVX2 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
}


def flops(fn) -> int:
    """FLOPs of ``fn`` with torch's fused attention kernels off, so attention runs op by op where the
    counter sees it (the fused kernels are invisible to it; the arithmetic is the same)."""
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    return counter.get_total_flops()


def synced(fn, device: torch.device):
    """``fn``, waiting for the GPU to finish (so a timing is the work's, not its launch's)."""
    if device.type != "cuda":
        return fn
    return lambda: (fn(), torch.cuda.synchronize(device))


def peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of a large matrix product on ``device`` at ``dtype`` (the practical peak)."""
    n = 2048 if device.type == "cpu" else 8192
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n**3 / median_seconds(synced(lambda: a @ b, device), 5) / 1e9


def stages(model, device: torch.device) -> dict[str, tuple]:
    """Each stage as (function, FLOPs); the decoder's blocks on both paths. The refiner and the
    post-processing run on the CPU wherever the model runs (as in the product)."""
    decoder, layers = model.decoder, model.config.extract_layers
    pixels = torch.randn(1, 3, 352, 352, device=device)
    ids = tokenize(["a photo of a nucleus"]).to(device)
    with torch.no_grad():
        taps, grid = backbone.vision_taps(model.towers.visual, pixels, layers)
        reduced = decoder.reduce(taps)
        conditional = model.encode_text(ids)
        logits = decoder.decode(reduced, conditional, grid)
        features = torch.randn(1, decoder.film_mul.out_features, *grid, device=device)
    plane = np.random.default_rng(0).random((512, 512)).astype(np.float32)
    refiner = PixelRefiner(make_head(feature_count(1, 1), 1).eval(), ["x"], 1)
    maps = np.random.default_rng(1).random((1, 512, 512)).astype(np.float32)

    def decode(fused: bool):
        def run():
            decoder.fused_blocks = fused
            return decoder.decode(reduced, conditional, grid)

        return run

    def post():
        probabilities = torch.sigmoid(resize(logits[:, None], (512, 512))[:, 0]).cpu().numpy()
        return labels_from_probabilities(probabilities, 0.5)

    cases = {
        "vision tower (to the deepest tap)": lambda: backbone.vision_taps(model.towers.visual, pixels, layers),
        "text tower (1 prompt)": lambda: model.encode_text(ids),
        "reduce (3 taps, once per image)": lambda: decoder.reduce(taps),
        "decode, fused blocks": decode(True),
        "decode, op by op": decode(False),
        "head (transposed convolutions)": lambda: decoder.trans_conv(features),
        "post-processing (512² labels)": post,
        "pixel refiner (512² plane)": lambda: refiner.refine_plane(plane, maps, (0.0, 1.0)),
    }
    counted = {name: flops(fn) for name, fn in cases.items() if "fused" not in name}
    counted["decode, fused blocks"] = counted["decode, op by op"]  # the same arithmetic
    return {name: (synced(fn, device), counted[name]) for name, fn in cases.items()}


def measure(repeats: int, device: str = "cpu") -> dict:
    """The table's figures on ``device`` (float32)."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = ncs.build_model("rd64-refined", seed=0).eval().to(device)
    found = stages(model, device)
    with torch.inference_mode():
        seconds = interleaved_medians({name: fn for name, (fn, _) in found.items()}, repeats)
    peak = peak_gflops(device)
    rows = {}
    for name, (_, count) in found.items():
        rate = count / seconds[name] / 1e9
        rows[name] = {"gflop": count / 1e9, "ms": seconds[name] * 1000, "gflops": rate, "share_of_peak": rate / peak}
    return {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "peak_gflops": peak,
        "stages": rows,
    }


def show(title: str, result: dict) -> None:
    print(f"\n{title}: torch capability {result['cpu_capability']}, {result['threads']} threads, "
          f"peak (2048² float32 product) {result['peak_gflops']:.0f} GFLOP/s")  # fmt: skip
    print(f"{'stage':36s} {'GFLOP':>8s} {'ms':>8s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for name, r in result["stages"].items():
        print(f"{name:36s} {r['gflop']:8.3f} {r['ms']:8.2f} {r['gflops']:8.1f} {r['share_of_peak']:8.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--avx2", action="store_true", help="also run held to AVX2 in a child process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    native = measure(args.repeats)
    if args.child:
        print(json.dumps(native))
        return
    results = {"native": native}
    if args.avx2:
        command = [sys.executable, __file__, "--child", "--repeats", str(args.repeats)]
        done = subprocess.run(command, env=os.environ | AVX2, capture_output=True, text=True, check=True)
        results["avx2"] = json.loads(done.stdout.strip().splitlines()[-1])
    for name, result in results.items():
        show(name, result)
    print(f"\nwrote {write_results('bench_roofline', {'model': 'random rd64-refined', 'results': results})}")


if __name__ == "__main__":
    main()
