"""Which learner refines *where*, and does an edge-aware upsampling help before anything is verified?

Side by side in one run, on the same inputs (docs/annotation-loop.md, "The pixel refiner"): a
project learns its decoder from 8 verified images (``learn(refiner=False)`` after each, as Learn as
I go does), then every candidate is scored on the other 8 images, which nobody verified:

* ``decoder``: the learnt decoder's own map (threshold 0.5); ``otsu``: a global Otsu threshold;
* ``refiner (shipped)``: the product's torch head on the image's features + the decoder's maps;
* scikit-learn's gradient-boosted trees and random forest (ilastik's learner) on the same sampled
  pixels, with the image's features only (the plain pixel classifier, no CLIPSeg) and with the
  decoder's maps too;
* kornia's guided filter and joint bilateral filter of the decoder's map, guided by the image (the
  edge-aware upsampling that needs no verified image).

For each: IoU, boundary IoU (2 px band), instance F1 at IoU 0.5 (connected components, and split
by the seeded watershed an export uses), the object corrections' cost (10/1/5/5), learn and
prediction seconds. Datasets: the 16 real nuclei crops (``pip install stardist --no-deps``) and 16
striped-disc images. Needs ``pip install scikit-learn kornia`` (benchmark only).

    python benchmarks/bench_refiner_choice.py                 # full-size random model
    python benchmarks/bench_refiner_choice.py --config tiny   # a quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.filters import threshold_otsu
from skimage.measure import label

import napari_clipseg as ncs
from _common import write_results
from bench_loop import _instance_f1, _nuclei_ids, discs, stardist_nuclei
from napari_clipseg.evaluation.effort import effort
from napari_clipseg.evaluation.metrics import class_scores
from napari_clipseg.learning.pixels import learn_refiner, sample_plane
from napari_clipseg.segmentation.refiner import feature_count, pixel_features, refiner_intensities

Maps = dict[str, np.ndarray]


def learnt_maps(data: dict, source: str, train: list[str]) -> Maps:
    """The decoder's probability maps of every image after a project learnt from ``train``."""
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        for name, (image, _) in data.items():
            tifffile.imwrite(images / f"{name}.tif", image)
        spec = ncs.ModelSpec(source)
        with ncs.open_project(images, Path(tmp) / "p", prompts=["object"], model=spec, auto_learn=1) as project:
            project.prelabel()
            for name in train:
                project.verify(name, data[name][1])
                if project.learn_due:
                    project.learn(repredict=False, refiner=False)
            learnt = project.current_spec()
        predictor = ncs.ClipSegPredictor(ncs.load_model(learnt))
        return {name: np.asarray(ncs.run(ncs.iter_segment(image, ["object"], predictor)).probabilities)
                for name, (image, _) in data.items()}  # fmt: skip


def score(predicted: Maps, data: dict, ids: dict, test: list[str]) -> dict[str, float]:
    """Mean IoU, boundary IoU and instance F1 (plain and split), and the summed object cost."""
    rows = []
    for name in test:
        mask, truth = predicted[name].astype(np.uint8), data[name][1]
        worked = effort(mask, truth, corrected_instances=ids[name])
        rows.append(
            (class_scores(mask, truth, 1)["iou"], worked["boundary_iou"], _instance_f1(mask, ids[name]),
             _instance_f1(mask, ids[name], split=True), worked["objects_cost"])
        )  # fmt: skip
    r = np.asarray(rows, dtype=float)
    return {
        "iou": float(r[:, 0].mean()),
        "boundary_iou": float(np.nanmean(r[:, 1])),
        "f1": float(r[:, 2].mean()),
        "f1_split": float(r[:, 3].mean()),
        "object_cost": float(r[:, 4].sum()),
    }


