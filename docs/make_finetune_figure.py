"""The picture of docs/finetune.md: a held-out synthetic image, its truth, the base model's labels
and the fine-tuned decoder's (tiny random model of the tests, 6 training images, 20 passes at 2e-3).

Run: ``python docs/make_finetune_figure.py`` (writes docs/images/finetune-discs.png).
"""

from __future__ import annotations

import torch
from figures import save_panels

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
    result = finetune(ncs.ClipSegPredictor(base), pairs, ["disc"], epochs=20, patience=20, learning_rate=2e-3)
    tuned = use_result(tiny_model(), result)
    image, truth = striped_discs(101)
    panels = [
        ("image", image, "gray", 1),
        ("truth (corrected)", truth, "viridis", 1),
        ("base decoder", ncs.segment(image, ["disc"], model=base), "viridis", 1),
        (f"fine-tuned (held-out IoU {result.iou:.2f})", ncs.segment(image, ["disc"], model=tuned), "viridis", 1),
    ]
    save_panels(panels, "finetune-discs.png", (10, 2.9))


if __name__ == "__main__":
    main()
