"""Regenerate the documentation screenshots: ``xvfb-run -a python docs/make_screenshots.py MODEL_DIR``.

MODEL_DIR is any model source; without internet, write random weights first with
``napari-clipseg random-weights MODEL_DIR`` (the masks are then meaningless, as the captions say).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NAPARI_CLIPSEG_CONFIG_DIR", tempfile.mkdtemp())

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_clipseg._napari.widget import ClipSegWidget

OUT = Path(__file__).parent / "images"


def settle(seconds: float = 0.5) -> None:
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def save(viewer: napari.Viewer, name: str) -> None:
    """Screenshot the whole window, stored as a 256-colour PNG to keep the repository small."""
    from PIL import Image

    path = OUT / name
    viewer.screenshot(str(path), canvas_only=False)
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def run(widget: ClipSegWidget) -> None:
    widget.run()
    while widget.is_running:
        settle(0.05)
    settle()


def main(model: str) -> None:
    OUT.mkdir(exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    widget = ClipSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CLIPSeg", area="right")
    widget._source.value = model

    viewer.open_sample("napari-clipseg", "astronaut")
    widget._prompts.value = "person\nflag\nrocket"
    run(widget)
    result = widget._results.last.result
    widget._threshold.value = round(float(np.quantile(result.probabilities.max(0), 0.6)), 2)
    settle()
    save(viewer, "widget-text-prompts.png")

    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    viewer.open_sample("napari-clipseg", "cell")
    widget._prompts.value = "cell"
    widget._show_probs.value = True
    run(widget)
    viewer.layers["clipseg: cell"].visible = False
    viewer.layers.selection.active = viewer.layers["clipseg p: cell"]
    settle()
    save(viewer, "widget-probabilities.png")
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    (image,) = viewer.open_sample("napari-clipseg", "coffee")
    box = np.array([[40, 170], [40, 440], [300, 440], [300, 170]], float)  # around the cup
    shapes = viewer.add_shapes(
        [box], shape_type="rectangle", name="example", edge_color="yellow", face_color="transparent", edge_width=4
    )
    widget._image.value = image
    widget._prompts.value = ""
    widget._show_probs.value = False
    widget._example.support.value = shapes
    widget._example.class_name.value = "cup"
    run(widget)
    viewer.layers.selection.active = shapes
    save(viewer, "widget-visual-prompt.png")
    viewer.close()
    support_strip(image.data, shapes.to_masks(mask_shape=image.data.shape[:2])[0])


def support_strip(image: np.ndarray, mask: np.ndarray) -> None:
    """What the model sees for one support region, for a few engineering modes (no weights involved)."""
    from PIL import Image, ImageDraw

    from napari_clipseg.constants import IMAGENET_MEAN, IMAGENET_STD
    from napari_clipseg.visual import engineer_visual_prompt

    tiles = [Image.fromarray(image).resize((352, 352))]
    ys, xs = np.nonzero(mask)
    scale_y, scale_x = 352 / image.shape[0], 352 / image.shape[1]
    ImageDraw.Draw(tiles[0]).rectangle(
        [xs.min() * scale_x, ys.min() * scale_y, xs.max() * scale_x, ys.max() * scale_y], outline=(255, 220, 0), width=4
    )
    for mode in ("crop_blur_darken", "blur_darken", "crop", "mask"):
        support = engineer_visual_prompt(image, mask, mode).transpose(1, 2, 0)
        rgb = np.clip(support * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN), 0, 1)
        tiles.append(Image.fromarray((rgb * 255).astype(np.uint8)))
    strip = Image.new("RGB", (352 * len(tiles) + 8 * (len(tiles) - 1), 352), (255, 255, 255))
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * 360, 0))
    strip.save(OUT / "visual-prompt-engineering.png", optimize=True)


if __name__ == "__main__":
    main(sys.argv[1])
