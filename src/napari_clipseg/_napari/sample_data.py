"""napari sample data: images that ship inside scikit-image (nothing is downloaded)."""

from __future__ import annotations

from ..samples import SAMPLES, load_sample


def _sample(name: str) -> list[tuple]:
    image = load_sample(name)
    sample = SAMPLES[name]
    meta = {"name": name, "rgb": image.ndim == 3, "metadata": {"suggested_prompts": list(sample.prompts)}}
    return [(image, meta, "image")]


def astronaut() -> list[tuple]:
    return _sample("astronaut")


def coffee() -> list[tuple]:
    return _sample("coffee")


def ihc() -> list[tuple]:
    return _sample("ihc")


def cell() -> list[tuple]:
    return _sample("cell")
