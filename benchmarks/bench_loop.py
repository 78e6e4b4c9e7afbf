"""Annotator effort in the annotation loop: how many pixels a person changes to verify a dataset.

A simulated annotator verifies each image as its ground truth, in the queue's order, through the
project API (``ncs.open_project``, ``project.next()``, ``project.verify``) with the settings a
user gets by default (no tuned steps, refusals kept as they come), three ways, side by side in
one run on the same images and model:

* ``a_base``: the base model's pre-labels, no learning;
* ``b_every_k``: a Learn after every ``k`` verified images (``auto_learn=k``);
* ``c_auto_learn``: a Learn after every verified image (``auto_learn=1``, the dock's default).

Each Learn is warm-started from the current decoder and bounded in steps; the waiting images are
re-predicted by the decoder alone when it is kept. For each: the changed pixels in total and as a
share of (a)'s, the CPU time, each Learn's seconds and whether it was kept, the IoU of the images
not yet verified after each Learn, and the Spearman rank correlation between the review score and
the share of pixels the annotator then changed (over the images still waiting, right after each
Learn: images no decoder has seen). Datasets: the synthetic striped discs (1 to 5 discs per image,
the task the zero-shot model cannot know) and, when the ``stardist`` package is installed (it
ships a 2D fluorescence nuclei image with its instance masks; ``pip install stardist --no-deps``),
16 crops of it. Nothing is downloaded at run time.

    python benchmarks/bench_loop.py                   # full-size random model (this machine's only kind)
    python benchmarks/bench_loop.py --config tiny     # a minute, for a quick look
    python benchmarks/bench_loop.py --holdout-test 8  # also: learn from 8 nuclei crops, score the other 8 against Otsu
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import napari_clipseg as ncs
from _common import write_results
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


def run_strategy(
    images: Path, truth: dict, model: ncs.ModelSpec, strategy: str, k: int, ids: dict | None = None
) -> dict:
    """Verify every image once, as its ground truth, in the queue's order; learn as ``strategy``
    says. Counts the annotator's work on each pre-label shown: changed pixels, boundary IoU and
    object corrections (against the truth's instance ids, ``ids``, when it has them)."""
    from napari_clipseg.evaluation.effort import effort

    started, cpu = time.perf_counter(), time.process_time()
    changed, steps, objects_cost, bands, per_image = 0, [], 0.0, [], []
    every = {"a_base": 0, "b_every_k": k, "c_auto_learn": 1}[strategy]
    with tempfile.TemporaryDirectory() as folder:
        prompt = "nucleus" if "nuclei" in images.name else "disc"
        project = ncs.open_project(images, folder, prompts=[prompt], model=model, auto_learn=every)
        project.prelabel()
        base_rho = _rank_correlation(project, truth, project.names)
        learnt = None
        for _ in range(len(project.names)):
            name = project.next()  # runs the Learn auto_learn asks for first (and re-predicts)
            if project.last_learn is not learnt and project.last_learn is not None:
                learnt = project.last_learn
                waiting = [n for n in project.names if project.state(n) == "pre-labelled"]
                steps.append(
                    {
                        "verified": project.status()["verified"],
                        "seconds": learnt.seconds,
                        "kept": learnt.accepted,
                        "held_out_iou": learnt.iou,
                        "current_iou": learnt.current_iou,
                        "remaining_iou": _remaining_iou(project, truth, waiting),
                        "rank_correlation": _rank_correlation(project, truth, waiting),
                    }
                )
            worked = effort(project.prelabels(name), truth[name][1], corrected_instances=(ids or {}).get(name))
            objects_cost += worked["objects_cost"]
            bands.append(worked["boundary_iou"])
            moved = project.verify(name, truth[name][1])
            changed += moved
            per_image.append({"name": name, "changed_pixels": int(moved), "object_cost": worked["objects_cost"]})
        project.close()
    return {
        "changed_pixels": int(changed),
        "object_cost": objects_cost,
        "boundary_iou": float(np.nanmean(bands)),
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - started,
        "base_rank_correlation": base_rho,
        "learn_steps": steps,
        "per_image": per_image,
    }


def bench_dataset(name: str, data: dict, model: ncs.ModelSpec, k: int, ids: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / name
        images.mkdir()
        for image_name, (image, _) in data.items():
            np.save(images / f"{image_name}.npy", image)
        results = {}
        for strategy in ("a_base", "b_every_k", "c_auto_learn"):
            results[strategy] = run_strategy(images, data, model, strategy, k, ids)
            done = results[strategy]
            print(
                f"{name} {strategy}: {done['changed_pixels']} px, object cost {done['object_cost']:.0f}, "
                f"boundary IoU {done['boundary_iou']:.3f}, {done['cpu_s']:.0f} s CPU",
                flush=True,
            )
    base = max(results["a_base"]["changed_pixels"], 1)
    base_objects = max(results["a_base"]["object_cost"], 1)
    for result in results.values():
        result["share_of_base"] = result["changed_pixels"] / base
        result["object_cost_share_of_base"] = result["object_cost"] / base_objects
        rhos = [s["rank_correlation"] for s in result["learn_steps"] if s["rank_correlation"] is not None]
        result["mean_rank_correlation_after_learn"] = float(np.mean(rhos)) if rhos else None
    pixels = sum(truth.size for _, truth in data.values())
    return {"images": len(data), "pixels": pixels, "k": k, "strategies": results}


def _instance_f1(predicted: np.ndarray, truth_ids: np.ndarray, split: bool = False) -> float:
    """F1 of objects matched at IoU > 0.5: the prediction's connected components (``split``: its
    instances, touching objects split by the seeded watershed an export uses) against the truth's ids."""
    from skimage.measure import label

    from napari_clipseg.segmentation.postprocess import InstanceSettings

    ids = InstanceSettings().apply(predicted).ids if split else label(predicted > 0)
    truths, found = [i for i in np.unique(truth_ids) if i], [i for i in np.unique(ids) if i]
    if not truths and not found:
        return 1.0
    matched, used = 0, set()
    for t in truths:
        mask = truth_ids == t
        for p in np.unique(ids[mask]):
            if p and p not in used:
                other = ids == p
                if (mask & other).sum() / (mask | other).sum() > 0.5:
                    matched, used = matched + 1, used | {p}
                    break
    return 2 * matched / (len(truths) + len(found))


def holdout_test(nuclei: dict, model: ncs.ModelSpec, n_train: int) -> dict:
    """Learn (the project's defaults, a Learn after every verified image) from ``n_train`` crops,
    then score the crops it never saw against a global Otsu threshold: IoU and instance F1."""
    import tifffile
    from skimage.filters import threshold_otsu

    from napari_clipseg.evaluation.effort import effort

    names = sorted(nuclei)
    order = np.random.default_rng(1).permutation(len(names))
    train = [names[i] for i in order[:n_train]]
    test = [names[i] for i in order[n_train:]]
    ids = _nuclei_ids()
    rows = {"otsu": [], "base": [], "learnt": []}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "nuclei"
        images.mkdir()
        for name in names:
            tifffile.imwrite(images / f"{name}.tif", nuclei[name][0])
        with ncs.open_project(images, Path(tmp) / "p", prompts=["nucleus"], model=model, auto_learn=1) as project:
            project.prelabel()
            base = {n: project.prelabels(n) for n in test}
            learns = []
            for name in train:
                project.verify(name, nuclei[name][1])
                if project.learn_due:
                    project.learn(repredict=False)
                    learns.append({"seconds": project.last_learn.seconds, "kept": project.last_learn.accepted})
            project.prelabel(test)
            for name in test:
                image, truth = nuclei[name]
                otsu = (image > threshold_otsu(image)).astype(np.uint8)
                for key, predicted in (("otsu", otsu), ("base", base[name]), ("learnt", project.prelabels(name))):
                    iou = class_scores(predicted, truth, 1)["iou"]
                    worked = effort(predicted, truth, corrected_instances=ids[name])
                    f1, split = _instance_f1(predicted, ids[name]), _instance_f1(predicted, ids[name], split=True)
                    rows[key].append((iou, f1, worked["boundary_iou"], worked["objects_cost"], split))
    summary = {
        k: {
            "iou": float(np.mean([r[0] for r in v])),
            "f1": float(np.mean([r[1] for r in v])),
            "boundary_iou": float(np.nanmean([r[2] for r in v])),
            "object_cost": float(np.sum([r[3] for r in v])),
            "f1_split": float(np.mean([r[4] for r in v])),
        }
        for k, v in rows.items()
    }
    return {"train": train, "test": test, "learns": learns, "scores": summary}


def _nuclei_ids(crop: int = 128) -> dict[str, np.ndarray]:
    """The instance ids of the stardist crops (the masks ship with ids; bench uses them as 0/1)."""
    import tifffile

    spec = importlib.util.find_spec("stardist")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    mask = tifffile.imread(folder / "mask2d.tif")
    return {
        f"nuclei_{y:03d}_{x:03d}": mask[y : y + crop, x : x + crop]
        for y in range(0, mask.shape[0] - crop + 1, crop)
        for x in range(0, mask.shape[1] - crop + 1, crop)
    }


def _print(name: str, result: dict) -> None:
    print(f"\n{name}: {result['images']} images, {result['pixels']} pixels, learn every {result['k']}")
    print(
        f"{'strategy':15s} {'changed px':>11s} {'of (a)':>7s} {'objects':>8s} {'of (a)':>7s} {'edge IoU':>8s} "
        f"{'CPU s':>7s} {'Learns (kept)':>13s} {'s/Learn':>8s}  remaining IoU after each Learn; rho"
    )
    for strategy, r in result["strategies"].items():
        steps = r["learn_steps"]
        ious = " ".join(f"{s['remaining_iou']:.2f}" for s in steps if s["remaining_iou"] is not None)
        rho = r["mean_rank_correlation_after_learn"]
        rho_text = f"{rho:.2f}" if rho is not None else f"base {r['base_rank_correlation'] or float('nan'):.2f}"
        learns = f"{len(steps)} ({sum(s['kept'] for s in steps)})"
        per = f"{np.mean([s['seconds'] for s in steps]):.1f}" if steps else "-"
        print(
            f"{strategy:15s} {r['changed_pixels']:11d} {r['share_of_base']:7.2f} {r['object_cost']:8.0f} "
            f"{r['object_cost_share_of_base']:7.2f} {r['boundary_iou']:8.3f} {r['cpu_s']:7.0f} {learns:>13s} "
            f"{per:>8s}  {ious}; {rho_text}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="rd64-refined", help="random model architecture (rd64-refined, tiny)")
    parser.add_argument("--model", help="a model source instead of random weights")
    parser.add_argument("--images", type=int, default=16, help="striped-disc images (default 16)")
    parser.add_argument("--k", type=int, default=4, help="(b): learn after every k verified images (default 4)")
    parser.add_argument(
        "--holdout-test", type=int, default=0, metavar="N", help="learn from N nuclei crops, score the rest (0: skip)"
    )
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--datasets", default="striped_discs,stardist_nuclei", help="comma-separated")
    parser.add_argument("--name", default="bench_loop", help="results/NAME.json (default bench_loop)")
    parser.add_argument("--no-strategies", action="store_true", help="only the held-out test")
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
        ids = _nuclei_ids() if nuclei is not None else {}
        results = {
            name: bench_dataset(name, data, model, args.k, ids if name == "stardist_nuclei" else None)
            for name, data in ({} if args.no_strategies else datasets).items()
        }
        if args.holdout_test and nuclei is not None:
            results["held_out_test"] = holdout_test(nuclei, model, args.holdout_test)
        chosen = ncs.load_model(source, dtype=args.precision).info.precision
    for name, result in results.items():
        if name == "held_out_test":
            scores = result["scores"]
            print(f"\nheld-out test: learnt from {len(result['train'])} crops, scored on {len(result['test'])}")
            for key, value in scores.items():
                print(
                    f"  {key:7s} IoU {value['iou']:.3f}  boundary IoU {value['boundary_iou']:.3f}  "
                    f"instance F1 {value['f1']:.3f} (split {value['f1_split']:.3f})  "
                    f"object cost {value['object_cost']:.0f}"
                )
            continue
        _print(name, result)
    path = write_results(
        args.name, {"model": args.model or f"random {args.config}", "precision": chosen, "results": results}
    )
    print(f"\nprecision {chosen}; wrote {path}")


if __name__ == "__main__":
    main()
