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
