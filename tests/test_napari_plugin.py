"""The npe2 manifest, sample data, the Labels writer, and the software-OpenGL crash guard."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_clipseg import _gl_guard
from napari_clipseg._napari.writer import write_labels
from napari_clipseg.io.export import read_array
from napari_clipseg.io.records import build_record, read_record


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_distribution("napari-clipseg")


def test_manifest_is_valid_and_every_command_imports():
    manifest = _manifest()
    manifest.validate_imports()
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.id


def test_npe2_validate_cli():
    done = subprocess.run(["npe2", "validate", "napari-clipseg"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "valid" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("key", ["astronaut", "coffee", "ihc", "cell"])
def test_sample_data_ships_with_scikit_image(key, make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-clipseg", key)
    assert layers[0].data.ndim in (2, 3) and layers[0].metadata["suggested_prompts"]


def test_writer_tif_png_and_sidecar(tmp_path):
    labels = np.zeros((20, 30), np.uint8)
    labels[5:10, 5:10] = 2
    meta = {"name": "clipseg: a, b", "metadata": {"clipseg": build_record(["a", "b"], image={"name": "img"})}}
    for suffix in (".tif", ".png"):
        paths = write_labels(str(tmp_path / f"out{suffix}"), labels, meta)
        np.testing.assert_array_equal(read_array(paths[0]), labels)
        record = read_record(paths[1])
        assert record["classes"] == [{"value": 1, "name": "a"}, {"value": 2, "name": "b"}]
        assert record["files"]["labels"] == f"out{suffix}" and record["layer"] == "clipseg: a, b"
    assert write_labels(str(tmp_path / "plain.tif"), labels, {"name": "x", "metadata": {}}) == [
        str(tmp_path / "plain.tif")
    ]


def test_writer_through_napari_save(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.eye(16, dtype=np.uint8), name="lab", metadata={"clipseg": build_record(["x"])})
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "lab.tif"), selected=True, plugin="napari-clipseg")
    np.testing.assert_array_equal(read_array(tmp_path / "lab.tif"), layer.data)
    assert (tmp_path / "lab.tif.json").is_file()


def test_guard_detects_mesa_llvm(tmp_path, monkeypatch):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1\n")
    assert _gl_guard.mesa_llvm_loaded(str(maps))
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n")
    assert not _gl_guard.mesa_llvm_loaded(str(maps))


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run)")
@pytest.mark.parametrize("import_first", [False, True], ids=["import-after-draw", "import-before-draw"])
def test_draw_first_then_run_the_plugin_does_not_crash(tiny_model_dir, tmp_path, import_first):
    """napari draws with (software) OpenGL before open_clip is imported, as for a real user: whether
    the plugin module was imported before the first draw (npe2, scripts) or after it."""
    early = "from napari_clipseg._napari.widget import ClipSegWidget" if import_first else ""
    # after the draw: the user's own script importing the heavy libraries, or the widget doing it
    heavy = "" if import_first else "import open_clip, timm  # the imports that pull in triton via torch._dynamo"
    script = textwrap.dedent(f"""
        import sys, numpy as np, napari
        {early}
        assert "open_clip" not in sys.modules
        viewer = napari.Viewer(show=True)
        viewer.add_image(np.random.default_rng(0).random((64, 64)), name="img")
        viewer.screenshot(canvas_only=True)  # a real GL draw
        from napari_clipseg._napari.widget import ClipSegWidget
        {heavy}
        widget = ClipSegWidget(viewer)
        viewer.window.add_dock_widget(widget)
        widget._source.value = {str(tiny_model_dir)!r}
        widget._prompts.value = "cell"
        widget._threshold.value = 0.0
        widget.run()
        layer = viewer.layers["clipseg: cell"]
        assert layer.data.shape == (64, 64) and (layer.data == 1).all()
        from napari_clipseg._gl_guard import mesa_llvm_loaded
        blocked = sys.modules.get("triton", 0) is None
        print("OK", "mesa" if mesa_llvm_loaded() else "no-mesa", "blocked" if blocked else "free")
        viewer.close()
    """)
    env = {**os.environ, "NAPARI_CLIPSEG_SYNC": "1", "NAPARI_CLIPSEG_CONFIG_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    assert "OK" in done.stdout
    if "OK mesa" in done.stdout:  # software GL was used: the guard must have kept triton out
        assert "blocked" in done.stdout


def test_the_dock_title_fits_the_dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock, _widget = viewer.window.add_plugin_dock_widget("napari-clipseg", "CLIPSeg")
    qtbot.waitUntil(lambda: dock.title.title.text() == "CLIPSeg")
    assert "napari-clipseg" in dock.title.title.toolTip()  # napari's full name stays as the tooltip
    dock.setFloating(True)
    qtbot.waitUntil(lambda: dock.title.title.text() == "CLIPSeg")
