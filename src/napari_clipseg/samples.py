"""Sample images that ship inside scikit-image (never downloaded), with prompts that suit them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sample:
    name: str
    description: str
    prompts: tuple[str, ...]
    loader: str = ""  # skimage.data function, when it differs from the name


SAMPLES = {
    s.name: s
    for s in (
        Sample("astronaut", "Astronaut Eileen Collins (RGB photo)", ("person", "flag", "rocket")),
        Sample("coffee", "A cup of coffee (RGB photo)", ("coffee", "cup", "saucer", "spoon")),
        Sample("chelsea", "Chelsea the cat (RGB photo)", ("cat",)),
        Sample(
            "ihc",
            "Immunohistochemistry of colonic tissue (RGB microscopy)",
            ("cell nuclei", "tissue"),
            loader="immunohistochemistry",
        ),
        Sample("cell", "Phase-contrast cell (grey microscopy)", ("cell",)),
    )
}


def load_sample(name: str) -> np.ndarray:
    """The named sample image as a numpy array (read from scikit-image's installed data).

    Raises:
        ValueError: unknown name.
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}")
    from skimage import data

    return np.asarray(getattr(data, SAMPLES[name].loader or name)())


def striped_discs(seed: int, size: int = 96, count: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic task the zero-shot model cannot know: discs of horizontal stripes on a noisy
    background of vertical stripes. Returns ``(image, labels)``: float32 in [0, 1], labels 1 = disc.

    Used to show and test that fine-tuning the decoder learns a new structure (docs/finetune.md);
    ``count`` discs (they may overlap).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    scale = size / 96
    image = rng.normal(0.5, 0.08, (size, size)) + 0.15 * np.sin(xx / (2.0 * scale))
    labels = np.zeros((size, size), np.uint8)
    margin = int(18 * scale)
    for _ in range(count):
        cy, cx = rng.integers(margin, size - margin, 2)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < (int(rng.integers(9, 15)) * scale) ** 2
        image[inside] = 0.5 + 0.25 * np.sin(yy[inside] / (1.5 * scale)) + rng.normal(0, 0.05, inside.sum())
        labels[inside] = 1
    return np.clip(image, 0, 1).astype(np.float32), labels
