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

from napari_clipseg._widget import ClipSegWidget

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
    result = widget._results.last[0]
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
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1])