def candidates(data: dict, maps: Maps, train: list[str], test: list[str]) -> dict[str, Callable[[], Maps]]:
    """Each candidate as a function that learns (if it does) and predicts the test images."""
    import kornia
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    rng = np.random.default_rng(0)
    samples = [sample_plane(data[n][0], maps[n], data[n][1], 1, rng) for n in train]
    x, y = np.concatenate([s.features for s in samples]), np.concatenate([s.labels for s in samples])
    image_only = slice(0, feature_count(1, 0))
    forest = lambda: RandomForestClassifier(100, min_samples_leaf=2, n_jobs=-1)  # noqa: E731

    def trees(make: Callable[[], object], columns: slice) -> Callable[[], Maps]:
        def run() -> Maps:
            learner = make().fit(x[:, columns], y)
            out = {}
            for n in test:
                features = pixel_features(refiner_intensities(data[n][0], None), maps[n])[..., columns]
                flat = features.reshape(-1, features.shape[-1])
                out[n] = learner.predict_proba(flat)[:, 1].reshape(data[n][0].shape) > 0.5
            return out

        return run

    def shipped() -> Maps:
        refiner = learn_refiner(samples, ["object"], 1, None)
        return {n: refiner.refine_plane(data[n][0], maps[n])[0] > 0.5 for n in test}

    def filtered(kind: str) -> Maps:
        out = {}
        for n in test:
            guide = torch.from_numpy(refiner_intensities(data[n][0], None).astype(np.float32))[None, None]
            p = torch.from_numpy(maps[n][None].astype(np.float32))
            if kind == "guided":  # on the logits, so the filter works where the decision is made
                smooth = torch.sigmoid(kornia.filters.guided_blur(guide, torch.logit(p.clamp(1e-4, 1 - 1e-4)), 5, 1e-2))
            else:
                smooth = kornia.filters.joint_bilateral_blur(p, guide, (9, 9), 0.1, (3.0, 3.0))
            out[n] = smooth[0, 0].numpy() > 0.5
        return out

    return {
        "decoder": lambda: {n: maps[n][0] > 0.5 for n in test},
        "otsu": lambda: {n: data[n][0] > threshold_otsu(data[n][0]) for n in test},
        "refiner (shipped)": shipped,
        "trees, image only": trees(lambda: HistGradientBoostingClassifier(max_iter=100), image_only),
        "trees, image + decoder": trees(lambda: HistGradientBoostingClassifier(max_iter=100), slice(None)),
        "forest, image only": trees(forest, image_only),
        "forest, image + decoder": trees(forest, slice(None)),
        "guided filter": lambda: filtered("guided"),
        "joint bilateral": lambda: filtered("bilateral"),
    }  # fmt: skip


def bench(data: dict, ids: dict, source: str) -> dict:
    names = sorted(data)
    order = np.random.default_rng(1).permutation(len(names))
    train, test = [names[i] for i in order[:8]], [names[i] for i in order[8:]]
    maps = learnt_maps(data, source, train)
    rows = {}
    for name, run in candidates(data, maps, train, test).items():
        started = time.perf_counter()
        predicted = run()
        rows[name] = {**score(predicted, data, ids, test), "seconds": time.perf_counter() - started}
    return {"train": train, "test": test, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="rd64-refined", help="random model architecture (rd64-refined, tiny)")
    args = parser.parse_args()
    torch.manual_seed(0)
    datasets = {"striped_discs": (discs(16), None)}
    nuclei = stardist_nuclei()
    if nuclei is not None:
        datasets["stardist_nuclei"] = (nuclei, _nuclei_ids())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = str(ncs.save_pretrained(ncs.build_model(args.config, seed=0), Path(tmp) / "model"))
        for name, (data, ids) in datasets.items():
            ids = ids or {n: label(truth > 0) for n, (_, truth) in data.items()}
            results[name] = bench(data, ids, source)
            print(f"\n{name}: learnt from 8, scored on the other 8 (seconds: learn + predict the 8)")
            print(f"{'':24s} {'IoU':>6s} {'edge IoU':>8s} {'F1':>6s} {'split':>6s} {'objects':>8s} {'s':>6s}")
            for row, r in results[name]["rows"].items():
                print(
                    f"{row:24s} {r['iou']:6.3f} {r['boundary_iou']:8.3f} {r['f1']:6.3f} {r['f1_split']:6.3f} "
                    f"{r['object_cost']:8.0f} {r['seconds']:6.2f}"
                )
    print(f"\nwrote {write_results('bench_refiner_choice', {'model': f'random {args.config}', 'results': results})}")


if __name__ == "__main__":
    main()
