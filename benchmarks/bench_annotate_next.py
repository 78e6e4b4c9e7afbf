"""The dock's Next at a folder's size: how long the main thread is held, and when the next image shows.

A project of N synthetic images (the tiny random model, pre-labelled first), opened in the dock's
Annotate mode under a real napari window; then 15 Next clicks, each timed from the click to the
next image on screen (the labels stored and the next image read in a worker thread), and the
time the click itself held the main thread. Needs a display (``xvfb-run -a``).

    xvfb-run -a python benchmarks/bench_annotate_next.py --sizes 100,2000 --side 512
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NAPARI_CLIPSEG_CONFIG_DIR", tempfile.mkdtemp())

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

import napari_clipseg as ncs
from _common import write_results
from napari_clipseg._napari.widget import ClipSegWidget


def _wait(condition, limit: float = 120.0) -> None:
    app, started = QApplication.instance(), time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            raise TimeoutError("the dock did not get there: see its notifications")
        app.processEvents()
        time.sleep(0.002)


def measure(n: int, side: int, tmp: Path) -> dict:
    rng = np.random.default_rng(0)
    images = tmp / f"images-{n}"
    images.mkdir()
    for i in range(n):
        np.save(images / f"i{i:05d}.npy", rng.integers(0, 255, (side, side), dtype=np.uint8))
    model = ncs.save_pretrained(ncs.build_model("tiny", seed=0), tmp / f"model-{n}")
    spec = ncs.ModelSpec(str(model), precision="float32")
    with ncs.open_project(images, tmp / f"project-{n}", prompts=["thing"], model=spec) as project:
        project.prelabel()
    viewer = napari.Viewer(show=True)
    widget = ClipSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._model.source.value = str(model)  # the project's own model (another one is refused)
    widget._mode.value = "Annotate"
    widget._prompts.value = "thing"
    panel = widget._annotate
    panel.auto_learn.value = False
    panel.images.value, panel.folder.value = str(images), str(tmp / f"project-{n}")
    started = time.perf_counter()
    panel.open_btn.native.click()
    open_ms = 1000 * (time.perf_counter() - started)
    _wait(lambda: panel.current is not None and not panel.is_running)
    held, shown = [], []
    for _ in range(15):
        before = panel.current
        started = time.perf_counter()
        panel.next_btn.native.click()
        held.append(1000 * (time.perf_counter() - started))
        _wait(lambda before=before: panel.current != before and not panel._disk.busy)
        shown.append(1000 * (time.perf_counter() - started))
    viewer.close()
    row = {
        "images": n,
        "side": side,
        "open_click_ms": open_ms,
        "next_held_main_thread_ms": float(np.median(held)),
        "next_shown_ms": float(np.median(shown)),
        "next_shown_max_ms": float(max(shown)),
    }
    print(
        f"{n} images of {side}^2: Open held the main thread {open_ms:.0f} ms; Next held it "
        f"{row['next_held_main_thread_ms']:.1f} ms, the next image showed after {row['next_shown_ms']:.0f} ms "
        f"(max {row['next_shown_max_ms']:.0f})",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,2000")
    parser.add_argument("--side", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(int(n), args.side, Path(folder)) for n in args.sizes.split(",")]
    print(f"wrote {write_results('bench_annotate_next', {'rows': rows})}")


if __name__ == "__main__":
    main()
