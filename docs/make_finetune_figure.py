"""The picture of docs/finetune.md: a held-out synthetic image, its truth, the base model's labels
and the fine-tuned decoder's (tiny random model of the tests, 6 training images, 6 epochs).

Run: ``python docs/make_finetune_figure.py`` (writes docs/images/finetune-discs.png).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import napari_clipseg as ncs
from napari_clipseg.learning.finetune import TrainingPair, finetune
from napari_clipseg.modeling.decoder_files import use_result
from napari_clipseg.samples import striped_discs


def tiny_model() -> torch.nn.Module:
    """The test suite's tiny model: random weights with a little noise on every parameter."""
    model = ncs.build_model("tiny", seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.02)
    return model.eval()


def main() -> None:
    base = tiny_model()
    pairs = [TrainingPair(*striped_discs(seed), name=str(seed)) for seed in range(6)]
    result = finetune(ncs.ClipSegPredictor(base), pairs, ["disc"], epochs=6, patience=6)
    tuned = use_result(tiny_model(), result)
    image, truth = striped_discs(101)
    panels = [
        ("image", image, "gray"),
        ("truth (corrected)", truth, "viridis"),
        ("base decoder", ncs.segment(image, ["disc"], model=base), "viridis"),
        (f"fine-tuned (held-out IoU {result.iou:.2f})", ncs.segment(image, ["disc"], model=tuned), "viridis"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.9), dpi=100)
    for ax, (title, data, cmap) in zip(axes, panels, strict=True):
        ax.imshow(data, cmap=cmap, interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    out = Path(__file__).parent / "images" / "finetune-discs.png"
    fig.savefig(out)
    print(out)


if __name__ == "__main__":
    main()
