"""Annotator effort in the annotation loop: how many pixels a person changes to verify a dataset.

A simulated annotator verifies each image as its ground truth, through the project API
(``ncs.open_project``), three ways, side by side in one run on the same images and model:

* ``a_base``: the base model's pre-labels, no learning;
* ``b_file_order``: learning after every ``k`` verified images, images in file order;
* ``c_queue_order``: the same, images in the queue's order (``project.next()``).

For each: the changed pixels in total and as a share of (a)'s, the CPU time, the IoU of the images
not yet verified after each Learn, and the Spearman rank correlation between the review score and
the share of pixels the annotator then changed (over the images still waiting, right after each
Learn: images no decoder has seen). Datasets: the synthetic striped discs (1 to 5 discs per image,
the task the zero-shot model cannot know) and, when the ``stardist`` package is installed (it
ships a 2D fluorescence nuclei image with its instance masks; ``pip install stardist --no-deps``),
16 crops of it. Nothing is downloaded at run time.

    python benchmarks/bench_loop.py                   # full-size random model (this machine's only kind)
    python benchmarks/bench_loop.py --config tiny     # a minute, for a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import napari_clipseg as ncs
from _common import write_results
from napari_clipseg.errors import TrainingRefusedError
from napari_clipseg.evaluation.metrics import class_scores
from napari_clipseg.samples import striped_discs


def discs(n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Striped discs with 1 to 5 discs per image (so some need more review than others)."""
    return {f"discs{seed:02d}": striped_discs(seed, size=128, count=1 + seed % 5) for seed in range(n)}


def stardist_nuclei(crop: int = 128) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Crops of the 2D nuclei image that the stardist package ships (None when it is not installed)."""
    import tifffile

    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    image, mask = tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")
    out = {}
    for y in range(0, image.shape[0] - crop + 1, crop):
        for x in range(0, image.shape[1] - crop + 1, crop):
            region = (slice(y, y + crop), slice(x, x + crop))
            out[f"nuclei_{y:03d}_{x:03d}"] = (image[region], (mask[region] > 0).astype(np.uint8))
    return out


def _remaining_iou(project, truth: dict, waiting: list[str]) -> float | None:
    scores = [class_scores(project.prelabels(n), truth[n][1], 1)["iou"] for n in waiting]
    return float(np.nanmean(scores)) if scores else None


def _rank_correlation(project, truth: dict, waiting: list[str]) -> float | None:
    """Spearman between the review score and the share of pixels the annotator would change."""
    if len(waiting) < 4:
        return None
    scores = [project.score(n) for n in waiting]
    changed = [float(np.mean(project.prelabels(n) != truth[n][1])) for n in waiting]
    rho = spearmanr(scores, changed).statistic
    return None if np.isnan(rho) else float(rho)


def run_strategy(images: Path, truth: dict, model: ncs.ModelSpec, strategy: str, k: int, epochs: int) -> dict:
    """Verify every image once, as its ground truth; learn after every ``k`` (strategies b and c)."""
    started, cpu = time.perf_counter(), time.process_time()
    changed, steps = 0, []
    with tempfile.TemporaryDirectory() as folder:
        prompt = "nucleus" if "nuclei" in images.name else "disc"
        project = ncs.open_project(images, folder, prompts=[prompt], model=model)
        project.prelabel()
        base_rho = _rank_correlation(project, truth, project.names)
        order = iter(project.names)
        for number in range(1, len(project.names) + 1):
            name = project.next() if strategy == "c_queue_order" else next(order)
            changed += project.verify(name, truth[name][1])
            waiting = [n for n in project.names if project.state(n) == "pre-labelled"]
            if strategy != "a_base" and number % k == 0 and waiting:
                with contextlib.suppress(TrainingRefusedError):  # not better: the pre-labels stay as they were
                    project.learn(epochs=epochs, patience=max(3, epochs // 4))
                iou = _remaining_iou(project, truth, waiting)
                rho = _rank_correlation(project, truth, waiting)
                steps.append({"verified": number, "remaining_iou": iou, "rank_correlation": rho})
        project.close()
    return {
        "changed_pixels": int(changed),
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - started,
        "base_rank_correlation": base_rho,
        "learn_steps": steps,
    }


def bench_dataset(name: str, data: dict, model: ncs.ModelSpec, k: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / name
        images.mkdir()
        for image_name, (image, _) in data.items():
            np.save(images / f"{image_name}.npy", image)
        results = {}
        for strategy in ("a_base", "b_file_order", "c_queue_order"):
            results[strategy] = run_strategy(images, data, model, strategy, k, epochs)
            done = results[strategy]
            print(f"{name} {strategy}: {done['changed_pixels']} px, {done['cpu_s']:.0f} s CPU", flush=True)
    base = max(results["a_base"]["changed_pixels"], 1)
    for result in results.values():
        result["share_of_base"] = result["changed_pixels"] / base
        rhos = [s["rank_correlation"] for s in result["learn_steps"] if s["rank_correlation"] is not None]
        result["mean_rank_correlation_after_learn"] = float(np.mean(rhos)) if rhos else None
    pixels = sum(truth.size for _, truth in data.values())
    return {"images": len(data), "pixels": pixels, "k": k, "epochs": epochs, "strategies": results}


def _print(name: str, result: dict) -> None:
    print(f"\n{name}: {result['images']} images, {result['pixels']} pixels, learn every {result['k']}")
    print(f"{'strategy':15s} {'changed px':>11s} {'of (a)':>7s} {'CPU s':>7s}  remaining IoU after each Learn; rho")
    for strategy, r in result["strategies"].items():
        ious = " ".join(f"{s['remaining_iou']:.2f}" for s in r["learn_steps"] if s["remaining_iou"] is not None)
        rho = r["mean_rank_correlation_after_learn"]
        rho_text = f"{rho:.2f}" if rho is not None else f"base {r['base_rank_correlation'] or float('nan'):.2f}"
        print(
            f"{strategy:15s} {r['changed_pixels']:11d} {r['share_of_base']:7.2f} {r['cpu_s']:7.0f}  {ious}; {rho_text}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="rd64-refined", help="random model architecture (rd64-refined, tiny)")
    parser.add_argument("--model", help="a model source instead of random weights")
    parser.add_argument("--images", type=int, default=16, help="striped-disc images (default 16)")
    parser.add_argument("--k", type=int, default=4, help="learn after every k verified images (default 4)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--datasets", default="striped_discs,stardist_nuclei", help="comma-separated")
    parser.add_argument("--name", default="bench_loop", help="results/NAME.json (default bench_loop)")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.model or str(ncs.save_pretrained(ncs.build_model(args.config, seed=0), Path(tmp) / "model"))
        model = ncs.ModelSpec(source, precision=args.precision)
        wanted = args.datasets.split(",")
        datasets = {"striped_discs": discs(args.images)} if "striped_discs" in wanted else {}
        nuclei = stardist_nuclei() if "stardist_nuclei" in wanted else None
        if nuclei is not None:
            datasets["stardist_nuclei"] = dict(list(nuclei.items())[: args.images])
        results = {name: bench_dataset(name, data, model, args.k, args.epochs) for name, data in datasets.items()}
        chosen = ncs.load_model(source, dtype=args.precision).info.precision
    for name, result in results.items():
        _print(name, result)
    path = write_results(
        "bench_loop", {"model": args.model or f"random {args.config}", "precision": chosen, "results": results}
    )
    print(f"\nprecision {chosen}; wrote {path}")


if __name__ == "__main__":
    main()
