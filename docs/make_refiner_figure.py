"""The picture of docs/annotation-loop.md's pixel refiner: a real nuclei crop no decoder saw, its
truth, the learnt decoder alone and decoder + pixel refiner.

A project over the 16 crops of the 2D nuclei image that the stardist package ships (``pip install
stardist --no-deps``; nothing is downloaded), the full-size model with random towers, 8 crops
verified as their truth with a Learn after each (the dock's Learn as I go), as
``benchmarks/bench_loop.py --holdout-test 8`` does.

Run: ``python docs/make_refiner_figure.py`` (writes docs/images/refiner-nuclei.png).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from figures import save_panels

import napari_clipseg as ncs
from napari_clipseg.evaluation.metrics import class_scores
from napari_clipseg.modeling.decoder_files import apply_decoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_loop import stardist_nuclei


def main() -> None:
    nuclei = stardist_nuclei()
    if nuclei is None:
        sys.exit("needs the stardist package's sample data: pip install stardist --no-deps")
    names = sorted(nuclei)
    order = np.random.default_rng(1).permutation(len(names))  # the held-out test's split
    train, test = [names[i] for i in order[:8]], [names[i] for i in order[8:]]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = ncs.save_pretrained(ncs.build_model("rd64-refined", seed=0), Path(tmp) / "model")
        images = Path(tmp) / "nuclei"
        images.mkdir()
        for name in names:
            tifffile.imwrite(images / f"{name}.tif", nuclei[name][0])
        spec = ncs.ModelSpec(str(model_dir), precision="float32")
        with ncs.open_project(images, Path(tmp) / "p", prompts=["nucleus"], model=spec, auto_learn=1) as project:
            project.prelabel()
            for name in train:
                project.verify(name, nuclei[name][1])
                if project.learn_due:
                    project.learn(repredict=False)
            project.prelabel(test)
            shown = test[0]
            image, truth = nuclei[shown]
            refined = project.prelabels(shown)
            alone = apply_decoder(spec.load(), project.decoder)
            decoder = ncs.segment(image, ["nucleus"], model=alone, threshold=project.decoders[-1]["threshold"])
    iou = lambda labels: class_scores(labels, truth, 1)["iou"]  # noqa: E731
    panels = [
        ("image (never verified)", image, "gray", None),
        ("truth", truth, "viridis", 1),
        (f"decoder alone (IoU {iou(decoder):.2f})", decoder, "viridis", 1),
        (f"decoder + pixel refiner (IoU {iou(refined):.2f})", refined, "viridis", 1),
    ]
    save_panels(panels, "refiner-nuclei.png", (11, 3.1))


if __name__ == "__main__":
    main()
