"""Regenerate the documentation screenshots: ``xvfb-run -a python docs/make_screenshots.py MODEL_DIR``
(``--annotate`` after it: only the Annotate mode's picture; ``--region``: only the Advanced options';
``--text``: only README's picture).

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
# napari's own settings in a fresh file: every picture at napari's default window size, never a
# geometry remembered from an earlier run
os.environ["NAPARI_CONFIG"] = os.path.join(tempfile.mkdtemp(), "settings.yaml")

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


def scroll_docks_to_top(viewer: napari.Viewer) -> None:
    """Every dock scrolled to its top (the mode switch and the image first), as a user opens it."""
    from qtpy.QtWidgets import QScrollArea

    for area in viewer.window._qt_window.findChildren(QScrollArea):
        area.verticalScrollBar().setValue(0)


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


def fresh_viewer(model: str, **section_state) -> tuple[napari.Viewer, ClipSegWidget]:
    """A new viewer at napari's default window size with the dock, so every picture shows what a
    user sees (and no layer is ever removed: napari issue 8471 on software OpenGL)."""
    from napari.settings import get_settings

    get_settings().application.save_window_geometry = False
    viewer = napari.Viewer(show=True)
    widget = ClipSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CLIPSeg", area="right")
    widget._source.value = model
    for name, expanded in section_state.items():
        getattr(widget, name).set_expanded(expanded)
    settle()
    return viewer, widget


def region_picture(model: str) -> None:
    """The dock with its Advanced options open, segmenting inside a box of the IHC sample."""
    viewer, widget = fresh_viewer(model, _advanced=True)
    (slide,) = viewer.open_sample("napari-clipseg", "ihc")
    roi = np.array([[150, 150], [150, 400], [380, 400], [380, 150]], float)
    boxes = viewer.add_shapes(
        [roi], shape_type="rectangle", name="region", edge_color="cyan", face_color="transparent", edge_width=4
    )
    widget._image.value = slide
    widget._prompts.value = "cell nuclei"
    widget._example.support.value = None
    widget._example_section.set_expanded(False)
    widget._options.region.value = "inside boxes"
    widget._options.boxes.value = boxes
    run(widget)
    viewer.layers.selection.active = boxes
    settle()
    save(viewer, "widget-region.png")
    viewer.close()


def main(model: str) -> None:
    OUT.mkdir(exist_ok=True)
    viewer, widget = fresh_viewer(model)
    viewer.open_sample("napari-clipseg", "astronaut")
    widget._prompts.value = "person\nflag\nrocket"
    run(widget)
    result = widget._results.last.result
    widget._threshold.value = round(float(np.quantile(result.probabilities.max(0), 0.6)), 2)
    scroll_docks_to_top(viewer)
    settle()
    save(viewer, "widget-text-prompts.png")
    viewer.close()
    if sys.argv[2:] == ["--text"]:
        return

    viewer, widget = fresh_viewer(model)
    viewer.open_sample("napari-clipseg", "cell")
    widget._prompts.value = "cell"
    widget._show_probs.value = True
    run(widget)
    viewer.layers["clipseg: cell"].visible = False
    viewer.layers.selection.active = viewer.layers["clipseg p: cell"]
    settle()
    save(viewer, "widget-probabilities.png")
    viewer.close()

    viewer, widget = fresh_viewer(model)
    (image,) = viewer.open_sample("napari-clipseg", "coffee")
    box = np.array([[40, 170], [40, 440], [300, 440], [300, 170]], float)  # around the cup
    shapes = viewer.add_shapes(
        [box], shape_type="rectangle", name="example", edge_color="yellow", face_color="transparent", edge_width=4
    )
    widget._image.value = image
    widget._prompts.value = ""
    widget._show_probs.value = False
    widget._example.support.value = shapes  # opens the example section
    widget._example.class_name.value = "cup"
    run(widget)
    viewer.layers.selection.active = shapes
    settle()
    save(viewer, "widget-visual-prompt.png")
    viewer.close()

    region_picture(model)
    support_strip(image.data, shapes.to_masks(mask_shape=image.data.shape[:2])[0])
    instances_strip()
    learn_picture(model)


def learn_picture(model: str) -> None:
    """Run on six synthetic images, correct them, Learn from corrections, run on a new image."""
    from napari_clipseg.samples import striped_discs

    viewer, widget = fresh_viewer(model)
    widget.dialogs.choose_folder = lambda *_: tempfile.mkdtemp(prefix="decoder-")
    widget._prompts.value = "disc"
    for seed in range(6):
        image, truth = striped_discs(seed, 256)
        widget._image.value = viewer.add_image(image, name=f"discs {seed}", visible=False)
        run(widget)
        viewer.layers[-1].data = truth  # the annotator's correction
        viewer.layers[-1].visible = False
    widget._learn_btn.native.click()
    while widget.is_running:
        settle(0.05)
    widget._image.value = viewer.add_image(striped_discs(300, 256)[0], name="new image")
    run(widget)
    viewer.layers.selection.active = viewer.layers[-1]
    settle()
    save(viewer, "widget-learn.png")
    viewer.close()


def annotate_picture(model: str) -> None:
    """The dock in Annotate mode: a project of striped-disc images, eight verified while it learnt as
    they came ("Learn as I go"), the next image."""
    from napari_clipseg._napari.annotate_view import LABELS_LAYER
    from napari_clipseg.samples import striped_discs

    folder = Path(tempfile.mkdtemp(prefix="annotate-")) / "discs"
    folder.mkdir()
    truth = {}
    for seed in range(14):
        image, labels = striped_discs(seed, 160, count=1 + seed % 5)
        np.save(folder / f"discs{seed:02d}.npy", image)
        truth[f"discs{seed:02d}"] = labels
    viewer, widget = fresh_viewer(model)
    widget._mode.value = "Annotate"
    widget._prompts.value = "disc"
    panel = widget._annotate
    panel.images.value = str(folder)
    panel.open_btn.native.click()
    while widget.is_running or panel.current is None:
        settle(0.05)
    for _ in range(8):
        viewer.layers[LABELS_LAYER].data = truth[panel.current]  # the annotator's correction
        panel.next_btn.native.click()
        while panel._disk.busy:
            settle(0.05)
        while widget.is_running or panel._learning.pending:  # a Learn after each image, in the background
            settle(0.05)
    panel.next_btn.native.click()  # the next image: its pre-labels come from the decoder learnt so far
    while panel._disk.busy or widget.is_running or panel._learning.pending:
        settle(0.05)
    settle()
    save(viewer, "widget-annotate.png")
    viewer.close()


def _colour(ids: np.ndarray) -> np.ndarray:
    """Label ids as colours (background white), a fixed palette so pictures are reproducible."""
    palette = np.array([[255, 255, 255], *np.random.default_rng(3).integers(40, 230, (255, 3))], np.uint8)
    return palette[np.minimum(ids, 255)]


def instances_strip() -> None:
    """Touching discs: class mask, connected components, seeded watershed (no model involved)."""
    from PIL import Image

    from napari_clipseg.segmentation.postprocess import instances_from_labels

    yy, xx = np.mgrid[:160, :200]
    labels = np.zeros((160, 200), np.uint8)
    for cy, cx, r in ((50, 50, 22), (50, 88, 22), (115, 70, 18), (100, 150, 26), (128, 122, 14)):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = 1
    merged = instances_from_labels(labels, split=False).ids
    split = instances_from_labels(labels, min_distance=10).ids
    panels = [np.where(labels[..., None] > 0, np.uint8([90, 90, 90]), np.uint8(255)), _colour(merged), _colour(split)]
    tiles = [Image.fromarray(p).resize((400, 320), Image.NEAREST) for p in panels]
    strip = Image.new("RGB", (400 * 3 + 16, 320), (255, 255, 255))
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * 408, 0))
    strip.save(OUT / "instances.png", optimize=True)


def support_strip(image: np.ndarray, mask: np.ndarray) -> None:
    """What the model sees for one support region, for a few engineering modes (no weights involved)."""
    from PIL import Image, ImageDraw

    from napari_clipseg.constants import IMAGENET_MEAN, IMAGENET_STD
    from napari_clipseg.segmentation.visual import engineer_visual_prompt

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
    if sys.argv[2:] == ["--annotate"]:  # only the Annotate picture
        annotate_picture(sys.argv[1])
    elif sys.argv[2:] == ["--region"]:  # only the Advanced options' picture
        region_picture(sys.argv[1])
    elif sys.argv[2:] == ["--text"]:  # only README's picture (text prompts on the astronaut)
        main(sys.argv[1])
    else:
        main(sys.argv[1])
        annotate_picture(sys.argv[1])
